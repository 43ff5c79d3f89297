"""The fast path for valid Step5 JSONL: pyarrow's JSON reader, whole columns at a time.

It accepts a file only where the precise line-by-line reader (textread.jsonl_chunks) would accept it
and read the same values; anything else (a parse error, a type the precise reader treats differently,
a null, a non-finite number, a line holding two objects, a blank line) raises FastPathMiss, and the
caller runs the precise path, which words the error (file, line, field) exactly as before. The
vectorised checks of validate.py run on the columns this module hands over, so a failed check also
sends the caller to the precise path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cotrr_core.data.limits import MAX_COLUMNS, MAX_ROWS
from cotrr_core.data.parquet import vector_columns
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.data.validate import token_columns

__all__ = ["FastPathMiss", "BLOCK_BYTES", "fast_jsonl", "fast_jsonl_chunks", "fast_jsonl_table", "head_frame"]

BLOCK_BYTES = 1 << 26  # bytes pyarrow parses per streamed batch (64 MiB)
_EXACT_INT = 2**53  # integers beyond this reach float32 through float64 in the precise reader


class FastPathMiss(Exception):
    """The fast path cannot vouch for this file: run the precise path."""


def one_object_per_line(path: Path) -> int:
    """The file's line count when every line starts with '{' (one JSON object per line, no blank lines);
    raises FastPathMiss otherwise. Pyarrow skips blank lines and takes `{..}{..}` as two rows, so only
    such files map row i to line i + 1 and agree with the precise reader's line splitting."""
    lines, opened, last = 0, 0, b"\n"
    with open(path, "rb") as fh:
        head = fh.read(3)
        fh.seek(3 if head == b"\xef\xbb\xbf" else 0)
        while block := fh.read(BLOCK_BYTES):
            lines += block.count(b"\n")
            opened += block.count(b"\n{") + (last == b"\n" and block[:1] == b"{")
            last = block[-1:]
    total = lines + (last != b"\n")
    if total == 0 or opened != total:
        raise FastPathMiss("not one object per line")
    return total


def _arrow_error(pa) -> tuple:
    return (pa.ArrowException, ValueError, UnicodeDecodeError, OverflowError, TypeError, KeyError)


def fast_jsonl_table(path: Path):
    """The whole file as one Arrow table whose columns are typed as the precise reader would type them
    (list columns of numbers allowed anywhere; table_frame narrows them to the spec's vectors)."""
    import pyarrow as pa
    import pyarrow.json as pj

    lines = one_object_per_line(path)
    try:
        table = pj.read_json(path, pj.ReadOptions(block_size=BLOCK_BYTES))
        lists = {n for n, c in zip(table.column_names, table.columns) if pa.types.is_list(c.type)}
        _check_types(table, None, pa, lists)
        _check_values(table, lists, pa)
    except _arrow_error(pa) as exc:
        raise FastPathMiss(str(exc)) from None
    if table.num_rows != lines:
        raise FastPathMiss("rows and lines differ")
    return table


def head_frame(table, rows: int) -> pd.DataFrame:
    """The first `rows` rows of a fast_jsonl_table as the precise reader's first chunk holds them
    (vector cells as arrays): what spec inference reads."""
    frame = table.slice(0, rows).to_pandas()
    frame["_line"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame


def fast_jsonl(path: Path, spec: FeatureSpec, table=None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The whole file (or its already read `table`) as (frame with `_line`, token vectors [N, d]);
    FastPathMiss when not vouched for."""
    return table_frame(fast_jsonl_table(path) if table is None else table, spec, 1)


def fast_jsonl_chunks(path: Path, spec: FeatureSpec):
    """(frame with `_line`, token vectors) per parsed block, for the streamed cache build."""
    import pyarrow as pa
    import pyarrow.json as pj

    lines, start = one_object_per_line(path), 1
    try:
        reader = pj.open_json(path, pj.ReadOptions(block_size=BLOCK_BYTES))
        for batch in reader:
            if batch.num_rows:
                frame, vectors = table_frame(pa.Table.from_batches([batch]), spec, start)
                start += batch.num_rows
                yield frame, vectors
    except _arrow_error(pa) as exc:
        raise FastPathMiss(str(exc)) from None
    if start - 1 != lines:
        raise FastPathMiss("rows and lines differ")


def _check_types(table, spec: FeatureSpec | None, pa, vector_cols: set[str] | None = None) -> set[str]:
    """Columns typed as the precise reader would type them; returns the vector columns (default: the
    spec's single-column tokens)."""
    if table.num_columns > MAX_COLUMNS or table.num_rows > MAX_ROWS:
        raise FastPathMiss("limits")
    if vector_cols is None:
        vector_cols = {token_columns(t)[0] for t in spec.tokens if len(token_columns(t)) == 1}
    for name, col in zip(table.column_names, table.columns):
        t = col.type
        if col.null_count:
            raise FastPathMiss(f"nulls in {name}")
        if name in ("query_id", "candidate_id"):
            ok = pa.types.is_string(t) or t == pa.int64()
        elif pa.types.is_list(t):
            ok = name in vector_cols and (t.value_type in (pa.float64(), pa.int64()))
        else:
            ok = pa.types.is_string(t) or t in (pa.int64(), pa.float64(), pa.bool_())
        if not ok:
            raise FastPathMiss(f"type {t} of {name}")
    return vector_cols & set(table.column_names)


def _check_values(table, lists: set[str], pa) -> None:
    """No non-finite number anywhere (JSON has none; pyarrow reads NaN/Infinity), valid UTF-8, and
    integer vector elements exact in float64 (so both readers round them alike)."""
    import pyarrow.compute as pc

    table.validate(full=True)
    for name, col in zip(table.column_names, table.columns):
        values = pc.list_flatten(col) if name in lists else col
        if values.null_count:
            raise FastPathMiss(f"null inside {name}")
        if values.type == pa.float64() and len(values) and not pc.all(pc.is_finite(values)).as_py():
            raise FastPathMiss(f"non-finite value in {name}")
        if name in lists and values.type == pa.int64() and len(values) and \
                pc.max(pc.abs(values)).as_py() > _EXACT_INT:
            raise FastPathMiss(f"huge integer in {name}")


def table_frame(table, spec: FeatureSpec, first_line: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Checked Arrow table -> (frame of the other columns with `_line`, {vector column: [N, d]})."""
    import pyarrow as pa

    try:
        lists = _check_types(table, spec, pa)
        _check_values(table, lists, pa)
        vectors = vector_columns(table, spec, pa)
        if set(vectors) != lists:
            raise FastPathMiss("vectors of unequal length")
        for col in lists:
            if table.column(col).type.value_type == pa.int64():  # as the precise reader: int -> float64 -> float32
                vectors[col] = np.asarray(pa.compute.list_flatten(table.column(col)).to_numpy(), np.float64) \
                    .reshape(vectors[col].shape).astype(np.float32)
        frame = table.drop_columns(list(lists)).to_pandas(split_blocks=True)
    except _arrow_error(pa) as exc:
        raise FastPathMiss(str(exc)) from None
    frame["_line"] = np.arange(first_line, first_line + len(frame), dtype=np.int64)
    return frame, vectors

