"""Readers for Step5 JSONL / CSV / Parquet and LETOR (SVMlight) files.

Each reader turns a file into a frame with a `_line` column and hands it to
`build_ranking_data`, so every format gets the same validation and report.
"""
from __future__ import annotations

import csv
import json
import math
import re
from array import array
from pathlib import Path

import numpy as np
import pandas as pd

from cotrr_core.data.columnar import FastPathMiss, fast_jsonl, fast_jsonl_table, head_frame
from cotrr_core.data.dataset import RankingData, SmallListPolicy, build_ranking_data, token_columns
from cotrr_core.data.errors import DataError
from cotrr_core.data.limits import (
    F32_MAX,
    MAX_COLUMNS,
    MAX_CSV_CELL,
    MAX_FEATURE_INDEX,
    MAX_GRADE,
    MAX_JSON_DEPTH,
    MAX_ROWS,
    MAX_SPARSE_EXPANSION,
    MAX_VALUES,
    SPARSE_FLOOR,
)
from cotrr_core.data.parquet import read_parquet
from cotrr_core.data.spec import FeatureSpec, default_letor_spec

__all__ = ["load_dataset", "infer_format", "FORMATS"]

FORMATS = ("jsonl", "csv", "parquet", "letor")
_EXT = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet",
        ".pq": "parquet", ".txt": "letor", ".letor": "letor", ".svm": "letor", ".svmlight": "letor"}


def infer_format(path: str | Path) -> str:
    """Format from the file extension (.jsonl/.csv/.parquet/.txt)."""
    fmt = _EXT.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataError(str(path), None, None, f"cannot tell the format from the extension; pass one of {FORMATS}")
    return fmt


def load_dataset(path: str | Path, fmt: str | None = None, spec: FeatureSpec | None = None, *,
                 min_candidates: int = 2, on_small_list: SmallListPolicy = "skip", require_labels: bool = True,
                 display_name: str | None = None, max_features: int = MAX_FEATURE_INDEX) -> RankingData:
    """Load and validate a ranking file.

    Args:
        path: a Step5 JSONL / CSV / Parquet file or a LETOR (SVMlight) text file.
        fmt: "jsonl", "csv", "parquet" or "letor" (default: from the extension).
        spec: the feature spec; without one, Step5 files use the spec saved beside them, else one inferred
            from their first rows (data/infer.py: the built-in 'step5' spec when they have all its fields),
            and LETOR files a default chunked spec sized to the file.
        min_candidates, on_small_list: lists shorter than `min_candidates` are skipped (counted in
            the report) or, with "reject", refused.
        require_labels: False for scoring-only files (rerank).
        max_features: the highest LETOR feature index accepted without a spec (bounds the dense table).
    Returns:
        RankingData: per query ids and text, per candidate (N rows, original order) ids, labels and
        token features {name: [N, d] float32}, plus the load report.
    Raises:
        DataError naming the file, line, field and problem.
    """
    path = Path(path)
    name = display_name or str(path)
    fmt = fmt or infer_format(path)
    if fmt not in FORMATS:
        raise DataError(name, None, None, f"unknown format {fmt!r}; choose from {FORMATS}")
    if not path.exists():
        raise DataError(name, None, None, "file not found")
    kwargs = dict(min_candidates=min_candidates, on_small_list=on_small_list, require_labels=require_labels)
    if fmt == "letor":
        frame, num_features, max_label = _read_letor(path, name, spec, max_features)
        spec = spec or default_letor_spec(num_features, max_label=max(max_label, 1.0))
        return build_ranking_data(frame, spec, name, **kwargs)
    if fmt == "jsonl":
        return _load_jsonl(path, name, spec, kwargs)
    if spec is None:  # the file's sidecar spec, else one inferred from its first rows (data/infer.py)
        from cotrr_core.data.infer import resolve_spec

        spec = resolve_spec(path, fmt, name)
    if fmt == "csv":
        return build_ranking_data(_read_csv(path, name, spec), spec, name, **kwargs)
    frame, vectors = read_parquet(path, name, spec)
    return build_ranking_data(frame, spec, name, line_label="row", vectors=vectors, **kwargs)


def _load_jsonl(path: Path, name: str, spec: FeatureSpec | None, kwargs: dict) -> RankingData:
    """The columnar fast path (data/columnar.py); when it cannot vouch for the file or a check fails, the
    precise line-by-line path, which names the first bad line and field. Without a spec, the one
    resolve_spec gives (data/infer.py), from the same first rows on both paths."""
    from cotrr_core.data.infer import INFER_ROWS, resolve_spec

    try:
        table = fast_jsonl_table(path)
        spec = spec or resolve_spec(path, "jsonl", name, head=head_frame(table, INFER_ROWS))
        frame, vectors = fast_jsonl(path, spec, table)
        del table
        return build_ranking_data(frame, spec, name, vectors=vectors, **kwargs)
    except (FastPathMiss, DataError):
        pass
    spec = spec or resolve_spec(path, "jsonl", name)
    return build_ranking_data(_read_jsonl(path, name), spec, name, **kwargs)


