"""Shadow-mode analysis: the model scores live traffic, its would-be order is logged
but the original order is served. How much would it change, and at what cost?

Orders are [Q, L] int: order[q, r] is the candidate index shown at rank r. The
mask [Q, L] marks real candidates and padding is trailing, so query q has
n_q = mask[q].sum() candidates 0..n_q-1 and ranks >= n_q are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cotrr_core.evaluation.metrics import compliance_at_k, paired_bootstrap_ci
from cotrr_core.simulate.ab import served_ndcg
from cotrr_core.simulate.stats import kendall_tau_ranks

__all__ = ["ShadowResult", "shadow_analysis", "latency_overhead"]


@dataclass
class ShadowResult:
    """per_query: one row per query; summary: means; deltas: metric -> paired bootstrap
    (would-be minus original); latency: see `latency_overhead` (None if not measured)."""

    per_query: pd.DataFrame
    summary: dict[str, float]
    deltas: dict[str, dict[str, float]]
    latency: dict[str, float] | None

    def most_disagreeing(self, n: int = 10) -> pd.DataFrame:
        """The n queries whose two orders disagree most (lowest Kendall tau, then overlap)."""
        return self.per_query.sort_values(["kendall_tau", "overlap@k"], kind="stable").head(n)


def _safe_orders(order: np.ndarray, n: np.ndarray, name: str) -> np.ndarray:
    """Order [Q, L] with padding ranks filled by their own index; checks each row is a permutation."""
    L = order.shape[1]
    pos = np.arange(L)
    safe = np.where(pos < n[:, None], order, pos)
    if not (np.sort(safe, axis=1) == pos).all():
        raise ValueError(f"{name}: the first n_q entries of each row must be a permutation of 0..n_q-1")
    return safe


_kendall_tau = kendall_tau_ranks  # one statistics code with the observed view (cotrr_core/views/observed.py)


def latency_overhead(original_ms: np.ndarray, shadow_ms: np.ndarray) -> dict[str, float]:
    """Latency of the original path and of shadow scoring (ms). extra_* is what users would
    wait if scoring ran inline; compute_share is shadow's share of the total compute time."""
    o, s = np.asarray(original_ms, dtype=np.float64), np.asarray(shadow_ms, dtype=np.float64)
    out = {f"{name}_{stat}_ms": float(fn(x)) for name, x in (("original", o), ("shadow", s))
           for stat, fn in (("mean", np.mean), ("p50", np.median), ("p95", lambda v: np.quantile(v, 0.95)))}
    out.update(extra_mean_ms=out["shadow_mean_ms"], extra_p95_ms=out["shadow_p95_ms"],
               overhead_rel=out["shadow_mean_ms"] / out["original_mean_ms"],
               compute_share=out["shadow_mean_ms"] / (out["original_mean_ms"] + out["shadow_mean_ms"]))
    return out


def shadow_analysis(original_order: np.ndarray, wouldbe_order: np.ndarray, labels: np.ndarray,
                    mask: np.ndarray, *, relevance_threshold: float, k: int = 10, seed: int = 0,
                    n_boot: int = 2000, alpha: float = 0.05,
                    latency_original_ms: np.ndarray | None = None,
                    latency_shadow_ms: np.ndarray | None = None,
                    query_ids: np.ndarray | None = None) -> ShadowResult:
    """Compare the served (original) and would-be orders, all [Q, L], query by query
    (query_ids [Q]: shown beside each query's index in per_query)."""
    mask = np.asarray(mask, dtype=bool)
    labels = np.where(mask, np.asarray(labels, dtype=np.float64), 0.0)
    n = mask.sum(axis=1)
    if not (mask == (np.arange(mask.shape[1]) < n[:, None])).all():
        raise ValueError("mask: padding must be trailing (real candidates first)")
    orig = _safe_orders(np.asarray(original_order), n, "original_order")
    wb = _safe_orders(np.asarray(wouldbe_order), n, "wouldbe_order")
    rank_o, rank_w = np.argsort(orig, axis=1), np.argsort(wb, axis=1)  # inverse permutations
    kk = np.minimum(k, n)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = ((rank_o < kk) & (rank_w < kk)).sum(axis=1) / kk[:, 0]
    served = {name: np.take_along_axis(labels, o, axis=1) for name, o in (("original", orig), ("wouldbe", wb))}
    first = np.broadcast_to(-np.arange(mask.shape[1], dtype=np.float64), mask.shape)
    per_query = pd.DataFrame({
        "query": np.arange(len(n)),
        **({"query_id": np.asarray(query_ids).astype(str)} if query_ids is not None else {}), "n": n,
        "top1_agree": np.where(n > 0, orig[:, 0] == wb[:, 0], np.nan),
        "overlap@k": overlap, "kendall_tau": _kendall_tau(rank_o, rank_w, n),
        **{f"ndcg@10_{name}": served_ndcg(lab, mask, relevance_threshold) for name, lab in served.items()},
        **{f"c@1_{name}": compliance_at_k(lab, first, mask, 1, relevance_threshold) for name, lab in served.items()},
    })
    per_query = per_query[n > 0].reset_index(drop=True)
    deltas = {}
    for metric in ("ndcg@10", "c@1"):
        a, b = per_query[f"{metric}_wouldbe"], per_query[f"{metric}_original"]
        d = paired_bootstrap_ci(a, b, n_boot=n_boot, alpha=alpha, seed=seed)
        deltas[metric] = {"original": float(b.mean()), "wouldbe": float(a.mean()), **d}
    summary = {"queries": float(len(per_query)), "top1_agreement": float(per_query["top1_agree"].mean()),
               "overlap@k": float(per_query["overlap@k"].mean()), "k": float(k),
               "kendall_tau_mean": float(per_query["kendall_tau"].mean()),
               "kendall_tau_median": float(per_query["kendall_tau"].median())}
    latency = (latency_overhead(latency_original_ms, latency_shadow_ms)
               if latency_original_ms is not None and latency_shadow_ms is not None else None)
    return ShadowResult(per_query=per_query, summary=summary, deltas=deltas, latency=latency)
