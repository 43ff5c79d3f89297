"""Evaluation: metrics (ranking and calibration, numpy in and out), compare (RankingData + scores ->
metrics, paired comparisons) and baselines (LightGBM lambdarank on the same inputs)."""