def _read_jsonl(path: Path, name: str) -> pd.DataFrame:
    return next(jsonl_chunks(path, name, MAX_ROWS + 1))


def jsonl_chunks(path: Path, name: str, rows_per_chunk: int, max_rows: int = MAX_ROWS):
    """Frames of at most `rows_per_chunk` JSON objects, each with its `_line` column (one frame for
    an empty file); every line is checked as in a whole-file load."""
    rows, lines, keys, total = [], [], set(), 0
    for n, line in _text_lines(path, name):
        if not line.strip():
            continue
        huge: list = []
        obj = _json_value(line, name, n, None, huge=huge)
        if not isinstance(obj, dict):
            raise DataError(name, n, None, f"expected a JSON object, got {type(obj).__name__}")
        keys.update(obj)
        if len(keys) > MAX_COLUMNS or total >= max_rows:
            raise DataError(name, n, None, f"more than {MAX_COLUMNS} distinct fields or {max_rows} rows")
        if huge or "NaN" in line or "Infinity" in line:  # JSON has no NaN/Infinity
            for key, value in obj.items():
                bad = _find_constant(value)
                if bad is not None:
                    raise DataError(name, n, key, f"value {bad.token} {bad.problem}")
        rows.append(obj)
        lines.append(n)
        total += 1
        if len(rows) == rows_per_chunk:
            yield _records_frame(rows, lines)
            rows, lines = [], []
    if rows or not total:
        yield _records_frame(rows, lines)


def _records_frame(rows: list, lines: list) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    frame["_line"] = np.asarray(lines, dtype=np.int64)
    return frame


def _json_value(text: str, name: str, line: int, field: str | None, what: str = "malformed JSON",
                huge: list | None = None):
    """json.loads with the errors a user can cause turned into DataError: malformed text, nesting deeper
    than MAX_JSON_DEPTH (Python's parser would raise RecursionError), integers beyond Python's digit
    limit, duplicate keys (the first value would be dropped silently). `huge` collects the placeholders
    of integers beyond float64 (so a caller knows whether to look for them)."""
    parse_int = _parse_int if huge is None else lambda t: _noted(_parse_int(t), huge)
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _nesting(text) > MAX_JSON_DEPTH:
        raise DataError(name, line, field, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_Constant, object_pairs_hook=_unique_keys, parse_int=parse_int)
    except json.JSONDecodeError as exc:
        raise DataError(name, line, field, f"{what}: {exc.msg} (column {exc.colno})") from None
    except _DuplicateKey as exc:
        raise DataError(name, line, exc.key, "key given twice in one object") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise DataError(name, line, field, f"{what}: {exc}") from None


def _parse_int(text: str) -> int | _Constant:
    """Integers beyond float64 (> 309 digits) become a placeholder, so the error names their field
    (Python itself refuses more than 4300 digits, with a ValueError that cannot say which field)."""
    if len(text) <= _MAX_INT_DIGITS:
        return int(text)
    return _Constant(f"{text[:12]}... ({len(text)} digits)", "is out of range")


def _noted(value, found: list):
    if isinstance(value, _Constant):
        found.append(value)
    return value


_MAX_INT_DIGITS = 320


def _nesting(text: str) -> int:
    """Deepest bracket nesting outside JSON strings (vectorised: a hostile line can be megabytes)."""
    outside = _JSON_STRING.sub('""', text).encode()
    b = np.frombuffer(outside, dtype=np.uint8)
    step = np.isin(b, (ord("["), ord("{"))).astype(np.int64) - np.isin(b, (ord("]"), ord("}")))
    return int(np.cumsum(step).max(initial=0))


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _text_lines(path: Path, name: str):
    """(line number, text) pairs; bytes that are not UTF-8 raise DataError naming the line."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(name, n, None, f"not UTF-8 text (byte {exc.start + 1} of the line)") from None


class _Constant:
    """Placeholder for a NaN / Infinity literal (or a huge integer), so the error can name its field."""

    def __init__(self, token: str, problem: str = "is not a finite number"):
        self.token, self.problem = token, problem


def _find_constant(value) -> _Constant | None:
    """The first NaN/Infinity placeholder inside `value` (iterative: nesting is bounded, recursion need not be)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, _Constant):
            return v
        if isinstance(v, list):
            stack.extend(reversed(v))
        elif isinstance(v, dict):
            stack.extend(reversed(list(v.values())))
    return None


