"""Per-row checks of a candidate frame: ids, labels, scalar and vector features, original order.

Pure functions of one frame (or one chunk of a large file); each raises the DataError built by
`fail(row, field, problem)`, which knows the frame's line numbers.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd

from cotrr_core.data.errors import DataError
from cotrr_core.data.limits import F32_MAX
from cotrr_core.data.spec import FeatureSpec, TokenSpec

__all__ = ["Columns", "check_unique_candidates", "order_lists", "row_failer", "token_columns", "validate_columns"]


@dataclass
class Columns:
    """One frame's validated columns, in the frame's row order (n rows)."""

    qid: np.ndarray  # [n] object str
    cid: np.ndarray  # [n] object str
    label: np.ndarray  # [n] float64
    features: dict  # token -> [n, d] float32
    order_key: np.ndarray  # [n] float64 (ascending = original order)
    order_from: str


def token_columns(tok: TokenSpec) -> tuple[str, ...]:
    """Input columns of a token: its fields, or 'f<i>' for LETOR feature indices."""
    return tok.fields or tuple(f"f{i}" for i in tok.indices)


def validate_columns(frame: pd.DataFrame, spec: FeatureSpec, fail, vectors: dict | None = None,
                     dims: dict | None = None) -> Columns:
    """Check every required column of `frame` (labels already present) in a fixed order.

    `vectors`: vector columns a reader already decoded to [n, d]; `dims`: token -> the vector length
    an earlier chunk of the same file had (so every chunk agrees)."""
    vectors, dims = vectors or {}, dims or {}
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
        dim = tok.dim if tok.dim is not None else dims.get(tok.name)
        if len(cols) == 1 and cols[0] in vectors:
            features[tok.name] = _checked_vectors(vectors[cols[0]], cols[0], dim, fail)
            continue
        for f in cols:
            _require(frame, f, fail)
        # a vector by the spec's dim, an earlier chunk's vectors, else this chunk's column (a one-field scalar
        # token's earlier width of 1 does not make this chunk's numbers vectors)
        if len(cols) == 1 and (tok.dim is not None or (dim or 1) > 1 or _is_vector_column(frame[cols[0]])):
            features[tok.name] = _vector(frame, cols[0], dim, fail)
        else:
            features[tok.name] = np.stack([_scalar(frame, f, fail) for f in cols], axis=1).astype(np.float32)
    order_key, order_from = _order_key(frame, fail)
    return Columns(qid, cid, label, features, order_key, order_from)


def _require(frame: pd.DataFrame, col: str, fail) -> None:
    if col not in frame.columns:
        raise fail(0, col, "required field is missing")
    nulls = frame[col].isna().to_numpy()
    if nulls.any():
        raise fail(int(np.flatnonzero(nulls)[0]), col, "required field is missing or null")


def _ids(frame: pd.DataFrame, col: str, fail) -> np.ndarray:
    """Ids as text, kept exactly as given; integers are allowed, but 7 and "7" in one file would silently
    merge: refused. Floats are refused (1 would read as "1.0", and ids beyond 2**53 would merge), as are
    ids with leading or trailing whitespace (" c1" and "c1" would be two candidates) and text that reads as a
    list or object ("[1, 2]": a CSV cell cannot tell). Text such as "True" is an id like any other, in
    every format (a CSV cell True is the text 'True', as JSONL's "True")."""
    values = frame[col].to_numpy(dtype=object)
    is_text = np.fromiter((isinstance(v, str) for v in values), bool, len(values))
    if not is_text.all():
        ok = np.fromiter((isinstance(v, (str, int, np.integer)) and not isinstance(v, (bool, np.bool_))
                          for v in values), bool, len(values))
        if not ok.all():
            r = int(np.flatnonzero(~ok)[0])
            raise fail(r, col, f"expected a text or integer id, got {type(values[r]).__name__} {values[r]!r:.40}")
    out = np.asarray([str(v) for v in values], dtype=object)
    empty = np.flatnonzero(out == "")
    if len(empty):
        raise fail(int(empty[0]), col, "empty id")
    _check_id_text(out, col, fail)
    if is_text.any() and not is_text.all():
        clash = np.isin(out, out[~is_text]) & is_text
        if clash.any():
            r = int(np.flatnonzero(clash)[0])
            raise fail(r, col, f"id \"{out[r]}\" is given both as text and as the number {out[r]}; "
                               "they would merge into one: write every id the same way")
    return out


def _check_id_text(ids: np.ndarray, col: str, fail) -> None:
    """No id with leading/trailing whitespace, none reading as a list or an object."""
    text = pd.Series(ids, dtype=object)
    padded = np.flatnonzero((text.str.strip() != text).to_numpy())
    if len(padded):
        r = int(padded[0])
        raise fail(r, col, f"id {ids[r][:40]!r} has leading or trailing whitespace (ids are kept exactly as given)")
    alike = np.flatnonzero(text.str.match(r"[\[{]").to_numpy())
    if len(alike):
        r = int(alike[0])
        raise fail(r, col, f"id {ids[r][:40]!r} looks like a list or an object, which ids cannot be")


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


def check_unique_candidates(qid: np.ndarray, cid: np.ndarray, fail) -> None:
    """DataError at the first repeated (query_id, candidate_id) pair; qid, cid [N]."""
    dup = pd.DataFrame({"q": qid, "c": cid}).duplicated().to_numpy()
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        raise fail(r, "candidate_id", f"duplicate candidate '{cid[r]}' in query '{qid[r]}'")


def order_lists(codes: np.ndarray, uniq, order_key: np.ndarray, min_candidates: int, on_small_list: str,
                fail, report) -> tuple[np.ndarray, np.ndarray]:
    """Row order of the kept lists: (perm [N_kept], kept list lengths [Q_kept]).

    Rows are grouped by query (first appearance, `codes` [N] from pd.factorize with its `uniq`)
    and sorted by `order_key` [N] inside (stably). Lists shorter than `min_candidates` are skipped
    and counted in `report` (LoadReport), or rejected with a DataError when on_small_list="reject".
    """
    perm = np.lexsort((np.arange(len(codes)), order_key, codes))
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
    report.queries_kept, report.candidates_kept = int(keep_q.sum()), len(perm)
    return perm, lengths[keep_q]


def row_failer(name: str, lines: np.ndarray, line_label: str = "line"):
    """fail(row, field, problem) -> DataError naming `name`, the row's line (lines [N]) and the field;
    `line_label` replaces "line" in the message (e.g. "row" for Parquet)."""
    def fail(row: int | None, field: str | None, problem: str) -> DataError:
        line = None if row is None else int(lines[row])
        err = DataError(name, line, field, problem)
        if line_label != "line" and line is not None:
            err.args = (str(err).replace(f"line {line}", f"{line_label} {line}"),)
        return err
    return fail
