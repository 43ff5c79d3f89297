"""Readers for Step5 JSONL / CSV / Parquet and LETOR (SVMlight) files.

Each reader turns a file into a frame with a `_line` column and hands it to
`build_ranking_data`, so every format gets the same validation and report.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cotrr_core.data.dataset import RankingData, SmallListPolicy, build_ranking_data, token_columns
from cotrr_core.data.errors import DataError
from cotrr_core.data.spec import FeatureSpec, builtin_spec, default_letor_spec

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
                 display_name: str | None = None) -> RankingData:
    """Load and validate a ranking file.

    Args:
        path: a Step5 JSONL / CSV / Parquet file or a LETOR (SVMlight) text file.
        fmt: "jsonl", "csv", "parquet" or "letor" (default: from the extension).
        spec: the feature spec; without one, Step5 files use the built-in 'step5' spec and LETOR
            files a default chunked spec sized to the file.
        min_candidates, on_small_list: lists shorter than `min_candidates` are skipped (counted in
            the report) or, with "reject", refused.
        require_labels: False for scoring-only files (rerank).
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
        frame, num_features, max_label = _read_letor(path, name, spec)
        spec = spec or default_letor_spec(num_features, max_label=max(max_label, 1.0))
        return build_ranking_data(frame, spec, name, **kwargs)
    spec = spec or builtin_spec("step5")
    if fmt == "jsonl":
        return build_ranking_data(_read_jsonl(path, name), spec, name, **kwargs)
    if fmt == "csv":
        return build_ranking_data(_read_csv(path, name, spec), spec, name, **kwargs)
    return build_ranking_data(_read_parquet(path, name), spec, name, line_label="row", **kwargs)


