"""Parquet reading for the Step5 loaders: a size-checked Arrow table, equal-length vector columns as
[N, d] arrays, the rest as a pandas frame (DataError naming the file otherwise)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cotrr_core.data.errors import DataError
from cotrr_core.data.limits import MAX_COLUMNS, MAX_ROWS, MAX_VALUES
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.data.validate import token_columns

__all__ = ["read_parquet", "parquet_chunks", "vector_columns", "BATCH_ROWS"]


def read_parquet(path: Path, name: str, spec: FeatureSpec) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Rows and columns are checked from the footer, decoded values batch by batch (so a tiny file
    of a million repeated rows stops at the limit, not at the end); vector columns of one length are
    decoded straight to [N, d] arrays (no per-row objects)."""
    import pyarrow as pa

    return _frame(_read_parquet_table(path, name, pa), spec, name, pa, 1)


def _frame(table, spec: FeatureSpec, name: str, pa, first_line: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(the non-vector columns as a frame with `_line` from first_line, vector columns [N, d])."""
    for field in table.schema:  # a map comes back as (key, value) tuples that no later step can write again
        if _has_map(field.type, pa):
            raise DataError(name, None, field.name, f"a {field.type} column is not read (maps are not supported); "
                                                    "drop it or store it as text")
    vectors = vector_columns(table, spec, pa)
    try:  # self_destruct frees each Arrow column once converted: the peak is one copy, not two
        frame = table.drop_columns(list(vectors)).to_pandas(split_blocks=True, self_destruct=True)
    except MemoryError:
        raise
    except Exception as exc:  # e.g. KeyError from damaged pandas metadata in the footer
        raise DataError(name, None, None, f"cannot convert Parquet columns: {type(exc).__name__}: {exc}") from None
    frame["_line"] = np.arange(first_line, first_line + len(frame))
    return frame, vectors


def _has_map(t, pa) -> bool:
    if pa.types.is_map(t):
        return True
    return any(_has_map(t.field(i).type, pa) for i in range(t.num_fields))


BATCH_ROWS = 131072  # Parquet rows decoded before the value count is checked again


def _read_parquet_table(path: Path, name: str, pa):
    """The file as one validated Arrow table, within MAX_ROWS / MAX_COLUMNS / MAX_VALUES.

    Per-column-chunk footer statistics are deliberately not read: on some damaged files pyarrow
    aborts the whole process there (C++ terminate), which no `except` can catch."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        rows, cols = pf.metadata.num_rows, pf.metadata.num_columns
        if rows > MAX_ROWS or cols > MAX_COLUMNS:
            raise DataError(name, None, None, f"{rows} rows x {cols} columns; at most {MAX_ROWS} rows and "
                                              f"{MAX_COLUMNS} columns are read")
        batches, values = [], 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            values += sum(_decoded_values(c, pa) for c in batch.columns)
            if values > MAX_VALUES:
                raise DataError(name, None, None, f"more than {MAX_VALUES} values once decoded; "
                                                  f"at most {MAX_VALUES} are read")
            batches.append(batch)
        table = pa.Table.from_batches(batches, schema=pf.schema_arrow)
        table.validate(full=True)  # e.g. text that is not UTF-8
    except (DataError, MemoryError):  # Arrow's out-of-memory too: not a corrupt file
        raise
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(name, None, None, f"cannot read Parquet: {exc}") from None
    return table


def _decoded_values(array, pa) -> int:
    """Numbers an Arrow column decodes to (list elements counted, however deep)."""
    n = len(array)
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or \
            pa.types.is_fixed_size_list(array.type):
        array = array.flatten()
        n += len(array)
    return n


def vector_columns(table, spec: FeatureSpec, pa) -> dict[str, np.ndarray]:
    """The single-column tokens of an Arrow table stored as equal-length lists: {column: [N, d]}."""
    vectors = {}
    for tok in spec.tokens:
        col = token_columns(tok)[0] if len(token_columns(tok)) == 1 else None
        if col in table.column_names:
            arr = _fixed_vectors(table.column(col), pa)
            if arr is not None:
                vectors[col] = arr
    return vectors


def _fixed_vectors(column, pa) -> np.ndarray | None:
    """A list column whose rows are all present, numeric and of one length, as [N, d]; else None
    (the validator then explains the odd row)."""
    col = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return None
    vt = t.value_type
    if col.null_count or not (pa.types.is_floating(vt) or pa.types.is_integer(vt)) or len(col) == 0:
        return None
    lengths = np.asarray(col.value_lengths())
    if (lengths != lengths[0]).any():
        return None
    flat = col.flatten().to_numpy(zero_copy_only=False)
    # float64 stays float64 so an out-of-float32 value is named as such; narrower types fit float32
    dtype = np.float64 if flat.dtype == np.float64 else np.float32
    return np.asarray(flat, dtype=dtype).reshape(len(col), int(lengths[0]))


def parquet_chunks(path: Path, name: str, spec: FeatureSpec, rows_per_chunk: int):
    """(frame with `_line`, decoded vector columns) per batch of `rows_per_chunk` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        rows, cols = pf.metadata.num_rows, pf.metadata.num_columns
        batches = pf.iter_batches(batch_size=rows_per_chunk)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(name, None, None, f"cannot read Parquet: {exc}") from None
    if rows > MAX_ROWS or cols > MAX_COLUMNS:
        raise DataError(name, None, None, f"{rows} rows x {cols} columns; at most {MAX_ROWS} rows and "
                                          f"{MAX_COLUMNS} columns are read")
    start = 1
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            batch.validate(full=True)
            table = pa.Table.from_batches([batch])
        except MemoryError:
            raise
        except Exception as exc:
            raise DataError(name, None, None, f"cannot read Parquet: {exc}") from None
        frame, vectors = _frame(table, spec, name, pa, start)
        start += len(frame)
        yield frame, vectors
