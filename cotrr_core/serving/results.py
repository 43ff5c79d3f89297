"""What serving returns (RerankResult: annotated dicts; ArrayResult: columnar) and the one per-list record
both are built from (ListRecord), with the scores of the call's scored rows (Scores)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cotrr_core.serving.policy import Decision

__all__ = ["RerankResult", "ArrayResult", "ListRecord", "Scores", "AnnotatedList", "annotate", "list_result", "array_result"]


@dataclass
class RerankResult:
    """One list's outcome. `served` and `wouldbe` hold annotated copies of the input dicts, made when read
    (AnnotatedList; an input item that is not a dict is passed through unchanged, in its place)."""

    served: Sequence
    wouldbe: Sequence | None  # the model's order (also in shadow mode); None when not scored
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


class AnnotatedList(Sequence):
    """The items of one answer in the order given, each (a dict) copied and annotated with original_rank,
    new_rank, raw_score, probability and uncertainty when first read (then kept: reading it again gives
    the same dict). An answer so costs O(scored rows), not O(list): the tail of a 50,000-candidate list
    is annotated only if the caller reads it. Compares equal to a list of the same annotated items;
    `list(answer)` annotates everything."""

    __slots__ = ("_rows", "_order", "_raw", "_prob", "_unc", "_made")

    def __init__(self, rows: list, order: np.ndarray, raw: np.ndarray | None, probs: np.ndarray | None,
                 unc: np.ndarray | None) -> None:
        """rows: the caller's items in original order; order [n]: row index at each served position;
        raw, probs, unc [m]: scores of rows 0..m-1 (the top M), None when not scored."""
        self._rows, self._order = rows, order
        self._raw, self._prob, self._unc = raw, probs, unc
        self._made: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= i < n:
            raise IndexError("answer index out of range")
        if i not in self._made:
            self._made[i] = self._annotate(i)
        return self._made[i]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (list, tuple, AnnotatedList)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __add__(self, other: object) -> list:
        """answer + a list (or another answer): a plain list, as for a list."""
        if not isinstance(other, (list, AnnotatedList)):
            return NotImplemented
        return list(self) + list(other)

    def __radd__(self, other: object) -> list:
        if not isinstance(other, list):
            return NotImplemented
        return other + list(self)

    def __repr__(self) -> str:
        return f"AnnotatedList({list(self)!r})"

    def _annotate(self, position: int) -> object:
        k = int(self._order[position])
        item = self._rows[k]
        if not isinstance(item, dict):
            return item
        scored = self._raw is not None and k < len(self._raw)
        return dict(item, original_rank=k + 1, new_rank=position + 1,
                    raw_score=float(self._raw[k]) if scored else None,
                    probability=float(self._prob[k]) if scored else None,
                    uncertainty=float(self._unc[k]) if scored and self._unc is not None else None)


def annotate(rows: list, order: np.ndarray, raw: np.ndarray | None, probs: np.ndarray | None,
             unc: np.ndarray | None) -> AnnotatedList:
    """`rows` in `order`, annotated when read (AnnotatedList); scores cover rows 0..len(raw)-1."""
    return AnnotatedList(rows, order, raw, probs, unc)


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
