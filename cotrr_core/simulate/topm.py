"""Top-M trade-off: rerank only the first M candidates; quality vs latency vs cost.

Every input is MEASURED elsewhere (quality from evaluation, latency from timing
the real serving path); nothing here models latency.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_PRICE_PER_CPU_SECOND", "topm_tradeoff", "recommend_m"]

# An on-demand vCPU-hour costs roughly $0.048; $0.048 / 3600 s ~= $0.0000133 per CPU-second.
DEFAULT_PRICE_PER_CPU_SECOND = 0.0000133


def _pareto(quality: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """[n] bool: no other point has quality >= and latency <=, with one strictly better."""
    q, lat = quality[:, None], latency[:, None]
    dominated_by = (quality >= q) & (latency <= lat) & ((quality > q) | (latency < lat))
    return ~dominated_by.any(axis=1)


def topm_tradeoff(quality_by_m: dict[int, dict[str, float]], latency_by_m: dict[int, np.ndarray], *,
                  price_per_cpu_second: float = DEFAULT_PRICE_PER_CPU_SECOND,
                  cores_used: float = 1.0) -> pd.DataFrame:
    """One row per M: M, ndcg@10, c@1, p50_ms, p95_ms, cost_per_1000_queries, pareto.

    quality_by_m[M] needs keys "ndcg@10" and "c@1"; latency_by_m[M] holds measured
    per-query latencies in ms. cost = mean latency (s) x cores_used x price x 1000.
    `pareto` marks M not dominated on (higher ndcg@10, lower p95_ms).
    """
    missing = sorted(set(quality_by_m) ^ set(latency_by_m))
    if missing:
        raise ValueError(f"quality_by_m / latency_by_m: M values {missing} are in only one of them")
    rows = []
    for m in sorted(quality_by_m):
        q, lat = quality_by_m[m], np.asarray(latency_by_m[m], dtype=np.float64)
        if lat.size == 0:
            raise ValueError(f"latency_by_m[{m}]: no measurements")
        for key in ("ndcg@10", "c@1"):
            if key not in q:
                raise ValueError(f"quality_by_m[{m}]: missing {key!r}")
        rows.append({"M": int(m), "ndcg@10": float(q["ndcg@10"]), "c@1": float(q["c@1"]),
                     "p50_ms": float(np.quantile(lat, 0.5)), "p95_ms": float(np.quantile(lat, 0.95)),
                     "cost_per_1000_queries": float(lat.mean()) / 1000.0 * cores_used
                     * price_per_cpu_second * 1000.0})
    df = pd.DataFrame(rows, columns=["M", "ndcg@10", "c@1", "p50_ms", "p95_ms", "cost_per_1000_queries"])
    df["pareto"] = _pareto(df["ndcg@10"].to_numpy(), df["p95_ms"].to_numpy())
    return df


def recommend_m(frontier_df: pd.DataFrame, latency_budget_ms: float,
                percentile: str = "p95") -> int | None:
    """Best ndcg@10 among M whose `{percentile}_ms` fits the budget (ties -> smaller M); None if none fits."""
    column = f"{percentile}_ms"
    if column not in frontier_df:
        raise ValueError(f"percentile: no column {column!r} in frontier_df")
    fits = frontier_df[frontier_df[column] <= latency_budget_ms]
    if fits.empty:
        return None
    best = fits.sort_values(["ndcg@10", "M"], ascending=[False, True], kind="stable")
    return int(best["M"].iloc[0])
