"""RankingData: validated candidate lists in their ORIGINAL order, plus the padded view.

Rows are grouped by query (first-appearance order) and, within a query, sorted
into the original first-stage order, so rows offsets[q]:offsets[q+1] are query
q's candidates, original rank 1 first.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from cotrr_core.data.errors import DataError, LoadReport
from cotrr_core.data.spec import FeatureSpec, TokenSpec

__all__ = ["RankingData", "PaddedLists", "build_ranking_data", "token_columns"]

SmallListPolicy = Literal["skip", "reject"]
_RESERVED = ("query_id", "candidate_id", "query", "_line")


@dataclass
class PaddedLists:
    """Padded numpy view of B lists. tokens[name]: [B, L, d]; labels, mask: [B, L]."""

    tokens: dict[str, np.ndarray]
    labels: np.ndarray
    mask: np.ndarray
    query_index: np.ndarray  # [B] index into RankingData.query_ids

    def batch(self, idx: np.ndarray | slice, device: "str | object" = "cpu"):
        """Lists `idx` trimmed to their longest real list, as torch tensors on `device`.

        Returns (tokens {name: [b, L', d] float32}, mask [b, L'] bool, labels [b, L'] float32).
        """
        import torch  # lazily: the data layer must not pull in torch

        mask = self.mask[idx]
        L = max(int(mask.sum(1).max()), 1) if len(mask) else 0

        def put(a: np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(a[:, :L]))
            return t.pin_memory().to(device, non_blocking=True) if torch.device(device).type == "cuda" else t.to(device)

        tokens = {k: put(v[idx]) for k, v in self.tokens.items()}
        return tokens, put(mask), put(self.labels[idx])

    def chunks(self, batch_lists: int):
        """Slices of at most `batch_lists` lists covering all B lists in order."""
        return [slice(a, a + batch_lists) for a in range(0, self.mask.shape[0], batch_lists)]


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

    def subset(self, query_index: Sequence[int]) -> "RankingData":
        """The given queries (in the given order), as a new RankingData."""
        qi = np.asarray(query_index, dtype=np.int64)
        rows = np.concatenate([np.arange(self.offsets[q], self.offsets[q + 1]) for q in qi]) if len(qi) else \
            np.zeros(0, dtype=np.int64)
        lengths = self.list_lengths[qi]
        return RankingData(
            spec=self.spec, query_ids=self.query_ids[qi], queries=self.queries[qi],
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            candidate_ids=self.candidate_ids[rows], labels=self.labels[rows],
            features={k: v[rows] for k, v in self.features.items()},
            extras=self.extras.iloc[rows].reset_index(drop=True), report=self.report)

    def padded(self, query_index: Sequence[int] | None = None, max_len: int = 0) -> PaddedLists:
        """Pad the chosen lists to the longest (or `max_len`, keeping the original top)."""
        qi = np.arange(self.num_queries) if query_index is None else np.asarray(query_index, dtype=np.int64)
        lengths = self.list_lengths[qi]
        if max_len > 0:
            lengths = np.minimum(lengths, max_len)
        L = int(lengths.max()) if len(qi) else 0
        mask = np.arange(L)[None, :] < lengths[:, None]  # [B, L]
        starts = self.offsets[qi]
        # gather index per slot; padded slots point at row 0 and are zeroed below
        idx = np.where(mask, starts[:, None] + np.arange(L)[None, :], 0)
        tokens = {k: np.where(mask[..., None], v[idx], 0.0).astype(np.float32) for k, v in self.features.items()}
        labels = np.where(mask, self.labels[idx], 0.0).astype(np.float32)
        return PaddedLists(tokens=tokens, labels=labels, mask=mask, query_index=qi)

    def fingerprint(self) -> str:
        """Content hash of ids, labels and features (what a run was trained on)."""
        h = hashlib.sha256()
        for arr in (self.query_ids.astype(str), self.candidate_ids.astype(str)):
            h.update("\x1f".join(arr.tolist()).encode() + b"\x1e")
        h.update(np.ascontiguousarray(self.offsets, dtype=np.int64).tobytes())  # which rows form which list
        h.update(np.ascontiguousarray(self.labels).tobytes())
        for k in sorted(self.features):
            h.update(k.encode())
            h.update(np.ascontiguousarray(self.features[k]).tobytes())
        return h.hexdigest()[:16]


def build_ranking_data(frame: pd.DataFrame, spec: FeatureSpec, source: str, *, require_labels: bool = True,
                       line_label: str = "line",
                       min_candidates: int = 2, on_small_list: SmallListPolicy = "skip") -> RankingData:
    """Validate a frame of candidates (one row per candidate, `_line` = its line in `source`).

    Raises DataError naming file, line, field and problem for the first bad value.
    """
    lines = frame["_line"].to_numpy() if "_line" in frame else np.arange(1, len(frame) + 1)
    report = LoadReport(source=source, lines=len(frame))

    def fail(row: int | None, field: str | None, problem: str) -> DataError:
        line = None if row is None else int(lines[row])
        err = DataError(source, line, field, problem)
        if line_label != "line" and line is not None:
            err.args = (str(err).replace(f"line {line}", f"{line_label} {line}"),)
        return err

    if len(frame) == 0:
        raise fail(None, None, "no candidates found (empty input)")
    if not require_labels and spec.label_field not in frame.columns:
        # scoring-only input (e.g. `rerank`): no ground truth, labels read as the minimum grade
        frame = frame.assign(**{spec.label_field: spec.label_min})
    for col in ("query_id", "candidate_id", spec.label_field):
        _require(frame, col, fail)
    qid = _ids(frame, "query_id", fail)
    cid = _ids(frame, "candidate_id", fail)
    label = _scalar(frame, spec.label_field, fail)
    bad = np.flatnonzero((label < spec.label_min) | (label > spec.label_max))
    if len(bad):
        raise fail(bad[0], spec.label_field,
                   f"label {label[bad[0]]:g} is out of range [{spec.label_min:g}, {spec.label_max:g}]")

    features = {}
    for tok in spec.tokens:
        cols = token_columns(tok)
        for f in cols:
            _require(frame, f, fail)
        if len(cols) == 1 and _is_vector_column(frame[cols[0]]):
            features[tok.name] = _vector(frame, cols[0], tok.dim, fail)
        else:
            features[tok.name] = np.stack([_scalar(frame, f, fail) for f in cols], axis=1)

    dup = pd.Series(list(zip(qid, cid))).duplicated().to_numpy()
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        raise fail(r, "candidate_id", f"duplicate candidate '{cid[r]}' in query '{qid[r]}'")

    order_key, report.order_from = _order_key(frame, fail)
    codes, uniq = pd.factorize(pd.Series(qid), sort=False)
    perm = np.lexsort((np.arange(len(frame)), order_key, codes))
    lengths = np.bincount(codes, minlength=len(uniq))

    keep_q = lengths >= min_candidates
    if not keep_q.all():
        small = np.flatnonzero(~keep_q)
        if on_small_list == "reject":
            row = int(np.flatnonzero(codes == small[0])[0])
            raise fail(row, "query_id", f"query '{uniq[small[0]]}' has {lengths[small[0]]} candidate(s); "
                                         f"at least {min_candidates} are needed")
        report.queries_skipped = len(small)
        report.candidates_skipped = int(lengths[small].sum())
        report.skip_reasons[f"query with fewer than {min_candidates} candidates"] = len(small)
    perm = perm[keep_q[codes[perm]]]
    kept_lengths = lengths[keep_q]
    report.queries_kept, report.candidates_kept = int(keep_q.sum()), len(perm)

    text = frame["query"].astype(str).to_numpy() if "query" in frame else np.full(len(frame), "", dtype=object)
    starts = np.concatenate([[0], np.cumsum(kept_lengths)])[:-1]
    extras = frame.drop(columns=[c for c in frame.columns if c in _RESERVED or c == spec.label_field
                                 or any(c in token_columns(t) for t in spec.tokens)])
    return RankingData(
        spec=spec, query_ids=np.asarray(qid[perm][starts], dtype=object) if len(perm) else np.zeros(0, object),
        queries=np.asarray(text[perm][starts], dtype=object) if len(perm) else np.zeros(0, object),
        offsets=np.concatenate([[0], np.cumsum(kept_lengths)]).astype(np.int64),
        candidate_ids=np.asarray(cid[perm], dtype=object), labels=label[perm].astype(np.float32),
        features={k: np.ascontiguousarray(v[perm], dtype=np.float32) for k, v in features.items()},
        extras=extras.iloc[perm].reset_index(drop=True), report=report)


def token_columns(tok: TokenSpec) -> tuple[str, ...]:
    """Input columns of a token: its fields, or 'f<i>' for LETOR feature indices."""
    return tok.fields or tuple(f"f{i}" for i in tok.indices)


def _require(frame: pd.DataFrame, col: str, fail) -> None:
    if col not in frame.columns:
        raise fail(0, col, "required field is missing")
    nulls = frame[col].isna().to_numpy()
    if nulls.any():
        raise fail(int(np.flatnonzero(nulls)[0]), col, "required field is missing or null")


def _ids(frame: pd.DataFrame, col: str, fail) -> np.ndarray:
    values = frame[col]
    out = np.asarray([str(v) for v in values], dtype=object)
    empty = np.flatnonzero(out == "")
    if len(empty):
        raise fail(int(empty[0]), col, "empty id")
    return out


def _scalar(frame: pd.DataFrame, col: str, fail) -> np.ndarray:
    raw = frame[col]
    if raw.map(lambda v: isinstance(v, (list, tuple, np.ndarray, dict, bool))).any():
        r = int(np.flatnonzero(raw.map(lambda v: isinstance(v, (list, tuple, np.ndarray, dict, bool))).to_numpy())[0])
        raise fail(r, col, f"expected a number, got {type(raw.iloc[r]).__name__}")
    num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(num))
    if len(bad):
        r = int(bad[0])
        value = raw.iloc[r]
        why = "value is NaN or infinite" if isinstance(value, (float, int, np.number)) else f"not a number: {value!r}"
        raise fail(r, col, why)
    return num


def _is_vector_column(col: pd.Series) -> bool:
    first = col.iloc[0]
    return isinstance(first, (list, tuple, np.ndarray))


def _vector(frame: pd.DataFrame, col: str, dim: int | None, fail) -> np.ndarray:
    values = frame[col].to_numpy()
    is_seq = np.fromiter((isinstance(v, (list, tuple, np.ndarray)) for v in values), bool, len(values))
    if not is_seq.all():
        r = int(np.flatnonzero(~is_seq)[0])
        raise fail(r, col, f"expected a vector (list of numbers), got {type(values[r]).__name__}")
    lengths = np.fromiter((len(v) for v in values), np.int64, len(values))
    expected = dim if dim is not None else int(lengths[0])
    bad = np.flatnonzero(lengths != expected)
    if len(bad):
        r = int(bad[0])
        raise fail(r, col, f"vector has length {lengths[r]}, expected {expected}")
    try:
        arr = np.asarray(np.stack([np.asarray(v, dtype=np.float64) for v in values]), dtype=np.float64)
    except (TypeError, ValueError):
        for r, v in enumerate(values):
            try:
                np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                raise fail(r, col, "vector holds a value that is not a number") from None
        raise
    bad_rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad_rows):
        r = int(bad_rows[0])
        j = int(np.flatnonzero(~np.isfinite(arr[r]))[0])
        raise fail(r, col, f"element {j} is NaN or infinite")
    return arr


def _order_key(frame: pd.DataFrame, fail) -> tuple[np.ndarray, str]:
    """Sort key for the ORIGINAL order: first_stage_rank, else -first_stage_score, else file order."""
    if "first_stage_rank" in frame and frame["first_stage_rank"].notna().any():
        _require(frame, "first_stage_rank", fail)
        return _scalar(frame, "first_stage_rank", fail), "first_stage_rank"
    if "first_stage_score" in frame and frame["first_stage_score"].notna().any():
        _require(frame, "first_stage_score", fail)
        return -_scalar(frame, "first_stage_score", fail), "first_stage_score (descending)"
    return np.arange(len(frame), dtype=np.float64), "file order"