def _read_jsonl(path: Path, name: str) -> pd.DataFrame:
    rows, lines = [], []
    for n, line in _text_lines(path, name):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_Constant)
        except json.JSONDecodeError as exc:
            raise DataError(name, n, None, f"malformed JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(name, n, None, f"expected a JSON object, got {type(obj).__name__}")
        if "NaN" in line or "Infinity" in line:  # JSON has no NaN/Infinity; Python's json accepts them
            for key, value in obj.items():
                bad = _find_constant(value)
                if bad is not None:
                    raise DataError(name, n, key, f"value {bad.token} is not a finite number")
        rows.append(obj)
        lines.append(n)
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    frame["_line"] = np.asarray(lines, dtype=np.int64)
    return frame


def _text_lines(path: Path, name: str):
    """(line number, text) pairs; bytes that are not UTF-8 raise DataError naming the line."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(name, n, None, f"not UTF-8 text (byte {exc.start + 1} of the line)") from None


class _Constant:
    """Placeholder for a NaN / Infinity literal, so the error can name its field."""

    def __init__(self, token: str):
        self.token = token


def _find_constant(value) -> "_Constant | None":
    if isinstance(value, _Constant):
        return value
    items = value if isinstance(value, list) else value.values() if isinstance(value, dict) else ()
    return next((c for c in map(_find_constant, items) if c is not None), None)


def _reject_constant(token: str) -> float:
    # JSON has no NaN/Infinity; Python's json accepts them unless told otherwise.
    raise ValueError(f"value {token} is not a finite number")


def _read_csv(path: Path, name: str, spec: FeatureSpec) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"query_id": str, "candidate_id": str})
    except pd.errors.ParserError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise DataError(name, int(m.group(1)) if m else None, None, f"malformed CSV: {exc}") from None
    except pd.errors.EmptyDataError:
        raise DataError(name, None, None, "empty file") from None
    except UnicodeDecodeError as exc:
        raise DataError(name, None, None, f"not UTF-8 text: {exc}") from None
    frame["_line"] = _csv_line_numbers(path, len(frame))
    for tok in spec.tokens:
        cols = token_columns(tok)
        # pandas >= 3 reads text columns as the `str` dtype, older versions as object
        if len(cols) == 1 and cols[0] in frame and not pd.api.types.is_numeric_dtype(frame[cols[0]]):
            frame[cols[0]] = _parse_vector_cells(frame, cols[0], name)
    return frame


def _csv_line_numbers(path: Path, rows: int) -> np.ndarray:
    """File line of each data row: pandas skips blank lines, so count the non-blank ones (line 1 is the header)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        numbers = [n for n, line in enumerate(fh, start=1) if line.strip()]
    if len(numbers) == rows + 1:
        return np.asarray(numbers[1:], dtype=np.int64)
    return np.arange(2, rows + 2)  # e.g. quoted cells spanning lines: best effort


def _parse_vector_cells(frame: pd.DataFrame, col: str, name: str) -> list:
    """CSV stores vectors as JSON lists in a cell: '[0.1, 0.2, ...]'."""
    out = []
    for value, line in zip(frame[col], frame["_line"]):
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                value = json.loads(value, parse_constant=_reject_constant)
            except ValueError as exc:
                raise DataError(name, int(line), col, f"malformed vector: {exc}") from None
        out.append(value)
    return out


def _read_parquet(path: Path, name: str) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(name, None, None, f"cannot read Parquet: {exc}") from None
    frame["_line"] = np.arange(1, len(frame) + 1)
    return frame


def _read_letor(path: Path, name: str, spec: FeatureSpec | None) -> tuple[pd.DataFrame, int, float]:
    """Parse `label qid:N i:v ... #comment` lines (dense or sparse; the comment is stripped)."""
    labels, qids, cids, lines, feats = [], [], [], [], []
    max_index = 0
    for n, raw in _text_lines(path, name):
        body, _, comment = raw.partition("#")
        parts = body.split()
        if not parts:
            continue
        labels.append(_letor_number(parts[0], name, n, "label"))
        if len(parts) < 2 or not parts[1].startswith("qid:") or not parts[1][4:]:
            raise DataError(name, n, "qid", "expected 'qid:<id>' after the label")
        qids.append(parts[1][4:])
        row: dict[int, float] = {}
        for item in parts[2:]:
            idx, sep, val = item.partition(":")
            if not sep or not idx.isdigit() or int(idx) < 1:
                raise DataError(name, n, item, "expected '<index>:<value>' with index >= 1")
            i = int(idx)
            if i in row:
                raise DataError(name, n, f"feature {i}", "feature index given twice")
            row[i] = _letor_number(val, name, n, f"feature {i}")
        max_index = max(max_index, max(row, default=0))
        feats.append(row)
        m = re.search(r"docid\s*=\s*(\S+)", comment)
        cids.append(m.group(1) if m else f"line{n}")
        lines.append(n)
    if not feats:
        raise DataError(name, None, None, "no candidates found (empty input)")
    num_features = spec.num_features if spec and spec.num_features else max_index
    if max_index > num_features:
        n, top = next((ln, max(r)) for ln, r in zip(lines, feats) if max(r, default=0) > num_features)
        raise DataError(name, n, f"feature {top}", f"index exceeds the spec's {num_features} features")
    dense = np.zeros((len(feats), num_features), dtype=np.float64)
    for r, row in enumerate(feats):
        for i, v in row.items():
            dense[r, i - 1] = v
    frame = pd.DataFrame(dense, columns=[f"f{i}" for i in range(1, num_features + 1)])
    frame.insert(0, "label", labels)
    frame.insert(0, "candidate_id", cids)
    frame.insert(0, "query_id", qids)
    frame["_line"] = lines
    label_arr = np.asarray(labels)
    if spec is None and (label_arr != np.round(label_arr)).any():
        r = int(np.flatnonzero(label_arr != np.round(label_arr))[0])
        raise DataError(name, lines[r], "label", f"LETOR grades are integers, got {labels[r]:g}")
    return frame, num_features, float(label_arr.max())


def _letor_number(text: str, name: str, line: int, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(name, line, field, f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise DataError(name, line, field, f"value {text} is NaN or infinite")
    return value
