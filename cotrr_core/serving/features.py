"""Request candidates -> feature arrays, fast; the data layer explains what is wrong when it is not.

The fast path converts plain dicts straight to float32 arrays and checks shapes and (unless the
caller checks the scores instead) finiteness. Anything it cannot convert is handed to
`build_ranking_data` (the Step5 contract) only to obtain its precise DataError, so serving and
training reject the same inputs with the same messages.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from cotrr_core.data.dataset import RankingData, build_ranking_data, token_columns
from cotrr_core.data.errors import DataError
from cotrr_core.data.spec import FeatureSpec

__all__ = ["SOURCE", "TokenLayout", "Featurizer", "all_finite", "as_records", "invalid_lists", "original_order",
           "in_original_order", "request_items", "request_records"]

SOURCE = "rerank request"
_REAL, _BOOL = (int, float, np.integer, np.floating), (bool, np.bool_)


@dataclass(frozen=True)
class TokenLayout:
    """How one token is read from a candidate dict."""

    name: str
    fields: tuple[str, ...]
    dim: int
    list_constant: bool
    get: Callable[[dict], Any]  # itemgetter over `fields`


def as_records(candidates: Any) -> list[dict]:
    """list[dict] or DataFrame -> list of dicts (the caller's dicts are never mutated)."""
    if isinstance(candidates, pd.DataFrame):
        return candidates.to_dict("records")
    if not isinstance(candidates, (list, tuple)) or not all(isinstance(c, dict) for c in candidates):
        raise DataError(SOURCE, None, None, "candidates must be a list of dicts or a DataFrame")
    return list(candidates)


def request_items(candidates: Any) -> list | None:
    """A request's items as a list (a DataFrame -> row dicts); None when it is not a list at all."""
    try:
        if isinstance(candidates, (list, tuple)):
            return list(candidates)
        return as_records(candidates)
    except DataError:
        return None


def request_records(data: RankingData, q: int) -> list[dict]:
    """List q (original order) as the candidate dicts a rerank request carries: candidate_id,
    first_stage_rank and the spec's input fields (vectors as float32 arrays [d], scalars as floats)."""
    r = data.rows(q)
    records = [{"candidate_id": str(c), "first_stage_rank": i + 1} for i, c in enumerate(data.candidate_ids[r])]
    for tok in data.spec.tokens:
        cols = token_columns(tok)
        block = np.asarray(data.features[tok.name][r], dtype=np.float32)  # [n, d] (the cache may hold float16)
        if len(cols) == 1 and block.shape[1] > 1:
            for rec, row in zip(records, block):
                rec[cols[0]] = row
        else:
            for j, col in enumerate(cols):
                for rec, v in zip(records, block[:, j].tolist()):
                    rec[col] = v
    return records


def original_order(records: list[dict], spec: FeatureSpec) -> np.ndarray:
    """[n] permutation into the ORIGINAL order: first_stage_rank, else -first_stage_score, else as given."""
    for key, sign in (("first_stage_rank", 1.0), ("first_stage_score", -1.0)):
        values = [r.get(key) for r in records]
        if any(v is not None for v in values):
            try:
                arr = _numbers_of(values)
            except (TypeError, ValueError, OverflowError):
                raise explain(records, spec) from None
            if not np.isfinite(arr).all():
                raise explain(records, spec)
            return np.argsort(sign * arr, kind="stable")
    return np.arange(len(records))


def _numbers_of(values: list) -> np.ndarray:
    """values -> float64 [n]; TypeError for anything but real numbers: a numeric string, a bool or a missing
    value is refused here as the data layer refuses it in a file (the caller then asks it for the error)."""
    if any(not issubclass(k, _REAL) or issubclass(k, _BOOL) for k in set(map(type, values))):
        raise TypeError("not a number")
    return np.asarray(values, dtype=np.float64)


def in_original_order(lists: list[list], spec: FeatureSpec) -> list[list | DataError]:
    """Each list's items in original order (see original_order; the list itself when it already is), or
    the DataError why there is none (an item that is not a dict, a bad rank or score). Lists whose every
    item is a dict with a finite first_stage_rank (the common request) are checked in one pass."""
    flat = list(chain.from_iterable(lists))
    if set(map(type, flat)) <= {dict}:
        try:
            ranks = _numbers_of([r.get("first_stage_rank") for r in flat])
        except (TypeError, ValueError, OverflowError):
            ranks = None
        if ranks is not None and np.isfinite(ranks).all():
            ends = np.cumsum([len(items) for items in lists], dtype=np.int64)
            descent = ranks[1:] < ranks[:-1]  # row j + 1 ranked above row j ...
            starts = ends[:-1][(ends[:-1] > 0) & (ends[:-1] < len(ranks))]
            descent[starts - 1] = False  # ... within a list
            unsorted = set(np.searchsorted(ends, np.flatnonzero(descent) + 1, side="right").tolist())
            return [_reorder(items, original_order(items, spec)) if k in unsorted else items
                    for k, items in enumerate(lists)]
    return [_in_original_order(items, spec) for items in lists]


def _in_original_order(items: list, spec: FeatureSpec) -> list | DataError:
    if not all(isinstance(r, dict) for r in items):
        return DataError(SOURCE, None, None, "every candidate must be a dict")
    try:
        return _reorder(items, original_order(items, spec))
    except DataError as exc:
        return exc


def _reorder(items: list, order: np.ndarray) -> list:
    return [items[k] for k in order.tolist()]


class Featurizer:
    """Candidate dicts -> {token: float32 [n, d]} for the run's spec and token widths."""

    def __init__(self, spec: FeatureSpec, token_dims: dict[str, int]) -> None:
        self.spec = spec
        self.layout = tuple(
            TokenLayout(t.name, token_columns(t), int(token_dims[t.name]), t.list_constant,
                        itemgetter(*token_columns(t)))
            for t in spec.tokens)

    def __call__(self, records: list[dict], offsets: np.ndarray | None = None,
                 check_finite: bool = True) -> dict[str, np.ndarray]:
        """records (lists concatenated, each in original order) -> {name: float32 [n, d]}, except
        list-constant tokens: [K, d], read from each list's first candidate (the model reads no more).

        offsets [K + 1] mark the lists (default: one list). Raises DataError on bad input; an error the
        data layer does not confirm as bad input is an internal one and is raised as it is.
        check_finite=False lets NaN, inf and out-of-float32-range values through (for a caller that checks
        the scores instead: see Reranker._blame_inputs).
        """
        offsets = np.array([0, len(records)]) if offsets is None else np.asarray(offsets)
        try:
            return {t.name: self._token(t, records, offsets, check_finite) for t in self.layout}
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            err = explain(records, self.spec, exc)
            if err is None:
                raise
            raise err from exc

    def lists(self, tops: list[list[dict]], check_finite: bool = True,
              ) -> tuple[dict[str, np.ndarray], np.ndarray, list[Exception | None]]:
        """K lists of dicts -> (token arrays over all their rows, as __call__ gives them; offsets [K + 1]; per
        list the exception its input raised, or None). One conversion per token; only when that fails are
        the lists converted one by one, to blame the right ones (their rows are then zeros)."""
        offsets = np.concatenate([[0], np.cumsum([len(h) for h in tops])]).astype(np.int64)
        errors: list[Exception | None] = [None] * len(tops)
        if not tops:
            return {}, offsets, errors
        try:
            return self([r for h in tops for r in h], offsets, check_finite), offsets, errors
        except Exception:  # noqa: BLE001 - find the list(s) to blame below
            pass
        parts = []
        for k, h in enumerate(tops):
            try:
                parts.append(self(h, check_finite=check_finite))
            except Exception as exc:  # noqa: BLE001 - one list's problem must not fail the others
                errors[k] = exc
                parts.append({t.name: np.zeros((1 if t.list_constant else len(h), t.dim), np.float32)
                              for t in self.layout})
        return {t.name: np.concatenate([p[t.name] for p in parts]) for t in self.layout}, offsets, errors

    def nonfinite(self, features: dict[str, np.ndarray], offsets: np.ndarray, k: int) -> DataError | None:
        """The DataError naming list k's first NaN, infinite or out-of-float32-range value in arrays this
        Featurizer made with check_finite=False (offsets [K + 1]), or None when all are finite."""
        rows = slice(int(offsets[k]), int(offsets[k + 1]))
        for t in self.layout:
            block = features[t.name][k:k + 1] if t.list_constant else features[t.name][rows]
            with np.errstate(invalid="ignore"):
                bad = np.argwhere(~np.isfinite(block))
            if len(bad):
                row, col = (int(i) for i in bad[0])
                field = t.fields[col] if len(t.fields) == t.dim else t.fields[0]
                where = f"element {col} " if len(t.fields) != t.dim else ""
                return DataError(SOURCE, None, field, f"candidate {row + 1}: {where}NaN, infinite or "
                                 "out-of-float32-range value")
        return None

    def _token(self, t: TokenLayout, records: list[dict], offsets: np.ndarray, check_finite: bool) -> np.ndarray:
        first_rows = t.list_constant and len(t.fields) == 1
        if first_rows:
            # The model reads only candidate 0 of a list-constant token; the rest are only
            # length-checked, which saves converting (L - 1) x d floats per list.
            field = t.fields[0]
            arr = _numbers([records[a][field] for a in offsets[:-1]], t).reshape(len(offsets) - 1, -1)
            if any(len(r[field]) != t.dim for r in records):
                raise ValueError(f"{field}: wrong vector length")
        elif t.dim == len(t.fields):  # scalar fields, read in one flat pass
            values = list(map(t.get, records) if len(t.fields) == 1 else chain.from_iterable(map(t.get, records)))
            refused = [k for k in set(map(type, values)) if not issubclass(k, _REAL) or issubclass(k, _BOOL)]
            if refused:  # text, booleans, None, objects: refused as the data layer does, not converted
                raise TypeError(f"{t.name}: values must be numbers, got {sorted(k.__name__ for k in refused)}")
            with np.errstate(over="ignore"):
                arr = np.array(values, dtype=np.float64).astype(np.float32).reshape(len(records), -1)
        else:
            arr = _numbers([t.get(r) for r in records], t).reshape(len(records), -1)
        if arr.shape[1] != t.dim:
            raise _width_error(t, arr.shape[1])
        if check_finite and not all_finite(arr):
            raise ValueError(f"{t.name}: NaN, infinite or out-of-float32-range value")
        return arr[offsets[:-1]] if t.list_constant and not first_rows else arr


def _numbers(values: list, t: TokenLayout) -> np.ndarray:
    """float32 array of real numbers; text, booleans and objects are refused (TypeError), not converted."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{t.name}: values must be numbers, got {arr.dtype}")
    with np.errstate(over="ignore"):
        return arr.astype(np.float32, copy=False)


def all_finite(x: np.ndarray, axis: int | None = None) -> np.ndarray | bool:
    """Are all values of `x` finite (per row with axis=1)? max and min propagate NaN and are +-inf when any
    value is, so both are finite exactly when every value is: no [n, d] mask array, and cheaper than a
    float64 sum."""
    return np.isfinite(x.max(axis=axis, initial=0.0)) & np.isfinite(x.min(axis=axis, initial=0.0))


def invalid_lists(features: dict[str, np.ndarray], offsets: np.ndarray, token_dims: dict[str, int]) -> list[str | None]:
    """Columnar input: per list, why its arrays cannot be scored (missing token, wrong shape, a NaN,
    infinite or out-of-float32-range value), or None. features {name: [N, d]}, offsets [K + 1]."""
    n = int(offsets[-1]) if len(offsets) else 0
    out: list[str | None] = [None] * (len(offsets) - 1)
    for name, dim in token_dims.items():
        x = features.get(name)
        if x is None or np.ndim(x) != 2 or len(x) != n or np.shape(x)[1] != dim:
            got = "missing" if x is None else f"shape {np.shape(x)}"
            return [f"token '{name}': expected [{n}, {dim}], got {got}"] * len(out)
        with np.errstate(over="ignore", invalid="ignore"):
            bad_rows = ~all_finite(np.asarray(x, dtype=np.float32), axis=1)
        count = np.concatenate([[0], np.cumsum(bad_rows)])
        for q in np.flatnonzero(count[offsets[1:]] - count[offsets[:-1]]):
            out[q] = out[q] or f"token '{name}': NaN, infinite or out-of-float32-range value"
    return out


def _width_error(t: TokenLayout, got: int) -> DataError:
    return DataError(SOURCE, None, ",".join(t.fields), f"token '{t.name}' has width {got}, the model expects {t.dim}")


def explain(records: list[dict], spec: FeatureSpec | None, exc: Exception | None = None) -> DataError | None:
    """The data layer's DataError for `records` (which the fast path rejected); None when the data layer
    accepts them although the fast path raised `exc` (then the fault is ours, not the caller's)."""
    if isinstance(exc, DataError):
        return exc
    if spec is not None:
        frame = pd.DataFrame.from_records(records)
        defaults = {"query_id": "request", "candidate_id": [str(i) for i in range(len(frame))],
                    spec.label_field: spec.label_min}  # serving input needs neither ids nor labels
        for col, value in defaults.items():
            if col not in frame:
                frame[col] = value
        try:
            build_ranking_data(frame, spec, SOURCE, line_label="candidate", min_candidates=1, on_small_list="reject")
        except DataError as err:
            return err
        except Exception as err:  # noqa: BLE001 - any failure of the validator still means bad input
            return DataError(SOURCE, None, None, f"{type(err).__name__}: {err}")
        if exc is not None:
            return None
    detail = f"{type(exc).__name__}: {exc}" if exc is not None else "invalid first_stage_rank/score"
    return DataError(SOURCE, None, None, detail)
