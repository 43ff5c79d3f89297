"""What the app's pages show, computed here (no Streamlit): the pages' one import point.

- attention maps, dataset-level attention by relevance, token ablation (views.attention)
- per-query original vs reranked tables, headline CIs, wins/ties/losses (views.compare)
- reliability, calibrator comparison, risk-coverage (views.calibration)
- run tables, config diffs, training curves (views.runs)
- datasets and runs the sidebar offers, their labels and keys (views.choices)
- an uploaded file's feature spec: shown, chosen, saved beside it (views.spec)
- rollout simulator inputs measured from a run (cotrr_core.simulate.inputs)

The second block re-exports what the pages call from the rest of the library (datasets, runs, training
jobs, serving, the rollout simulations), so a page imports only this package and a move inside
cotrr_core changes this file, not the pages.
"""
# the rest of the library, as the pages use it
from cotrr_core import load_run
from cotrr_core.config import ConfigError
from cotrr_core.data import DataError
from cotrr_core.data.benchmarks import Benchmark, load_benchmark
from cotrr_core.data.demo import render_candidate_image
from cotrr_core.data.uploads import rerank_upload, start_upload
from cotrr_core.serving.batch import rerank_file
from cotrr_core.serving.reranker import Reranker
from cotrr_core.simulate import ClickModel, recommend_m, shadow_analysis, simulate_ab, simulate_ramp, topm_tradeoff
from cotrr_core.simulate.inputs import (
                                        RolloutInputs,
                                        default_m_values,
                                        measure_list_latency,
                                        rollout_inputs,
                                        serving_latency,
                                        serving_threads,
                                        stored_serving_latency,
                                        topm_inputs,
                                        topm_scores,
)
from cotrr_core.training.jobs import (
                                        QueueFull,
                                        default_dataset,
                                        default_run_state,
                                        form_limits,
                                        is_alive,
                                        launch_training,
                                        runs_root,
                                        start_default_run,
                                        validate_overrides,
)
from cotrr_core.training.recipe import fast_config
from cotrr_core.training.runs import RunInfo, list_runs, read_status, request_cancel
from cotrr_core.views.attention import (
                                        AblationResult,
                                        AttentionMaps,
                                        DatasetAttention,
                                        ablation_over_queries,
                                        attention_by_relevance,
                                        attention_maps,
                                        token_ablation,
)
from cotrr_core.views.calibration import METHODS, CalibrationView, calibration_view, risk_view
from cotrr_core.views.choices import (
                                        dataset_key,
                                        dataset_label,
                                        dataset_options,
                                        done_runs,
                                        process_log_tail,
                                        run_label,
                                        run_metrics,
                                        run_stamp,
                                        uploads_dir,
                                        url_name,
)
from cotrr_core.views.compare import (
                                        SplitScores,
                                        find_queries,
                                        headline,
                                        movement_arrow,
                                        query_lists,
                                        query_metrics,
                                        score_split,
                                        timed_scoring,
                                        wins_ties_losses,
)
from cotrr_core.views.observed import ObservedView, observed_view
from cotrr_core.views.runs import (
                                        blend_parts,
                                        config_diff,
                                        history_frame,
                                        launch_steps,
                                        metrics_side_by_side,
                                        run_kind,
                                        runs_table,
)
from cotrr_core.views.spec import SpecView, choose_spec, has_editable_spec, save_spec, spec_table, spec_view

__all__ = [
    "AblationResult", "AttentionMaps", "DatasetAttention", "ablation_over_queries", "attention_by_relevance",
    "attention_maps", "token_ablation", "METHODS", "CalibrationView", "calibration_view", "risk_view", "SplitScores",
    "find_queries", "headline", "movement_arrow", "query_lists", "query_metrics", "score_split",
    "timed_scoring", "wins_ties_losses", "RolloutInputs", "default_m_values", "measure_list_latency",
    "rollout_inputs", "topm_inputs", "topm_scores", "serving_latency", "serving_threads", "stored_serving_latency",
    "config_diff", "history_frame", "launch_steps", "metrics_side_by_side", "runs_table",
    "ObservedView", "observed_view",
    "dataset_key", "dataset_label", "dataset_options", "done_runs", "process_log_tail", "run_label", "run_metrics",
    "run_stamp", "uploads_dir", "url_name", "SpecView", "choose_spec", "has_editable_spec", "save_spec",
    "spec_table", "spec_view",
    # the rest of the library, as the pages use it
    "load_run", "ConfigError", "DataError", "Benchmark", "load_benchmark", "render_candidate_image", "start_upload",
    "rerank_file", "rerank_upload", "Reranker", "ClickModel", "recommend_m", "shadow_analysis", "simulate_ab", "simulate_ramp",
    "topm_tradeoff", "default_dataset", "default_run_state", "is_alive", "launch_training", "runs_root",
    "QueueFull", "form_limits", "blend_parts", "run_kind",
    "start_default_run", "validate_overrides", "fast_config", "RunInfo", "list_runs", "read_status",
    "request_cancel",
]
