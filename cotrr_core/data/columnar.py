"""The fast paths for valid Step5 JSONL (pyarrow's JSON reader, whole columns at a time) and for the
streamed Parquet build (row groups decoded ahead, half-precision vectors kept as they are).

It accepts a file only where the precise line-by-line reader (textread.jsonl_chunks) would accept it
and read the same values; anything else (a parse error, a type the precise reader treats differently,
a null, a non-finite number, a line holding two objects, a blank line) raises FastPathMiss, and the
caller runs the precise path, which words the error (file, line, field) exactly as before. The
vectorised checks of validate.py run on the columns this module hands over, so a failed check also
sends the caller to the precise path.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from cotrr_core.data.errors import DataError
from cotrr_core.data.limits import MAX_COLUMNS, MAX_ROWS
from cotrr_core.data.parquet import _frame, vector_columns
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.data.validate import token_columns

__all__ = ["FastPathMiss", "BLOCK_BYTES", "GROUP_ROWS", "fast_jsonl", "fast_jsonl_chunks", "fast_jsonl_table",
           "fast_parquet_chunks", "head_frame", "split_half_tokens"]

BLOCK_BYTES = 1 << 26  # bytes pyarrow parses per streamed batch (64 MiB)
GROUP_ROWS = 65536  # a Parquet row group up to this size is decoded whole; a larger one in batches of this size
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

    # the line scan runs beside the parse: until it vouches for the file at the end, a check failing on the
    # way is rerun by the precise reader anyway (stream._build_checked), so its line numbers never reach a user
    scan = ThreadPoolExecutor(max_workers=1)
    lines, start = scan.submit(one_object_per_line, path), 1
    try:
        reader = pj.open_json(path, pj.ReadOptions(block_size=BLOCK_BYTES))
        for batch in _prefetched(reader):  # the next block parsed while this one is converted
            if batch.num_rows:
                frame, vectors = table_frame(pa.Table.from_batches([batch]), spec, start)
                start += batch.num_rows
                yield frame, vectors
    except _arrow_error(pa) as exc:
        raise FastPathMiss(str(exc)) from None
    finally:
        scan.shutdown(wait=True)
    if start - 1 != lines.result():
        raise FastPathMiss("rows and lines differ")


def _check_types(table, spec: FeatureSpec | None, pa, vector_cols: set[str] | None = None) -> set[str]:
    """Columns typed as the precise reader would type them; returns the vector columns: those of
    `vector_cols` (default: the spec's single-column tokens) that hold lists."""
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
    # a one-field token over a number column (a first-stage score) is a scalar, not a vector
    return {name for name in vector_cols & set(table.column_names) if pa.types.is_list(table.column(name).type)}


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



def fast_parquet_chunks(path: Path, name: str, spec: FeatureSpec):
    """(frame with `_line`, {vector column: [n, d]}) per row group (or GROUP_ROWS batch of a larger one).

    Half-float vector columns are float16 [n, d] views (no copy; split_half_tokens checks them), other
    vector columns and the frame are parquet._frame's. Raises DataError for what the file cannot be read
    as (the precise reader's wording), FastPathMiss for an irregular half-float column."""
    import pyarrow as pa

    start = 1
    for table in _prefetched(_parquet_tables(path, name)):
        try:
            half = {c: _half_vectors(table.column(c), pa) for c in _half_columns(table, spec, pa)}
        except (pa.ArrowException, ValueError) as exc:
            raise FastPathMiss(str(exc)) from None
        frame, vectors = _frame(table.drop_columns(list(half)), spec, name, pa, start)
        start += len(frame)
        yield frame, {**vectors, **half}


def _parquet_tables(path: Path, name: str):
    """The file's validated Arrow tables, a row group (or GROUP_ROWS rows of one) each, decoded with
    Arrow's threads; footer limits as parquet_chunks checks them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        meta = pf.metadata
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(name, None, None, f"cannot read Parquet: {exc}") from None
    if meta.num_rows > MAX_ROWS or meta.num_columns > MAX_COLUMNS:
        raise DataError(name, None, None, f"{meta.num_rows} rows x {meta.num_columns} columns; at most "
                                          f"{MAX_ROWS} rows and {MAX_COLUMNS} columns are read")
    for i, rows in enumerate(groups):
        try:
            parts = [pf.read_row_group(i)] if rows <= GROUP_ROWS else \
                pf.iter_batches(batch_size=GROUP_ROWS, row_groups=[i])
            for part in parts:
                part.validate(full=True)  # e.g. text that is not UTF-8
                yield part if isinstance(part, pa.Table) else pa.Table.from_batches([part])
        except MemoryError:
            raise
        except Exception as exc:
            raise DataError(name, None, None, f"cannot read Parquet: {exc}") from None


def _prefetched(items):
    """`items` with the next one computed on a thread while the caller works on the current one."""
    pool = ThreadPoolExecutor(max_workers=1)
    it = iter(items)
    try:
        ahead = pool.submit(next, it, None)
        while (item := ahead.result()) is not None:
            ahead = pool.submit(next, it, None)
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _half_columns(table, spec: FeatureSpec, pa) -> list[str]:
    """The single-column tokens' columns that are lists of half floats."""
    out = []
    for tok in spec.tokens:
        cols = token_columns(tok)
        if len(cols) == 1 and cols[0] in table.column_names:
            t = table.schema.field(cols[0]).type
            if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and \
                    pa.types.is_float16(t.value_type):
                out.append(cols[0])
    return out


def _half_vectors(column, pa) -> np.ndarray:
    """A list<halffloat> column as a float16 [n, d] view of Arrow's values buffer; FastPathMiss unless every
    row is present, of one length and every element present."""
    col = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if len(col) == 0 or col.null_count:
        raise FastPathMiss("empty or null vectors")
    lengths = np.asarray(col.value_lengths())
    if (lengths != lengths[0]).any():
        raise FastPathMiss("vectors of unequal length")
    values = col.flatten()
    if values.null_count or len(values) != len(col) * int(lengths[0]):
        raise FastPathMiss("null inside a vector")
    data = np.frombuffer(values.buffers()[1], dtype=np.float16, count=len(values),
                         offset=values.offset * 2) if len(values) else np.empty(0, np.float16)
    return data.reshape(len(col), int(lengths[0]))


def split_half_tokens(spec: FeatureSpec, vectors: dict[str, np.ndarray],
                      dims: dict[str, int]) -> tuple[FeatureSpec, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the spec without its float16-decoded tokens, the other vectors, {token: checked float16 [n, d]}).

    A float16 token passes what validate_columns checks of a decoded vector (the spec's dim, else the
    file's so far `dims`; not empty; finite: an all-ones exponent is inf or NaN); FastPathMiss otherwise."""
    half, rest = {}, []
    for tok in spec.tokens:
        cols = token_columns(tok)
        arr = vectors.get(cols[0]) if len(cols) == 1 else None
        if arr is None or arr.dtype != np.float16:
            rest.append(tok)
            continue
        dim = tok.dim if tok.dim is not None else dims.get(tok.name)
        if arr.shape[1] == 0 or (dim is not None and arr.shape[1] != dim):
            raise FastPathMiss(f"{cols[0]}: vector length {arr.shape[1]}")
        if not _finite_half(arr):
            raise FastPathMiss(f"{cols[0]}: non-finite value")
        half[tok.name] = arr
    others = {c: v for c, v in vectors.items() if v.dtype != np.float16}
    return dataclasses.replace(spec, tokens=tuple(rest)), others, half


def _finite_half(arr: np.ndarray, block: int = 1 << 18) -> bool:
    """No inf or NaN in float16 `arr` (an all-ones exponent), read in cache-sized blocks through one
    scratch buffer (numpy's float16 isfinite is ~15x slower)."""
    bits = arr.reshape(-1).view(np.uint16)
    scratch = np.empty(min(block, len(bits)), dtype=np.uint16)
    for a in range(0, len(bits), block):
        part = scratch[:len(bits[a:a + block])]
        np.bitwise_and(bits[a:a + block], 0x7C00, out=part)
        if part.max() == 0x7C00:
            return False
    return True
