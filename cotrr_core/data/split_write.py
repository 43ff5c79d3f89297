"""Pass 2 of the streamed cache build (data/stream.py): a split's rows copied from pass 1's raw files into
its cache arrays in their original order, hashed for the fingerprint on the way, and the list-constant
tokens checked; a raw file already holding its rows in order is renamed into place instead.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cotrr_core.data.rowread import CHUNK_ROWS, RunReader, read_rows
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.data.store import NpyWriter, finish_npy

__all__ = ["SplitRows", "write_tokens"]


class SplitRows:
    """One split's rows for pass 2: `rows` [n] (file rows, in the split's order), where they lie in the
    split's raw files (`local` [n]), each row's list's first row in the file (`lists_first` [n]), and the
    raw files as memmaps (`raw`: token -> [rows of the split in the file, d]); p1: stream's pass 1."""

    def __init__(self, p1, split: int, row_split: np.ndarray, rows: np.ndarray,
                 lists_first: np.ndarray) -> None:
        in_file = np.flatnonzero(row_split == split)  # the raw files' rows, in file order
        self.rows, self.lists_first, self.p1, self.split = rows, lists_first, p1, split
        self.local = np.searchsorted(in_file, rows)
        self.local_first = np.searchsorted(in_file, lists_first)
        if not (np.array_equal(in_file[self.local], rows) and np.array_equal(in_file[self.local_first], lists_first)):
            raise RuntimeError("pass 1 wrote a row into another split's raw file")
        self.in_order = len(rows) == len(in_file) and np.array_equal(self.local, np.arange(len(rows)))
        self.raw = p1.raw_arrays(split, len(in_file))


def write_tokens(folder: Path | None, spec: FeatureSpec, src: SplitRows, offsets: np.ndarray,
                 dtypes: dict[str, str], bad_const: dict, h: Any = None, sums: dict | None = None,
                 chunk: int = CHUNK_ROWS) -> None:
    """A split's rows of every token, in row chunks: hashed into `h` and written to folder/<token>.npy (the
    raw file renamed when it already holds them in order; folder None: only the list-constant check).
    `offsets` [Q+1]: where each list starts in the split; a list-constant token whose rows differ inside
    a list gets its earliest offending file row noted in `bad_const` (against its list's first row). Rows
    are read `chunk` at a time."""
    starts = np.zeros(len(src.rows), dtype=bool)
    starts[offsets[:-1]] = True
    for tok in sorted(spec.tokens, key=lambda t: t.name):
        if folder is None and not tok.list_constant:
            continue
        if h is not None:
            h.update(tok.name.encode())
        raw, dtype = src.raw[tok.name], np.dtype(dtypes[tok.name])
        shape = (len(src.rows), raw.shape[1])
        in_place = folder is not None and src.in_order and raw.dtype == dtype
        out = None if folder is None or in_place else NpyWriter(folder / f"{tok.name}.npy", dtype, shape, sums)
        varies, last, pending = False, None, None
        with RunReader(raw, slots=2) as reader, ThreadPoolExecutor(max_workers=1) as pool:
            for i, a in enumerate(range(0, len(src.rows), chunk)):
                block = reader.read(src.local[a:a + chunk], slot=i % 2)
                wide = reader.float32(block, slot=i % 2)  # the bytes fingerprint() hashes
                if tok.list_constant:
                    varies = varies or _varies_in_lists(wide, starts[a:a + chunk], last)
                    last = wide[-1].copy()
                if pending is not None:
                    pending.result()  # in order; and the other slot is free again
                if h is not None or out is not None:  # hashed and written while the next chunk is read
                    pending = pool.submit(_consume, h, out, wide, block)
            if pending is not None:
                pending.result()
        if out is not None:
            out.close()
        if varies:  # a bad file: find the offending row exactly
            _note_list_constant(src, tok.name, bad_const, chunk)
        if in_place and not finish_npy(src.p1.path(src.split, tok.name), folder / f"{tok.name}.npy", dtype, shape):
            _copy_npy(raw, folder / f"{tok.name}.npy", dtype, sums, chunk)


def _consume(h: Any, out: NpyWriter | None, wide: np.ndarray, block: np.ndarray) -> None:
    """One chunk into the fingerprint hash (wide: float32) and the .npy writer (block: as read)."""
    if h is not None:
        h.update(wide)
    if out is not None:
        out.write(block)


def _copy_npy(raw: np.memmap, path: Path, dtype: np.dtype, sums: dict | None, chunk: int) -> None:
    """raw [n, d] copied into the .npy file `path`, `chunk` rows at a time."""
    out = NpyWriter(path, dtype, raw.shape, sums)
    with RunReader(raw) as reader:
        for a in range(0, len(raw), chunk):
            out.write(reader.read(np.arange(a, min(a + chunk, len(raw)))))
    out.close()


def _varies_in_lists(block: np.ndarray, starts: np.ndarray, last: np.ndarray | None) -> bool:
    """Whether a row of block [n, d] differs from the row before it in the same list (`starts` [n]: a row
    begins a list; `last` [d]: the previous chunk's last row). Values are finite, so rows equal to their
    predecessors are all equal to their list's first row."""
    differs = np.empty(len(block), dtype=bool)
    differs[1:] = (block[1:] != block[:-1]).any(axis=1)
    differs[0] = last is not None and bool((block[0] != last).any())
    return bool((differs & ~starts).any())


def _note_list_constant(src: SplitRows, token: str, bad: dict, chunk: int) -> None:
    """Record the earliest file row of the split whose list-constant token differs from its list's first
    row in the file (bad: token -> (row, its list's first row), kept across splits)."""
    raw = src.raw[token]
    for a in range(0, len(src.rows), chunk):
        rows, ref = src.rows[a:a + chunk], src.lists_first[a:a + chunk]
        differs = (read_rows(raw, src.local[a:a + chunk]) != read_rows(raw, src.local_first[a:a + chunk])) \
            .any(axis=1)
        if differs.any():
            r = int(rows[differs].min())
            if token not in bad or r < bad[token][0]:
                bad[token] = (r, int(ref[rows == r][0]))
