"""RankingData: validated candidate lists in their ORIGINAL order; `padded()` gives the padded view (batches.py).

Rows are grouped by query (first-appearance order) and, within a query, sorted
into the original first-stage order, so rows offsets[q]:offsets[q+1] are query
q's candidates, original rank 1 first.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from cotrr_core.data.batches import PaddedLists, to_device
from cotrr_core.data.errors import LoadReport
from cotrr_core.data.rowread import iter_chunks, read_rows
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.data.validate import (
    _check_list_constant,
    check_unique_candidates,
    order_lists,
    row_failer,
    token_columns,
    validate_columns,
)

__all__ = ["RankingData", "PaddedLists", "build_ranking_data", "token_columns", "to_device"]

SmallListPolicy = Literal["skip", "reject"]
_RESERVED = ("query_id", "candidate_id", "query", "_line")


@dataclass
class RankingData:
    """Validated lists. Per query: ids, text. Per candidate (N rows): ids, labels, token features."""

    spec: FeatureSpec
    query_ids: np.ndarray  # [Q] str
    queries: np.ndarray  # [Q] str (query text, "" when absent)
    offsets: np.ndarray  # [Q + 1] int64
    candidate_ids: np.ndarray  # [N] str
    labels: np.ndarray  # [N] float32
    features: dict[str, np.ndarray]  # token -> [N, d] float32
    extras: pd.DataFrame  # [N rows] every other input column, kept for display
    report: LoadReport
    stored_fingerprint: str | None = None  # set by the dataset cache (hashed once, when it was written)

    @property
    def num_queries(self) -> int:
        return len(self.query_ids)

    @property
    def num_candidates(self) -> int:
        return len(self.candidate_ids)

    @property
    def list_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def token_dims(self) -> dict[str, int]:
        return {k: v.shape[1] for k, v in self.features.items()}

    @property
    def list_constant(self) -> list[str]:
        return [t.name for t in self.spec.tokens if t.list_constant]

    def relevant(self) -> np.ndarray:
        """[N] bool: label >= the spec's relevance threshold."""
        return self.labels >= self.spec.relevance_threshold

    def rows(self, q: int) -> slice:
        return slice(int(self.offsets[q]), int(self.offsets[q + 1]))

    def subset(self, query_index: Sequence[int]) -> RankingData:
        """The given queries (in the given order), as a new RankingData."""
        qi = np.asarray(query_index, dtype=np.int64)
        rows = np.concatenate([np.arange(self.offsets[q], self.offsets[q + 1]) for q in qi]) if len(qi) else \
            np.zeros(0, dtype=np.int64)
        lengths = self.list_lengths[qi]
        return RankingData(
            spec=self.spec, query_ids=self.query_ids[qi], queries=self.queries[qi],
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            candidate_ids=self.candidate_ids[rows], labels=self.labels[rows],
            features={k: read_rows(v, rows).astype(np.float32, copy=False) for k, v in self.features.items()},
            extras=self.extras.iloc[rows].reset_index(drop=True), report=self.report)

    def padded(self, query_index: Sequence[int] | None = None, max_len: int = 0) -> PaddedLists:
        """Pad the chosen lists to the longest (or `max_len`, keeping the original top), raw features.

        Tokens are gathered per batch (`batch`), or all at once on first access of `.tokens`.
        """
        return PaddedLists(self, None if query_index is None else np.asarray(query_index, dtype=np.int64), max_len)

    def fingerprint(self) -> str:
        """Content hash of ids, labels and features (what a run was trained on)."""
        if self.stored_fingerprint is not None:
            return self.stored_fingerprint
        h = hashlib.sha256()
        for arr in (self.query_ids.astype(str), self.candidate_ids.astype(str)):
            h.update("\x1f".join(arr.tolist()).encode() + b"\x1e")
        h.update(np.ascontiguousarray(self.offsets, dtype=np.int64).tobytes())  # which rows form which list
        h.update(np.ascontiguousarray(self.labels).tobytes())
        for k in sorted(self.features):
            h.update(k.encode())
            for chunk in iter_chunks(self.features[k]):
                h.update(np.ascontiguousarray(chunk, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]


def build_ranking_data(frame: pd.DataFrame, spec: FeatureSpec, source: str, *, require_labels: bool = True,
                       line_label: str = "line", min_candidates: int = 2, on_small_list: SmallListPolicy = "skip",
                       vectors: dict[str, np.ndarray] | None = None) -> RankingData:
    """Validate a frame of candidates (one row per candidate, `_line` = its line in `source`).

    `vectors` holds vector columns a reader already decoded to [N, d] arrays (Parquet), so a
    million rows need no per-row objects. Raises DataError naming file, line, field and problem
    for the first bad value.
    """
    vectors = vectors or {}
    lines = frame["_line"].to_numpy() if "_line" in frame else np.arange(1, len(frame) + 1)
    report = LoadReport(source=source, lines=len(frame))

    fail = row_failer(source, lines, line_label)

    if len(frame) == 0:
        raise fail(None, None, "no candidates found (empty input)")
    if not require_labels and spec.label_field not in frame.columns:
        # scoring-only input (e.g. `rerank`): no ground truth, labels read as the minimum grade
        frame = frame.assign(**{spec.label_field: spec.label_min})
    cols = validate_columns(frame, spec, fail, vectors)
    qid, cid, label, features = cols.qid, cols.cid, cols.label, cols.features

    check_unique_candidates(qid, cid, fail)

    order_key, report.order_from = cols.order_key, cols.order_from
    codes, uniq = pd.factorize(pd.Series(qid), sort=False)
    for tok in spec.tokens:
        if tok.list_constant:
            _check_list_constant(features[tok.name], codes, ",".join(token_columns(tok)), fail,
                                 lambda r: f"{line_label} {int(lines[r])}")
    perm, kept_lengths = order_lists(codes, uniq, order_key, min_candidates, on_small_list, fail, report)

    text = frame["query"].astype(str).to_numpy() if "query" in frame else np.full(len(frame), "", dtype=object)
    starts = np.concatenate([[0], np.cumsum(kept_lengths)])[:-1]
    used = {c for t in spec.tokens for c in token_columns(t)} | set(_RESERVED) | {spec.label_field}
    extras = frame.drop(columns=[c for c in frame.columns if c in used])
    return RankingData(
        spec=spec, query_ids=np.asarray(qid[perm][starts], dtype=object) if len(perm) else np.zeros(0, object),
        queries=np.asarray(text[perm][starts], dtype=object) if len(perm) else np.zeros(0, object),
        offsets=np.concatenate([[0], np.cumsum(kept_lengths)]).astype(np.int64),
        candidate_ids=np.asarray(cid[perm], dtype=object), labels=label[perm].astype(np.float32),
        features={k: np.ascontiguousarray(v[perm], dtype=np.float32) for k, v in features.items()},
        extras=extras.iloc[perm].reset_index(drop=True), report=report)
