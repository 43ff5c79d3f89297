"""Rows of a feature array read as copies, without leaving an on-disk array resident.

A feature array is either in memory or an `np.memmap` of the dataset cache (data/store.py). Reading a
long-lived mapping would keep every page it touched in the process's resident set, so a memmap is
read through a fresh mapping that is dropped at once: memory stays one batch, whatever the file size.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["CHUNK_ROWS", "iter_chunks", "read_rows"]

CHUNK_ROWS = 16384  # rows per chunk when a whole array is streamed (16k x 1024 float32 = 64 MiB)


def read_rows(arr: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
    """arr[rows] as a new in-memory array ([n, ...], arr's dtype)."""
    if isinstance(arr, np.memmap) and getattr(arr, "filename", None) and arr.base is not None \
            and not isinstance(arr.base, np.ndarray):
        fresh = np.memmap(arr.filename, dtype=arr.dtype, mode="r", offset=arr.offset, shape=arr.shape,
                          order="F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C")
        try:
            return np.array(fresh[rows])
        finally:
            del fresh  # unmaps: the pages leave this process (the OS page cache may keep them)
    return np.asarray(arr[rows])


def iter_chunks(arr: np.ndarray, rows_per_chunk: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """arr in consecutive row blocks of at most `rows_per_chunk` rows (copies)."""
    for a in range(0, len(arr), rows_per_chunk):
        yield read_rows(arr, slice(a, min(a + rows_per_chunk, len(arr))))
