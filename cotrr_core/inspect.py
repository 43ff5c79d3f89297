"""Inspection computations for the app (no Streamlit here): one import point.

- attention maps, dataset-level attention by relevance, token ablation (inspect_attention)
- per-query original vs reranked tables, headline CIs, wins/ties/losses (inspect_compare)
- reliability, calibrator comparison, risk-coverage (inspect_calibration)
- rollout simulator inputs measured from a run (inspect_rollout)
"""
from cotrr_core.inspect_attention import (AblationResult, AttentionMaps, DatasetAttention, ablation_over_queries,
                                          attention_by_relevance, attention_maps, rank_in_list, token_ablation)
from cotrr_core.inspect_calibration import CalibrationView, calibration_view
from cotrr_core.inspect_compare import (SplitScores, find_queries, headline, movement_arrow, new_ranks,
                                        query_lists, query_metrics, score_split, timed_scoring, wins_ties_losses)
from cotrr_core.inspect_rollout import (RolloutInputs, default_m_values, measure_list_latency, rollout_inputs,
                                        serving_latency, serving_records, serving_threads, topm_inputs, topm_scores)

__all__ = [
    "AblationResult", "AttentionMaps", "DatasetAttention", "ablation_over_queries", "attention_by_relevance",
    "attention_maps", "rank_in_list", "token_ablation", "CalibrationView", "calibration_view", "SplitScores",
    "find_queries", "headline", "movement_arrow", "new_ranks", "query_lists", "query_metrics", "score_split",
    "timed_scoring", "wins_ties_losses", "RolloutInputs", "default_m_values", "measure_list_latency",
    "rollout_inputs", "topm_inputs", "topm_scores", "serving_latency", "serving_records", "serving_threads",
]
