"""What serving returns (RerankResult: annotated dicts; ArrayResult: columnar) and the one per-list record
both are built from (ListRecord), with the scores of the call's scored rows (Scores)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cotrr_core.serving.policy import Decision

__all__ = ["RerankResult", "ArrayResult", "ListRecord", "Scores", "annotate", "list_result", "array_result"]


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


@dataclass
class ListRecord:
    """One request list on its way through a Reranker call: the policy's decision, its length, then
    either the rows it was scored at or why it falls back."""

    decision: Decision
    length: int  # candidates in the list
    note: str | None = None  # how the unit was bucketed (the detail when nothing went wrong)
    reason: str | None = None  # fallback reason
    detail: str | None = None
    rows: slice = field(default_factory=lambda: slice(0, 0))  # its top-M rows in the call's Scores

    def fail(self, reason: str, detail: str) -> None:
        if self.reason is None:
            self.reason, self.detail = reason, detail

    @property
    def wants_score(self) -> bool:
        return self.decision.score and self.reason is None

    @property
    def scored(self) -> bool:
        return self.reason is None and self.rows.stop > self.rows.start

    @property
    def reranked(self) -> bool:
        return self.scored and self.decision.serve_treatment


@dataclass
class Scores:
    """The call's scored rows: raw [n], probability [n] (calibrated), std [n] (MC std of the probability) or None."""

    raw: np.ndarray
    probability: np.ndarray
    std: np.ndarray | None = None

    @classmethod
    def empty(cls) -> Scores:
        return cls(np.zeros(0), np.zeros(0))


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


def list_result(items: list, rec: ListRecord, scores: Scores, mode: str, latency_ms: float) -> RerankResult:
    """One list's RerankResult: its items served in the model's order (treated) or as given, annotated."""
    n = len(items)
    detail = rec.detail or rec.note
    if not rec.scored:
        return RerankResult(served=annotate(items, np.arange(n), None, None, None), wouldbe=None, reranked=False,
                            mode=mode, arm=rec.decision.arm, fallback_reason=rec.reason, latency_ms=latency_ms,
                            detail=detail, bucket=rec.decision.bucket)
    raw, probs = scores.raw[rec.rows], scores.probability[rec.rows]
    unc = None if scores.std is None else scores.std[rec.rows]
    model_order = np.concatenate([np.argsort(-raw, kind="stable"), np.arange(len(raw), n)])
    wouldbe = annotate(items, model_order, raw, probs, unc)
    served = wouldbe if rec.reranked else annotate(items, np.arange(n), raw, probs, unc)
    return RerankResult(served=served, wouldbe=wouldbe, reranked=rec.reranked, mode=mode, arm=rec.decision.arm,
                        fallback_reason=None, latency_ms=latency_ms, detail=detail, bucket=rec.decision.bucket)


def array_result(records: list[ListRecord], offsets: np.ndarray, scores: Scores, latency_ms: float) -> ArrayResult:
    """rerank_arrays' ArrayResult: per list, its top-M rows in the model's order (treated) or as given."""
    n, q = int(offsets[-1]) if len(offsets) else 0, len(records)
    nan, ident = np.full(n, np.nan), np.arange(n)
    out = ArrayResult(order=ident.copy(), wouldbe=ident.copy(), raw_score=nan.copy(), probability=nan.copy(),
                      uncertainty=nan.copy(), reranked=np.zeros(q, bool), scored=np.zeros(q, bool),
                      arm=[r.decision.arm for r in records], fallback_reason=[r.reason for r in records],
                      detail=[r.detail or r.note for r in records],
                      bucket=np.array([r.decision.bucket for r in records], dtype=float), latency_ms=latency_ms)
    for k, rec in enumerate(records):
        if not rec.scored:
            continue
        a, raw = int(offsets[k]), scores.raw[rec.rows]
        top = slice(a, a + len(raw))
        out.raw_score[top], out.probability[top] = raw, scores.probability[rec.rows]
        if scores.std is not None:
            out.uncertainty[top] = scores.std[rec.rows]
        out.wouldbe[top] = a + np.argsort(-raw, kind="stable")
        out.scored[k], out.reranked[k] = True, rec.reranked
        if rec.reranked:
            out.order[top] = out.wouldbe[top]
    return out
