"""What the app's pages show, computed here (no Streamlit): the pages' one import point.

- attention maps, dataset-level attention by relevance, token ablation (views.attention)
- per-query original vs reranked tables, headline CIs, wins/ties/losses (views.compare)
- reliability, calibrator comparison, risk-coverage (views.calibration)
- run tables, config diffs, training curves (views.runs)
- rollout simulator inputs measured from a run (cotrr_core.simulate.inputs)
"""
from cotrr_core.simulate.inputs import (RolloutInputs, default_m_values, measure_list_latency, rollout_inputs,
                                        serving_latency, serving_threads, stored_serving_latency, topm_inputs,
                                        topm_scores)
from cotrr_core.views.attention import (AblationResult, AttentionMaps, DatasetAttention, ablation_over_queries,
                                        attention_by_relevance, attention_maps, token_ablation)
from cotrr_core.views.calibration import CalibrationView, calibration_view
from cotrr_core.views.compare import (SplitScores, find_queries, headline, movement_arrow, query_lists, query_metrics,
                                      score_split, timed_scoring, wins_ties_losses)
from cotrr_core.views.runs import config_diff, history_frame, metrics_side_by_side, runs_table

__all__ = [
    "AblationResult", "AttentionMaps", "DatasetAttention", "ablation_over_queries", "attention_by_relevance",
    "attention_maps", "token_ablation", "CalibrationView", "calibration_view", "SplitScores",
    "find_queries", "headline", "movement_arrow", "query_lists", "query_metrics", "score_split",
    "timed_scoring", "wins_ties_losses", "RolloutInputs", "default_m_values", "measure_list_latency",
    "rollout_inputs", "topm_inputs", "topm_scores", "serving_latency", "serving_threads", "stored_serving_latency",
    "config_diff", "history_frame", "metrics_side_by_side", "runs_table",
]