# ---------- CSV ----------

# a CSV number: ASCII digits only (Python's float() also takes '1_0', '١' and ' inf ')
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)
_INTEGER = re.compile(r"\s*[+-]?\d{1,18}\s*", re.ASCII)
_NULLS = frozenset({"", "NA", "N/A", "n/a", "null", "NULL", "None", "nan", "NaN", "-nan", "#N/A", "<NA>"})


def _read_csv(path: Path, name: str, spec: FeatureSpec) -> pd.DataFrame:
    """Parse with the csv module, so every record knows its first line (quoted cells may span lines)
    and a record with more or fewer cells than the header is refused instead of shifting columns."""
    csv.field_size_limit(MAX_CSV_CELL)
    texts = (text for _, text in _text_lines(path, name))
    reader = csv.reader(texts, strict=True)
    header, records, starts, prev = None, [], [], 0
    try:
        for rec in reader:
            start, prev = prev + 1, reader.line_num
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue  # a blank line
            if header is None:
                header = _csv_header(rec, name, start)
            elif len(rec) != len(header):
                raise DataError(name, start, None, f"{len(rec)} cells, but the header (line 1) has {len(header)}")
            else:
                records.append(rec)
                starts.append(start)
                if len(records) > MAX_ROWS:
                    raise DataError(name, start, None, f"more than {MAX_ROWS} rows")
    except csv.Error as exc:
        raise DataError(name, prev + 1, None, f"malformed CSV: {exc}") from None
    if header is None:
        raise DataError(name, None, None, "empty file")
    columns = list(zip(*records)) if records else [()] * len(header)
    frame = pd.DataFrame({h: _csv_column(h, col) for h, col in zip(header, columns)})
    frame["_line"] = np.asarray(starts, dtype=np.int64)
    for tok in spec.tokens:
        cols = token_columns(tok)
        if len(cols) == 1 and cols[0] in frame:
            frame[cols[0]] = _parse_vector_cells(frame, cols[0], name)
    return frame


def _csv_header(rec: list[str], name: str, line: int) -> list[str]:
    names = [h.strip() for h in rec]
    if len(names) > MAX_COLUMNS:
        raise DataError(name, line, None, f"{len(names)} columns; at most {MAX_COLUMNS} are read")
    seen: set[str] = set()
    dup = next((h for h in names if h in seen or seen.add(h)), None)
    if dup is not None or "" in names:
        raise DataError(name, line, dup or None, "column given twice in the header" if dup else "empty column name")
    return names


def _csv_column(header: str, cells: tuple) -> pd.Series:
    """Text cells typed as pandas would (int, float, else text), but strictly: only ASCII decimal numbers
    count as numbers; ids stay text; in a mixed column the numbers are converted and the rest is kept
    as text for the validator to name."""
    if header in ("query_id", "candidate_id"):  # "NA" or "null" can be a real id: only an empty cell is none
        return pd.Series([c if c.strip() else None for c in cells], dtype=object)
    values = [None if c.strip() in _NULLS else c for c in cells]
    present = [v for v in values if v is not None]
    if present and len(present) == len(values) and all(_INTEGER.fullmatch(v) for v in present):
        return pd.Series([int(v) for v in values], dtype=np.int64)
    numeric = [v is not None and _NUMBER.fullmatch(v) is not None for v in values]
    if present and all(n or v is None for n, v in zip(numeric, values)):
        return pd.Series([float(v) if v is not None else np.nan for v in values], dtype=np.float64)
    return pd.Series([float(v) if n else v for v, n in zip(values, numeric)], dtype=object)


def _parse_vector_cells(frame: pd.DataFrame, col: str, name: str) -> list:
    """CSV stores vectors as JSON lists in a cell: '[0.1, 0.2, ...]'."""
    out = []
    for value, line in zip(frame[col], frame["_line"]):
        if isinstance(value, str) and value.lstrip().startswith("["):
            value = _json_value(value, name, int(line), col, "malformed vector")
            bad = _find_constant(value)
            if bad is not None:
                raise DataError(name, int(line), col, f"malformed vector: value {bad.token} {bad.problem}")
        out.append(value)
    return out


# ---------- LETOR ----------

