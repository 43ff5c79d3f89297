"""Ranking and calibration metrics (numpy in, numpy out)."""

from cotrr_core.evaluation.metrics.calibration import (
    adaptive_ece,
    brier,
    ece,
    log_loss,
    mce,
    reliability_curve,
    risk_coverage,
    wilson_interval,
)
from cotrr_core.evaluation.metrics.ranking import (
    NoRelevant,
    average_precision,
    compliance_at_k,
    evaluate,
    ndcg_at_k,
    paired_bootstrap_ci,
    precision_at_k,
    rank_order,
    reciprocal_rank,
    summarize,
)

__all__ = [
    "NoRelevant",
    "adaptive_ece",
    "average_precision",
    "brier",
    "compliance_at_k",
    "ece",
    "evaluate",
    "log_loss",
    "mce",
    "ndcg_at_k",
    "paired_bootstrap_ci",
    "precision_at_k",
    "rank_order",
    "reciprocal_rank",
    "reliability_curve",
    "risk_coverage",
    "summarize",
    "wilson_interval",
]
