"""The precise line-by-line text readers: Step5 JSONL (JSON objects, one a line) and CSV.

Every line is decoded and checked on its own, so an error names its line and field exactly; the
columnar fast path (data/columnar.py) hands a file here whenever it cannot vouch for it.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cotrr_core.data.errors import DataError
from cotrr_core.data.limits import MAX_COLUMNS, MAX_CSV_CELL, MAX_JSON_DEPTH, MAX_ROWS
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.data.validate import token_columns

__all__ = ["csv_vectors", "jsonl_chunks", "read_csv", "read_jsonl", "text_lines"]


def read_jsonl(path: Path, name: str) -> pd.DataFrame:
    return next(jsonl_chunks(path, name, MAX_ROWS + 1))


_ID_FIELDS = ("query_id", "candidate_id")


def jsonl_chunks(path: Path, name: str, rows_per_chunk: int, max_rows: int = MAX_ROWS):
    """Frames of at most `rows_per_chunk` JSON objects, each with its `_line` column (one frame for
    an empty file); every line is checked as in a whole-file load."""
    rows, lines, keys, total = [], [], set(), 0
    for n, line in text_lines(path, name):
        if not line.strip():
            continue
        huge: list = []
        obj = _json_value(line, name, n, None, huge=huge)
        if not isinstance(obj, dict):
            raise DataError(name, n, None, f"expected a JSON object, got {type(obj).__name__}")
        for key in _ID_FIELDS:  # named here: in a frame, one float id turns every integer id into a float
            if isinstance(obj.get(key), float):
                raise DataError(name, n, key, f"expected a text or integer id, got float {obj[key]!r:.40}")
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


def text_lines(path: Path, name: str):
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


def read_csv(path: Path, name: str, spec: FeatureSpec | None) -> pd.DataFrame:
    """Parse with the csv module, so every record knows its first line (quoted cells may span lines)
    and a record with more or fewer cells than the header is refused instead of shifting columns."""
    csv.field_size_limit(MAX_CSV_CELL)
    texts = (text for _, text in text_lines(path, name))
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
    return frame if spec is None else csv_vectors(frame, spec, name)


def csv_vectors(frame: pd.DataFrame, spec: FeatureSpec, name: str) -> pd.DataFrame:
    """The spec's single-column tokens parsed from their '[...]' cells (in place; returns the frame)."""
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
    if header in _ID_FIELDS:  # "NA" or "null" can be a real id: only an empty cell is none; ids kept as given
        return pd.Series([c if c != "" else None for c in cells], dtype=object)
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