_INDEX = re.compile(r"[0-9]{1,9}", re.ASCII)
_LETOR_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def _read_letor(path: Path, name: str, spec: FeatureSpec | None,
                max_features: int) -> tuple[pd.DataFrame, int, float]:
    """Parse `label qid:N i:v ... #comment` lines (dense or sparse; the comment is stripped).

    Work and memory are bounded: an index above the limit is refused on its line, and the dense
    table is only built when it is not far larger than the values the file actually holds.
    """
    limit = spec.num_features if spec and spec.num_features else max_features
    labels, qids, cids, lines = [], [], [], []
    rows, idx, vals, val_lines = array("q"), array("q"), array("d"), array("q")
    max_index = 0
    for n, raw in _text_lines(path, name):
        body, _, comment = raw.partition("#")
        parts = body.split()
        if not parts:
            continue
        labels.append(_letor_number(parts[0], name, n, "label"))
        if len(parts) < 2 or not parts[1].startswith("qid:") or not parts[1][4:]:
            raise DataError(name, n, "qid", "expected 'qid:<id>' after the label")
        seen: set[int] = set()
        for item in parts[2:]:
            index, sep, val = item.partition(":")
            if not sep or not _INDEX.fullmatch(index) or int(index) < 1:
                raise DataError(name, n, item, "expected '<index>:<value>' with index >= 1")
            i = int(index)
            if i > limit:
                what = f"the spec's {limit} features" if spec and spec.num_features else \
                    f"the limit of {limit} features (raise it with --max-features / max_features=, or pass a spec)"
                raise DataError(name, n, f"feature {i}", f"index exceeds {what}")
            if i in seen:
                raise DataError(name, n, f"feature {i}", "feature index given twice")
            seen.add(i)
            rows.append(len(lines))
            idx.append(i - 1)
            vals.append(_letor_number(val, name, n, f"feature {i}"))
            val_lines.append(n)
            max_index = max(max_index, i)
        qids.append(parts[1][4:])
        m = re.search(r"docid\s*=\s*(\S+)", comment)
        cids.append(m.group(1) if m else f"line{n}")
        lines.append(n)
        if len(lines) > MAX_ROWS:
            raise DataError(name, n, None, f"more than {MAX_ROWS} rows")
    if not lines:
        raise DataError(name, None, None, "no candidates found (empty input)")
    if max_index == 0:
        raise DataError(name, lines[0], "features", "no '<index>:<value>' feature on any line")
    num_features = spec.num_features if spec and spec.num_features else max_index
    dense_values = len(lines) * num_features
    if dense_values > MAX_VALUES or (dense_values > SPARSE_FLOOR and dense_values > MAX_SPARSE_EXPANSION * len(vals)):
        raise DataError(name, None, None, f"{len(lines)} rows x {num_features} features would expand "
                                          f"{len(vals)} given values to {dense_values} (limits: {MAX_VALUES} values, "
                                          f"{MAX_SPARSE_EXPANSION}x the values given)")
    dense = np.zeros((len(lines), num_features), dtype=np.float32)
    value_arr = np.frombuffer(vals, dtype=np.float64) if len(vals) else np.zeros(0)
    _letor_range(value_arr, np.frombuffer(val_lines, dtype=np.int64) if len(vals) else value_arr, idx, name)
    dense[np.frombuffer(rows, dtype=np.int64), np.frombuffer(idx, dtype=np.int64)] = value_arr
    frame = pd.DataFrame(dense, columns=[f"f{i}" for i in range(1, num_features + 1)], copy=False)
    frame.insert(0, "label", labels)
    frame.insert(0, "candidate_id", cids)
    frame.insert(0, "query_id", qids)
    frame["_line"] = lines
    label_arr = np.asarray(labels)
    if spec is None:
        bad = np.flatnonzero((label_arr != np.round(label_arr)) | (np.abs(label_arr) > MAX_GRADE))
        if len(bad):
            r = int(bad[0])
            raise DataError(name, lines[r], "label", f"LETOR grades are integers in 0..{MAX_GRADE}, "
                                                     f"got {labels[r]:g} (pass a spec for other labels)")
    return frame, num_features, float(label_arr.max())


def _letor_range(values: np.ndarray, lines: np.ndarray, idx, name: str) -> None:
    bad = np.flatnonzero(np.abs(values) > F32_MAX)
    if len(bad):
        k = int(bad[0])
        raise DataError(name, int(lines[k]), f"feature {idx[k] + 1}",
                        f"value {values[k]:g} is outside the float32 range (|x| <= {F32_MAX:.4g})")


def _letor_number(text: str, name: str, line: int, field: str) -> float:
    """A plain ASCII decimal number: Python's float() would also take '1_0' (as 10), '١' or 'inf'."""
    if not _LETOR_NUMBER.fullmatch(text):
        if text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise DataError(name, line, field, f"value {text} is NaN or infinite")
        raise DataError(name, line, field, f"not a number: {text[:40]!r}")
    value = float(text)
    if not math.isfinite(value):
        raise DataError(name, line, field, f"value {text[:40]} is NaN or infinite")
    return value
