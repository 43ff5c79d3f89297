"""Readers for Step5 JSONL / CSV / Parquet and LETOR (SVMlight) files.

Each reader turns a file into a frame with a `_line` column and hands it to
`build_ranking_data`, so every format gets the same validation and report.
"""
from __future__ import annotations

import math
import re
from array import array
from pathlib import Path

import numpy as np
import pandas as pd

from cotrr_core.data.columnar import FastPathMiss, fast_jsonl, fast_jsonl_table, head_frame
from cotrr_core.data.dataset import RankingData, SmallListPolicy, build_ranking_data
from cotrr_core.data.errors import DataError
from cotrr_core.data.limits import (
    F32_MAX,
    MAX_FEATURE_INDEX,
    MAX_GRADE,
    MAX_ROWS,
    MAX_SPARSE_EXPANSION,
    MAX_VALUES,
    SPARSE_FLOOR,
)
from cotrr_core.data.parquet import read_parquet
from cotrr_core.data.spec import FeatureSpec, default_letor_spec
from cotrr_core.data.textread import csv_vectors, jsonl_chunks, read_csv, read_jsonl, text_lines  # noqa: F401 (jsonl_chunks: public here too)

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
    from cotrr_core.data.infer import INFER_ROWS, resolve_spec

    if fmt == "csv":  # every record read (and a malformed one named) before a missing spec is inferred
        frame = read_csv(path, name, None)
        spec = spec or resolve_spec(path, fmt, name, head=frame.iloc[:INFER_ROWS].drop(columns="_line"))
        return build_ranking_data(csv_vectors(frame, spec, name), spec, name, **kwargs)
    spec = spec or resolve_spec(path, fmt, name)  # the file's sidecar spec, else one inferred (data/infer.py)
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
    frame = read_jsonl(path, name)  # a line that is not a JSON object is named before any spec is inferred
    spec = spec or resolve_spec(path, "jsonl", name, head=frame.iloc[:INFER_ROWS])
    return build_ranking_data(frame, spec, name, **kwargs)


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
    for n, raw in text_lines(path, name):
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
    _check_letor_qids(qids, lines, name)
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


def _check_letor_qids(qids: list[str], lines: list[int], name: str) -> None:
    """qid:1 and qid:01 would be two lists that read as one query: refused (qids are kept as given)."""
    seen: dict[str, str] = {}
    for q, n in zip(qids, lines):
        key = (q.lstrip("0") or "0") if q.isdigit() else q
        if seen.setdefault(key, q) != q:
            raise DataError(name, n, "qid", f"qid:{q} and qid:{seen[key]} are the same number written two ways; "
                                            "write each query's id one way")


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
