"""RankingData: validated candidate lists in their ORIGINAL order, plus the padded view.

Rows are grouped by query (first-appearance order) and, within a query, sorted
into the original first-stage order, so rows offsets[q]:offsets[q+1] are query
q's candidates, original rank 1 first.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from cotrr_core.data.errors import DataError, LoadReport
from cotrr_core.data.limits import F32_MAX
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
        if len(cols) == 1 and cols[0] in vectors:
            features[tok.name] = _checked_vectors(vectors[cols[0]], cols[0], tok.dim, fail)
            continue
        for f in cols:
            _require(frame, f, fail)
        if len(cols) == 1 and (tok.dim is not None or _is_vector_column(frame[cols[0]])):
            features[tok.name] = _vector(frame, cols[0], tok.dim, fail)
        else:
            features[tok.name] = np.stack([_scalar(frame, f, fail) for f in cols], axis=1).astype(np.float32)

    dup = pd.DataFrame({"q": qid, "c": cid}).duplicated().to_numpy()
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        raise fail(r, "candidate_id", f"duplicate candidate '{cid[r]}' in query '{qid[r]}'")

    order_key, report.order_from = _order_key(frame, fail)
    codes, uniq = pd.factorize(pd.Series(qid), sort=False)
    for tok in spec.tokens:
        if tok.list_constant:
            _check_list_constant(features[tok.name], codes, ",".join(token_columns(tok)), fail,
                                 lambda r: f"{line_label} {int(lines[r])}")
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
        if not keep_q.any():
            raise fail(0, "query_id", f"no query has at least {min_candidates} candidates "
                                      f"({len(uniq)} queries, all too small to rank)")
    perm = perm[keep_q[codes[perm]]]
    kept_lengths = lengths[keep_q]
    report.queries_kept, report.candidates_kept = int(keep_q.sum()), len(perm)

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
    """Ids as text; numbers are allowed, but 7 and "7" in one file would silently merge: refused."""
    values = frame[col].to_numpy(dtype=object)
    is_text = np.fromiter((isinstance(v, str) for v in values), bool, len(values))
    if not is_text.all():
        ok = np.fromiter((isinstance(v, (str, int, np.integer)) and not isinstance(v, (bool, np.bool_))
                          or isinstance(v, (float, np.floating)) and math.isfinite(v) for v in values),
                         bool, len(values))
        if not ok.all():
            r = int(np.flatnonzero(~ok)[0])
            raise fail(r, col, f"expected a text or integer id, got {type(values[r]).__name__} {values[r]!r:.40}")
    out = np.asarray([str(v) for v in values], dtype=object)
    empty = np.flatnonzero(out == "")
    if len(empty):
        raise fail(int(empty[0]), col, "empty id")
    if is_text.any() and not is_text.all():
        clash = np.isin(out, out[~is_text]) & is_text
        if clash.any():
            r = int(np.flatnonzero(clash)[0])
            raise fail(r, col, f"id \"{out[r]}\" is given both as text and as the number {out[r]}; "
                               "they would merge into one: write every id the same way")
    return out


def _bad_number(value) -> str | None:
    """Why `value` is not a plain number (None when it is). Text is refused: only CSV cells are text,
    and the CSV reader converts those strictly before this runs."""
    if isinstance(value, (bool, np.bool_)):
        return f"expected a number, got a boolean ({value})"
    if isinstance(value, (int, float, np.integer, np.floating, Decimal)):
        return None
    if isinstance(value, str):
        return f"not a number: {value[:40]!r}"
    return f"expected a number, got {type(value).__name__}"


def _as_float(value) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond float64: out of range like any other
        return math.inf if value > 0 else -math.inf


def _scalar(frame: pd.DataFrame, col: str, fail) -> np.ndarray:
    """A scalar column as float64, every value a real number finite in float32."""
    raw = frame[col]
    dtype = raw.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise fail(0, col, "expected a number, got a boolean column")
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        num = raw.to_numpy(dtype=np.float64)
    elif isinstance(dtype, np.dtype) and dtype.kind != "O" or pd.api.types.is_datetime64_any_dtype(dtype):
        raise fail(0, col, f"expected a number, got a {dtype} column")
    else:
        values = raw.to_numpy(dtype=object)
        why = [_bad_number(v) for v in values]
        bad = next((r for r, w in enumerate(why) if w), None)
        if bad is not None:
            raise fail(bad, col, why[bad])
        num = np.fromiter((_as_float(v) for v in values), np.float64, len(values))
    _check_finite(num[:, None], col, fail)
    return num


def _check_finite(arr: np.ndarray, col: str, fail, vector: bool = False) -> None:
    """Every value of [N, d] finite in float32 (what the model computes in)."""
    with np.errstate(over="ignore", invalid="ignore"):
        ok = np.isfinite(arr) & (np.abs(arr) <= F32_MAX)
    if ok.all():
        return
    r = int(np.flatnonzero(~ok.all(axis=1))[0])
    j = int(np.flatnonzero(~ok[r])[0])
    value = float(arr[r, j])
    where = f"element {j} " if vector else ""
    if math.isfinite(value):
        raise fail(r, col, f"{where}value {value:g} is outside the float32 range (|x| <= {F32_MAX:.4g})")
    raise fail(r, col, f"{where}is NaN or infinite" if vector else "value is NaN or infinite")


def _is_vector_column(col: pd.Series) -> bool:
    """Most rows hold a sequence (so one odd row is blamed, not every other row)."""
    is_seq = col.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).to_numpy(dtype=bool)
    return bool(is_seq.sum() * 2 > len(is_seq))


def _expected_length(lengths: np.ndarray, dim: int | None) -> int:
    """The spec's dim, else the most common length (ties: the earliest row's)."""
    if dim is not None:
        return dim
    uniq, first, counts = np.unique(lengths, return_index=True, return_counts=True)
    best = np.lexsort((first, -counts))[0]
    return int(uniq[best])


def _vector(frame: pd.DataFrame, col: str, dim: int | None, fail) -> np.ndarray:
    """A vector column as [N, d] float32: flat sequences of real numbers of one length."""
    values = frame[col].to_numpy(dtype=object)
    is_seq = np.fromiter((isinstance(v, (list, tuple, np.ndarray)) for v in values), bool, len(values))
    if not is_seq.all():
        r = int(np.flatnonzero(~is_seq)[0])
        raise fail(r, col, f"expected a vector (list of numbers), got {type(values[r]).__name__}")
    lengths = np.fromiter((len(v) for v in values), np.int64, len(values))
    expected = _expected_length(lengths, dim)
    bad = np.flatnonzero(lengths != expected)
    if len(bad):
        r = int(bad[0])
        raise fail(r, col, f"vector has length {lengths[r]}, expected {expected}"
                           + ("" if dim is not None else f" (the length of {int((lengths == expected).sum())} "
                                                         f"of {len(values)} rows)"))
    if expected == 0:
        raise fail(0, col, "empty vector")
    _check_elements(values, col, fail)
    with np.errstate(over="ignore"):
        try:
            arr = np.array(values.tolist(), dtype=np.float32)
        except OverflowError:  # a Python int beyond float64 (checked row by row below)
            arr = np.array([[_as_float(x) for x in v] for v in values], dtype=np.float32)
    if not np.isfinite(arr).all():
        r = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        _check_finite(np.array([[_as_float(x) for x in values[r]]]), col,
                      lambda _r, f, why: fail(r, f, why), vector=True)
    return arr


def _check_elements(values: np.ndarray, col: str, fail) -> None:
    """Every element a real number: no nested lists, booleans, text or None."""
    arrays = [v for v in values if isinstance(v, np.ndarray)]
    if len(arrays) == len(values):  # Parquet: typed arrays
        for r, v in enumerate(values):
            if v.dtype.kind not in "fiu" or v.ndim != 1:
                bad = next((x for x in v.ravel() if _bad_number(x)), v.dtype)
                raise fail(r, col, f"vector holds a value that is not a number ({_element_kind(bad)})")
        return
    if set(map(type, itertools.chain.from_iterable(values))) <= {float, int}:
        return
    for r, v in enumerate(values):
        for j, x in enumerate(v):
            if type(x) not in (float, int) and _bad_number(x):
                raise fail(r, col, f"element {j} is not a number ({_element_kind(x)})")


def _element_kind(x) -> str:
    if isinstance(x, (list, tuple, np.ndarray)):
        return "a nested list: vectors are flat"
    return f"{type(x).__name__} {str(x)[:40]!r}"


def _checked_vectors(arr: np.ndarray, col: str, dim: int | None, fail) -> np.ndarray:
    """A reader's decoded [N, d] vector column: the spec's length, finite in float32."""
    if dim is not None and arr.shape[1] != dim:
        raise fail(0, col, f"vector has length {arr.shape[1]}, expected {dim}")
    if arr.shape[1] == 0:
        raise fail(0, col, "empty vector")
    _check_finite(arr, col, fail, vector=True)
    return arr.astype(np.float32, copy=False)


def _check_list_constant(arr: np.ndarray, codes: np.ndarray, col: str, fail, where) -> None:
    """A list-constant token is read from one candidate per list: every candidate must carry the same."""
    first = np.zeros(codes.max() + 1, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]  # first row of each query
    ref = first[codes]
    differs = np.flatnonzero((arr != arr[ref]).any(axis=1))
    if len(differs):
        r = int(differs[0])
        raise fail(r, col, f"differs from the first candidate of its list ({where(int(ref[r]))}): "
                           "this token must be identical for every candidate of a list")


def _order_key(frame: pd.DataFrame, fail) -> tuple[np.ndarray, str]:
    """Sort key for the ORIGINAL order: first_stage_rank, else -first_stage_score, else file order."""
    if "first_stage_rank" in frame and frame["first_stage_rank"].notna().any():
        _require(frame, "first_stage_rank", fail)
        return _scalar(frame, "first_stage_rank", fail), "first_stage_rank"
    if "first_stage_score" in frame and frame["first_stage_score"].notna().any():
        _require(frame, "first_stage_score", fail)
        return -_scalar(frame, "first_stage_score", fail), "first_stage_score (descending)"
    return np.arange(len(frame), dtype=np.float64), "file order"
