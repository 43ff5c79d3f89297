"""Rows of a feature array read as copies, without leaving an on-disk array resident.

A feature array is either in memory or an `np.memmap` of the dataset cache (data/store.py). Reading a
long-lived mapping would keep every page it touched in the process's resident set, so a memmap is
read through a fresh mapping that is dropped at once: memory stays one batch, whatever the file size.
RunReader reads many chunks of one file (the cache build's second pass) with a read per run of
consecutive rows into buffers it reuses: no mapping, no fresh allocation per chunk.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

__all__ = ["CHUNK_ROWS", "RunReader", "iter_chunks", "read_rows"]

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


class RunReader:
    """Chunks of rows of an on-disk [N, d] np.memmap, each read with one pread per run of consecutive rows
    into one of `slots` buffers of CHUNK_ROWS rows, reused by the next read into the same slot (rows
    scattered into runs shorter than MIN_RUN on average: one read_rows gather instead). Two slots let a
    thread consume one chunk while the next is read. Close it (or use it in a with block)."""

    MIN_RUN = 8

    def __init__(self, arr: np.memmap, slots: int = 1) -> None:
        self.arr, self.fd = arr, os.open(arr.filename, os.O_RDONLY)
        self.row_bytes = arr.shape[1] * arr.dtype.itemsize
        self.bufs = [np.empty((CHUNK_ROWS, arr.shape[1]), dtype=arr.dtype) for _ in range(slots)]
        self.wides = [np.empty((CHUNK_ROWS, arr.shape[1]), dtype=np.float32) if arr.dtype != np.float32 else None
                      for _ in range(slots)]

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, rows: np.ndarray, slot: int = 0) -> np.ndarray:
        """arr[rows] ([n, d], n <= CHUNK_ROWS), valid until the next read into the same slot."""
        n = len(rows)
        if n > CHUNK_ROWS:
            raise ValueError(f"{n} rows asked, at most {CHUNK_ROWS} per read")
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        if n == 0 or len(breaks) * self.MIN_RUN > n:
            return read_rows(self.arr, rows)
        out = memoryview(self.bufs[slot][:n]).cast("B")
        firsts = [0, *breaks.tolist()]
        for i, j in zip(firsts, [*firsts[1:], n]):
            self._pread(out[i * self.row_bytes:j * self.row_bytes], self.arr.offset + int(rows[i]) * self.row_bytes)
        return self.bufs[slot][:n]

    def float32(self, block: np.ndarray, slot: int = 0) -> np.ndarray:
        """block [n, d] as C-ordered float32 (the slot's reused buffer when it must be converted)."""
        if block.dtype == np.float32:
            return np.ascontiguousarray(block)
        wide = self.wides[slot][:len(block)]
        np.copyto(wide, block)
        return wide

    def _pread(self, out: memoryview, offset: int) -> None:
        done = 0
        while done < len(out):  # a read may return less than asked
            got = os.preadv(self.fd, [out[done:]], offset + done)
            if got <= 0:
                raise OSError(f"{self.arr.filename}: ends before byte {offset + done}")
            done += got

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
