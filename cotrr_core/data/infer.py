"""A feature spec inferred from a Step5 file's first rows, for files that come without one.

Each vector field becomes its own token (its length as `dim`; `list_constant` when it is identical
within every list seen), the numeric scalar fields one token "scalars", `first_stage_score` a token
"first_stage". Ids, query text, image, the label and `first_stage_rank` are never features; other
columns (text, ...) stay extras. A file carrying every field of the built-in step5 spec keeps that
spec, so the demo and older files load exactly as before.

Both loaders (whole file and the streamed cache) resolve a missing spec here, from the same first
INFER_ROWS rows, so they agree on it (and the cache key holds it).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd

from cotrr_core.data.errors import DataError
from cotrr_core.data.limits import MAX_GRADE
from cotrr_core.data.spec import FeatureSpec, builtin_spec

__all__ = ["INFER_ROWS", "RESERVED_FIELDS", "infer_spec", "feature_fields", "label_fields", "resolve_spec", "read_head",
           "spec_sidecar"]

_MSGSPEC_DECODE = msgspec.json.Decoder().decode

INFER_ROWS = 2048  # rows read to infer a spec (whole lists of a few hundred candidates, in practice)
RESERVED_FIELDS = ("query_id", "candidate_id", "query", "image", "_line", "first_stage_rank")
FIRST_STAGE = "first_stage_score"


def spec_sidecar(path: str | Path) -> Path:
    """Where a dataset's chosen spec is kept: a hidden `.<file name>.spec.json` beside it."""
    path = Path(path)
    return path.parent / f".{path.name}.spec.json"


def resolve_spec(path: str | Path, fmt: str, name: str, head: pd.DataFrame | None = None) -> FeatureSpec:
    """The spec of a Step5 file given without one: its sidecar (spec_sidecar) when there is one, else the
    spec inferred from its first INFER_ROWS rows (`head`: those rows, when a caller has read them already).
    Raises DataError / ConfigError naming the file."""
    side = spec_sidecar(path)
    if side.exists():
        return FeatureSpec.load(side)
    if head is not None:
        return infer_spec(head, name)
    return _inferred_from_file(Path(path), fmt, name)


_INFERRED: dict[tuple, FeatureSpec] = {}  # (file, size, mtime, format, name) -> its inferred spec
_INFERRED_MAX = 64
_INFERRED_LOCK = threading.Lock()


