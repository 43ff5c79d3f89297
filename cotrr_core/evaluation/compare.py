"""Glue between RankingData and the metrics: score a dataset's lists, compare two rankings."""
from __future__ import annotations

import numpy as np

from cotrr_core.data.dataset import RankingData
from cotrr_core.evaluation.metrics import evaluate, paired_bootstrap_ci, summarize

__all__ = ["rank_in_list", "pad_flat", "original_scores", "per_query_metrics", "evaluate_scores", "evaluate_original_order",
           "compare_rankings", "HEADLINE"]

HEADLINE = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "c@1", "mrr", "map")


def rank_in_list(scores: np.ndarray) -> np.ndarray:
    """1-based ranks [n] of one list's scores [n] (highest first, ties keep the original order)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def pad_flat(data: RankingData, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Per-candidate values [N] -> padded [Q, L] in the data's original order."""
    lengths = data.list_lengths
    L = int(lengths.max()) if len(lengths) else 0
    out = np.full((data.num_queries, L), fill, dtype=np.float64)
    mask = np.arange(L)[None, :] < lengths[:, None]
    out[mask] = values
    return out


def original_scores(data: RankingData) -> np.ndarray:
    """[N] scores that reproduce the original order (rank 1 highest)."""
    pos = np.arange(data.num_candidates) - np.repeat(data.offsets[:-1], data.list_lengths)
    return -pos.astype(np.float64)


def per_query_metrics(data: RankingData, scores: np.ndarray, no_relevant: str = "exclude",
                      ks: tuple[int, ...] = (1, 3, 5, 10)) -> dict[str, np.ndarray]:
    """Per-query metric arrays [Q] for flat scores [N] (NaN where a query is excluded)."""
    padded = data.padded()
    return evaluate(padded.labels.astype(np.float64), pad_flat(data, scores, -np.inf), padded.mask, ks=ks,
                    relevance_threshold=data.spec.relevance_threshold, no_relevant=no_relevant)


def evaluate_scores(data: RankingData, scores: np.ndarray, no_relevant: str = "exclude") -> dict[str, float]:
    """Mean metrics of ranking each list by `scores` [N]."""
    return summarize(per_query_metrics(data, scores, no_relevant))


def evaluate_original_order(data: RankingData, no_relevant: str = "exclude") -> dict[str, float]:
    return evaluate_scores(data, original_scores(data), no_relevant)


def compare_rankings(data: RankingData, scores_a: np.ndarray, scores_b: np.ndarray, no_relevant: str = "exclude",
                     metrics: tuple[str, ...] = HEADLINE, seed: int = 0) -> dict[str, dict]:
    """Paired bootstrap 95% CI of metric(a) - metric(b) over the same queries."""
    a = per_query_metrics(data, scores_a, no_relevant)
    b = per_query_metrics(data, scores_b, no_relevant)
    return {m: paired_bootstrap_ci(a[m], b[m], seed=seed) for m in metrics}
