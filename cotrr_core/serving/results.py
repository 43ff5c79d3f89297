"""What serving returns: one list's RerankResult (annotated dicts) and rerank_arrays' ArrayResult."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RerankResult", "ArrayResult", "annotate", "empty_array_result"]


@dataclass
class RerankResult:
    """One list's outcome. `served` and `wouldbe` hold annotated copies of the input dicts
    (an input item that is not a dict is passed through unchanged, in its place)."""

    served: list
    wouldbe: list | None  # the model's order (also in shadow mode); None when not scored
    reranked: bool  # served order is the model's
    mode: str
    arm: str
    fallback_reason: str | None  # invalid_input | nan_score | timeout | error:<Type>
    latency_ms: float
    detail: str | None = None  # the fallback's message, or how the unit was bucketed
    bucket: float | None = None


@dataclass
class ArrayResult:
    """Outcome of `rerank_arrays` for Q lists over N input rows (lists as in the input offsets).

    order: [N] input row indices in served order; wouldbe: [N] the model's order (= the input
    order for lists that were not scored); raw_score, probability, uncertainty: [N] float64, NaN
    where not scored (uncertainty also without MC); per list [Q]: reranked, scored, arm,
    fallback_reason, detail, bucket.
    """

    order: np.ndarray
    wouldbe: np.ndarray
    raw_score: np.ndarray
    probability: np.ndarray
    uncertainty: np.ndarray
    reranked: np.ndarray
    scored: np.ndarray
    arm: list[str]
    fallback_reason: list[str | None]
    detail: list[str | None]
    bucket: np.ndarray
    latency_ms: float


def annotate(rows: list, order: np.ndarray, raw: np.ndarray | None, probs: np.ndarray | None,
              unc: np.ndarray | None) -> list:
    """Copies of the dict rows in `order` with original_rank, new_rank, raw_score, probability, uncertainty;
    an item that is not a dict is passed through as it is."""
    m = 0 if raw is None else len(raw)
    none = [None] * (len(rows) - m)  # the rows past the top M: not scored
    raw_l = (raw.tolist() if m else []) + none
    prob_l = (probs.tolist() if m else []) + none
    unc_l = (unc.tolist() if m and unc is not None else [None] * m) + none
    return [dict(rows[i], original_rank=i + 1, new_rank=new, raw_score=raw_l[i], probability=prob_l[i],
                 uncertainty=unc_l[i]) if isinstance(rows[i], dict) else rows[i]
            for new, i in enumerate(order.tolist(), start=1)]


def empty_array_result(n: int, n_lists: int, offsets: np.ndarray) -> ArrayResult:
    nan = np.full(n, np.nan)
    ident = np.arange(n)
    return ArrayResult(order=ident.copy(), wouldbe=ident.copy(), raw_score=nan.copy(), probability=nan.copy(),
                       uncertainty=nan.copy(), reranked=np.zeros(n_lists, bool), scored=np.zeros(n_lists, bool),
                       arm=["control"] * n_lists, fallback_reason=[None] * n_lists, detail=[None] * n_lists,
                       bucket=np.zeros(n_lists), latency_ms=0.0)