def _inferred_from_file(path: Path, fmt: str, name: str) -> FeatureSpec:
    """infer_spec of the file's head, remembered while the file is unchanged (size and mtime): a serving or
    app process reopening a cached dataset would otherwise parse its head on every load."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, fmt, name)
    except OSError:
        return infer_spec(read_head(path, fmt, name), name)  # read_head words the error
    with _INFERRED_LOCK:
        spec = _INFERRED.get(key)
    if spec is None:
        spec = infer_spec(read_head(path, fmt, name), name)
        with _INFERRED_LOCK:
            if len(_INFERRED) >= _INFERRED_MAX:
                _INFERRED.pop(next(iter(_INFERRED)))
            _INFERRED[key] = spec
    return spec


def read_head(path: Path, fmt: str, name: str) -> pd.DataFrame:
    """The file's first INFER_ROWS rows as a frame (vectors as lists or arrays, CSV vectors as text).

    Read loosely, on purpose: inference only needs the value types, and the loader that follows names the
    first bad line precisely, so a JSONL head simply ends at a line that is not a JSON object. (Not through
    data/loaders.py, which resolves its missing specs here: no import cycle.)"""
    if fmt == "jsonl":
        return _jsonl_head(path)
    if fmt == "csv":
        try:
            return pd.read_csv(path, nrows=INFER_ROWS, skipinitialspace=True)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
            return pd.DataFrame()
    from cotrr_core.data.parquet import parquet_chunks

    empty = FeatureSpec(name="none", format="step5", tokens=())
    frame, _ = next(parquet_chunks(path, name, empty, INFER_ROWS), (pd.DataFrame(), {}))
    return frame


def _loads(text: str):
    """json.loads, through msgspec's faster parser for what it accepts (the same values; NaN, Infinity and
    integers past 64 bits are left to the standard library, which decides)."""
    try:
        return _MSGSPEC_DECODE(text)
    except (msgspec.MsgspecError, RecursionError):
        return json.loads(text)


def _jsonl_head(path: Path) -> pd.DataFrame:
    rows, lines = [], []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                obj = _loads(raw.decode("utf-8-sig" if n == 1 else "utf-8")) if raw.strip() else None
            except (ValueError, RecursionError):
                break
            if obj is None:
                continue
            if not isinstance(obj, dict):
                break
            rows.append(obj)
            lines.append(n)
            if len(rows) == INFER_ROWS:
                break
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    frame["_line"] = np.asarray(lines, dtype=np.int64)
    return frame


def infer_spec(frame: pd.DataFrame, name: str, *, features: list[str] | None = None, label_field: str | None = None,
               relevance_threshold: float | None = None) -> FeatureSpec:
    """A spec for the columns of `frame` (a file's first rows).

    Args:
        frame: rows of a Step5 file (one candidate each); vector cells as lists, arrays or '[...]' text.
        name: the file's name, for errors and the spec's name.
        features, label_field, relevance_threshold: a user's choice (the app's spec editor): only these
            fields as features (default: every candidate field), this label column and threshold.
    Raises:
        DataError when the frame has no label column or no feature at all; ConfigError for a bad choice.
    """
    if len(frame) == 0:
        raise DataError(name, None, None, "no candidates found (empty input)")
    columns = [c for c in frame.columns if not frame[c].isna().all()]
    step5 = builtin_spec("step5")
    if features is None and label_field is None and all(f in columns for t in step5.tokens for f in t.fields):
        return step5
    line = int(frame["_line"].iloc[0]) if "_line" in frame else None
    label = _label(frame, columns, name, line, label_field, relevance_threshold)
    kinds = feature_fields(frame, label["label_field"])
    chosen = [f for f in kinds if features is None or f in features]
    vectors = {f: _vectors(frame[f].to_numpy(dtype=object)) for f in chosen if kinds[f] == "vector"}
    tokens = [_vector_token(col, vec, frame, taken=set(columns) | {"scalars", "first_stage"})
              for col, vec in vectors.items()]
    scalars = [f for f in chosen if kinds[f] == "scalar" and f != FIRST_STAGE]
    if scalars:
        tokens.append({"name": "scalars", "fields": scalars})
    if FIRST_STAGE in chosen:
        tokens.append({"name": "first_stage", "fields": [FIRST_STAGE]})
    if not tokens:
        raise DataError(name, None, None, "no numeric feature field found to infer a spec from "
                                          "(vectors as lists, scalars as numbers); pass --spec")
    raw = {"name": f"inferred:{Path(name).name}", "format": "step5", "tokens": tokens, **label,
           "notes": "inferred from the file's first rows (cotrr_core.data.infer)" if features is None
           else "chosen from the file's fields"}
    pair = _similarity_pair(tokens)
    if pair is not None:
        raw["similarity"] = {"query": pair[0], "candidate": pair[1]}
    return FeatureSpec.from_dict(raw, where=f"{name}: inferred spec")


def feature_fields(frame: pd.DataFrame, label_field: str | None = None) -> dict[str, str]:
    """Every column that can be a feature, sorted: field -> "vector" or "scalar" (first_stage_score included;
    ids, query text, image, labels and first_stage_rank never)."""
    reserved = set(RESERVED_FIELDS) | {"compliance_score", "label", label_field}
    out = {}
    for col in sorted(c for c in frame.columns if c not in reserved and isinstance(c, str)):
        values = frame[col].to_numpy(dtype=object)
        if frame[col].isna().all():
            continue
        if _vectors(values) is not None:
            out[col] = "vector"
        elif all(_is_number(v) for v in values):
            out[col] = "scalar"
    return out


def label_fields(frame: pd.DataFrame) -> list[str]:
    """Columns that can be the label: numeric on every row (compliance_score and label first)."""
    numeric = [c for c in frame.columns if isinstance(c, str) and c not in RESERVED_FIELDS and c != FIRST_STAGE
               and len(frame) and all(_is_number(v) for v in frame[c].to_numpy(dtype=object))]
    return sorted(numeric, key=lambda c: (c not in ("compliance_score", "label"), c))


def _label(frame: pd.DataFrame, columns: list, name: str, line: int | None, field: str | None,
           threshold: float | None) -> dict:
    """compliance_score in [0, 1] (relevant from 0.8), else an integer `label` grade (relevant from 1); a chosen
    field: [0, 1] when its values lie there, else grades 0..MAX_GRADE."""
    field = field or next((f for f in ("compliance_score", "label") if f in columns), None)
    if field is None:
        raise DataError(name, line, "compliance_score", "no label field: give compliance_score (0..1) or an "
                                                        "integer label grade on every line, or pass --spec")
    if field not in columns:
        raise DataError(name, line, field, "the chosen label field is not in the file")
    values = pd.to_numeric(frame[field], errors="coerce")
    unit = field == "compliance_score" or (field != "label" and values.between(0, 1).all())
    out = {"label_field": field, "label_min": 0.0, "label_max": 1.0 if unit else float(MAX_GRADE),
           "relevance_threshold": 0.8 if unit else 1.0}
    if threshold is not None:
        out["relevance_threshold"] = float(threshold)
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _vectors(values: np.ndarray) -> list[np.ndarray] | None:
    """Every cell a numeric list (a CSV cell '[...]' parsed) -> the rows as float64 arrays; else None."""
    out = []
    for v in values:
        if isinstance(v, str) and v.lstrip().startswith("["):
            try:
                v = json.loads(v)
            except ValueError:
                return None
        row = _numeric_row(v)
        if row is None:
            return None
        out.append(row)
    return out or None


def _numeric_row(v) -> np.ndarray | None:
    """A non-empty flat sequence of numbers (no booleans) as float64 [d]; else None."""
    if isinstance(v, np.ndarray):
        return v.astype(np.float64) if v.ndim == 1 and v.size and v.dtype.kind in "iuf" else None
    if not isinstance(v, (list, tuple)) or len(v) == 0:
        return None
    # JSON gives int and float: their types checked in C; anything else (numpy scalars...) one by one
    if not set(map(type, v)) <= {int, float} and not all(_is_number(x) for x in v):
        return None
    return np.asarray(v, dtype=np.float64)


def _vector_token(col: str, rows: list[np.ndarray], frame: pd.DataFrame, taken: set) -> dict:
    """A vector field's token: named after the field (a `_features` suffix dropped unless that name is
    taken), `dim` from its first row."""
    short = col.removesuffix("_features")
    tok = {"name": short if short == col or short not in taken else col, "fields": [col], "dim": len(rows[0])}
    if "query_id" in frame and len({len(r) for r in rows}) == 1 and _list_constant(np.stack(rows), frame["query_id"]):
        tok["list_constant"] = True
    return tok


def _list_constant(block: np.ndarray, query_ids: pd.Series) -> bool:
    """[n, d] identical within every list (and at least one list has two candidates)."""
    codes, _ = pd.factorize(query_ids.astype(str), sort=False)
    if (codes < 0).any():  # a missing query id (the loader names it): judge the rows that have one
        block, codes = block[codes >= 0], codes[codes >= 0]
    if len(codes) == 0:
        return False
    first = np.zeros(codes.max() + 1, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]
    return bool(np.bincount(codes).max() > 1 and (block == block[first[codes]]).all())


def _similarity_pair(tokens: list[dict]) -> tuple[str, str] | None:
    """(query, candidate) when there is exactly one list-constant vector token and one other of its dim."""
    vec = [t for t in tokens if "dim" in t]
    const = [t for t in vec if t.get("list_constant")]
    if len(const) != 1:
        return None
    same = [t for t in vec if not t.get("list_constant") and t["dim"] == const[0]["dim"]]
    return (const[0]["name"], same[0]["name"]) if len(same) == 1 else None
