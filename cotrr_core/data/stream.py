"""A Step5 file (JSONL or Parquet) streamed chunk by chunk into the dataset cache (data/store.py).

Pass 1 validates each chunk with the same checks as a whole-file load (errors name file, line and
field) and appends its features, in file order, to raw files (float16 while every value is exact,
else float32), one per split and token (a query's split is a hash of its id alone, so it is known on
the query's first row); only ids, labels and order keys ([N] each) stay in memory. Pass 2 sorts lists
into their original order and copies each split's rows into its cache arrays, hashing them for the
fingerprint on the way (data/split_write.py); a split whose raw file already holds its rows in that order
(lists stored contiguously, in their original order, none dropped) is renamed into place instead of copied.
Valid data gives the same splits, arrays and fingerprints as load_dataset + the hash split.

Parquet and JSONL first go through the fast readers of data/columnar.py (Parquet: row groups decoded
ahead on a thread, half-float vectors kept float16); when one cannot vouch for the file, or pass 1
fails on it, the precise reader runs again from the start and words the error.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cotrr_core.data.columnar import FastPathMiss, fast_jsonl_chunks, fast_parquet_chunks, split_half_tokens
from cotrr_core.data.dataset import _RESERVED, RankingData, SmallListPolicy
from cotrr_core.data.errors import DataError, LoadReport
from cotrr_core.data.limits import MAX_STREAM_VALUES
from cotrr_core.data.loaders import infer_format, jsonl_chunks
from cotrr_core.data.parquet import parquet_chunks
from cotrr_core.data.rowread import CHUNK_ROWS
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.data.split_write import SplitRows, write_tokens
from cotrr_core.data.splits import split_queries
from cotrr_core.data.store import (
    NPY_HEADER_BYTES,
    DamagedEntry,
    cache_key,
    cache_root,
    commit,
    new_temp_dir,
    open_store,
    sweep_dead_builds,
    write_ids,
)
from cotrr_core.data.validate import check_unique_candidates, order_lists, row_failer, token_columns, validate_columns

__all__ = ["STREAM_FORMATS", "cached_dataset", "cached_splits", "validate_file"]

STREAM_FORMATS = ("jsonl", "parquet")


def cached_dataset(path: str | Path, spec: FeatureSpec, *, name: str | None = None, fmt: str | None = None,
                   min_candidates: int = 2, on_small_list: SmallListPolicy = "skip",
                   require_labels: bool = True) -> RankingData:
    """The whole file as one cached RankingData (memmapped features): load_dataset for big files."""
    return cached_splits(path, spec, name=name, fmt=fmt, seed=None, min_candidates=min_candidates,
                         on_small_list=on_small_list, require_labels=require_labels)["all"]


def cached_splits(path: str | Path, spec: FeatureSpec, *, name: str | None = None, fmt: str | None = None,
                  seed: int | None = 0, min_candidates: int = 2, on_small_list: SmallListPolicy = "skip",
                  require_labels: bool = True) -> dict[str, RankingData]:
    """train / val / cal / test of `path` (seed None: one split "all") from the cache, streaming the
    file into it on first use.

    Returns split -> RankingData with memory-mapped features; raises DataError (file, line, field)."""
    path = Path(path)
    name = name or str(path)
    fmt = fmt or infer_format(path)
    if not path.exists():
        raise DataError(name, None, None, "file not found")
    key = cache_key(path, spec, name=name, fmt=fmt, seed=seed, min_candidates=min_candidates,
                    on_small_list=on_small_list, require_labels=require_labels)
    final = cache_root() / key
    if (final / "meta.json").exists():
        try:
            return open_store(final, spec)
        except DamagedEntry as exc:  # never used: rebuilt from the source file
            warnings.warn(f"dataset cache entry {final.name} of {name} is damaged ({exc}); rebuilding it",
                          stacklevel=2)
            shutil.rmtree(final, ignore_errors=True)
    sweep_dead_builds(final.parent)
    tmp = new_temp_dir(final.parent, key)
    try:
        meta = _build_checked(path, fmt, spec, name, seed, tmp, min_candidates, on_small_list,
                              require_labels=require_labels)
        commit(tmp, final, meta, meta.pop("sums"))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_store(final, spec)


def validate_file(path: str | Path, spec: FeatureSpec, *, fmt: str | None = None, min_candidates: int = 2,
                  on_small_list: SmallListPolicy = "skip") -> dict:
    """Every check of load_dataset, streamed (memory: one chunk plus [N] ids), nothing cached.

    Returns {"report": LoadReport, "token_dims": {name: d}, "relevant_share": float}; raises DataError."""
    path = Path(path)
    fmt = fmt or infer_format(path)
    if not path.exists():
        raise DataError(str(path), None, None, "file not found")
    sweep_dead_builds(cache_root())
    tmp = new_temp_dir(cache_root(), "validate")
    try:
        meta = _build_checked(path, fmt, spec, str(path), 0, tmp, min_candidates, on_small_list, write=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = LoadReport(**{k: v for k, v in meta["report"].items() if k != "skip_reasons"})
    report.skip_reasons.update(meta["report"]["skip_reasons"])
    return {"report": report, "token_dims": meta["token_dims"], "relevant_share": meta["relevant_share"]}


class _Pass1:
    """What pass 1 keeps: per row ids, label, order key, line, query text and split; extras; the raw feature
    files, one per split and token: that split's rows in file order after NPY_HEADER_BYTES reserved bytes
    (so a split already in its final order becomes its .npy file by a rename)."""

    def __init__(self, raw: Path, split_of) -> None:
        self.raw, self.split_of = raw, split_of
        self.cols = {k: [] for k in ("qid", "cid", "label", "key", "line", "text", "split")}
        self.extras: list[pd.DataFrame] = []
        self.files: dict[tuple[int, str], Any] = {}
        self.dims, self.f16_exact = {}, {}
        self.order_from: str | None = None
        self.values = self.rows = 0

    def path(self, split: int, k: str) -> Path:
        return self.raw / f"{split}.{k}.raw"

    def add(self, frame: pd.DataFrame, cols, used: set, fail) -> None:
        if self.order_from is None:
            self.order_from = cols.order_from
        elif cols.order_from != self.order_from:
            raise fail(0, "first_stage_rank" if "rank" in self.order_from + cols.order_from else "first_stage_score",
                       f"the original order comes from {cols.order_from} here but from {self.order_from} "
                       "on earlier lines: give it on every line or on none")
        which = self.split_of(cols.qid)
        groups = [(int(which[0]), None)] if (which == which[0]).all() else \
            [(int(g), np.flatnonzero(which == g)) for g in np.unique(which)]
        for k, arr in cols.features.items():
            if k not in self.dims:
                self.dims[k], self.f16_exact[k] = arr.shape[1], True
            half = arr  # float16 (a half-float Parquet column): exact by construction
            if self.f16_exact[k] and arr.dtype != np.float16:
                with np.errstate(over="ignore"):  # beyond float16 range: simply not exact
                    half = arr.astype(np.float16)
                if not np.array_equal(half, arr):
                    self._widen(k)
            data = np.ascontiguousarray(half) if self.f16_exact[k] else np.ascontiguousarray(arr, dtype=np.float32)
            for g, idx in groups:
                self._file(g, k).write(memoryview(data if idx is None else data[idx]).cast("B"))
            self.values += arr.size
        if self.values > MAX_STREAM_VALUES:
            raise fail(len(frame) - 1, None, f"more than {MAX_STREAM_VALUES} feature values")
        text = frame["query"].astype(str).to_numpy() if "query" in frame else np.full(len(frame), "", dtype=object)
        # file order: the chunk's row numbers continue the file's (a list may span two chunks)
        key = cols.order_key + self.rows if cols.order_from == "file order" else cols.order_key
        self.rows += len(frame)
        for k, v in (("qid", cols.qid), ("cid", cols.cid), ("label", cols.label), ("key", key),
                     ("line", frame["_line"].to_numpy()), ("text", text), ("split", which)):
            self.cols[k].append(v)
        self.extras.append(frame.drop(columns=[c for c in frame.columns if c in used]))

    def _file(self, split: int, k: str):
        if (split, k) not in self.files:
            self.files[split, k] = fh = open(self.path(split, k), "wb")
            fh.write(bytes(NPY_HEADER_BYTES))
        return self.files[split, k]

    def _widen(self, k: str) -> None:
        """Token k's raw files from float16 (every value so far exact) to float32: half the disk traffic
        while the values allow it."""
        for split in [g for g, tok in self.files if tok == k]:
            self.files[split, k].close()
            src = self.path(split, k)
            dst = src.with_suffix(".raw32")
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                fout.write(fin.read(NPY_HEADER_BYTES))
                while block := fin.read(1 << 24):
                    fout.write(memoryview(np.frombuffer(block, np.float16).astype(np.float32)).cast("B"))
            os.replace(dst, src)
            self.files[split, k] = open(src, "ab")
        self.f16_exact[k] = False

    def raw_arrays(self, split: int, n: int) -> dict[str, np.memmap]:
        """The split's raw feature files (n rows) as read-only memmaps."""
        return {k: np.memmap(self.path(split, k), dtype=np.float16 if self.f16_exact[k] else np.float32, mode="r",
                             offset=NPY_HEADER_BYTES, shape=(n, d)) for k, d in self.dims.items()}

    def finish(self) -> dict[str, np.ndarray]:
        for fh in self.files.values():
            fh.close()
        return {k: np.concatenate(v) for k, v in self.cols.items()}


def _splitter(seed: int | None):
    """(split names, qid [n] -> split index [n] int8): split_queries' assignment, known row by row
    (it hashes each query id alone). seed None: one split "all"."""
    if seed is None:
        return ["all"], lambda qid: np.zeros(len(qid), dtype=np.int8)
    names = list(split_queries([], seed=seed))

    def split_of(qid: np.ndarray) -> np.ndarray:
        codes, uniq = pd.factorize(pd.Series(qid, dtype=object), sort=False)
        which = np.zeros(len(uniq), dtype=np.int8)
        for g, idx in enumerate(split_queries(list(uniq), seed=seed).values()):
            which[idx] = g
        return which[codes]
    return names, split_of


def _build_checked(path: Path, fmt: str, spec: FeatureSpec, *args, **kwargs) -> dict:
    """_build through the fast readers (data/columnar.py); when they cannot vouch for the file or a check
    fails, again through the precise reader, whose error names the first bad line and field. Parquet: only
    a failure in pass 1 (raised as FastPathMiss) reruns; pass 2 sees the same arrays on both paths."""
    if fmt in ("jsonl", "parquet"):
        try:
            return _build(path, fmt, spec, *args, **kwargs, fast=True)
        except (FastPathMiss, DataError) as exc:
            if fmt == "parquet" and not isinstance(exc, FastPathMiss):
                raise
            tmp = args[2]
            for child in tmp.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    return _build(path, fmt, spec, *args, **kwargs)


def _build(path: Path, fmt: str, spec: FeatureSpec, name: str, seed: int | None, tmp: Path, min_candidates: int,
           on_small_list: SmallListPolicy, write: bool = True, require_labels: bool = True, fast: bool = False) -> dict:
    """Both passes into `tmp` (write=False: every check, one "all" split, no arrays written)."""
    line_label = "row" if fmt == "parquet" else "line"
    names, split_of = _splitter(seed if write else None)
    p1, cols = _first_pass(path, fmt, spec, name, tmp, line_label, require_labels, fast, split_of)
    fail = row_failer(name, cols["line"], line_label)
    qid, cid = cols["qid"], cols["cid"]
    check_unique_candidates(qid, cid, fail)

    report = LoadReport(source=name, lines=len(qid), order_from=p1.order_from)
    codes, uniq = pd.factorize(pd.Series(qid), sort=False)
    perm, kept_lengths = order_lists(codes, uniq, cols["key"], min_candidates, on_small_list, fail, report)
    offsets = np.concatenate([[0], np.cumsum(kept_lengths)]).astype(np.int64)
    query_ids = np.asarray(qid[perm][offsets[:-1]], dtype=object)
    queries = np.asarray(cols["text"][perm][offsets[:-1]], dtype=object)

    splits = split_queries(query_ids, seed=seed) if write and seed is not None else \
        {"all": np.arange(len(query_ids))}
    empty = [k for k, v in splits.items() if len(v) == 0]
    if empty:
        raise DataError(name, None, "query_id",
                        f"{len(query_ids)} usable queries leave the {', '.join(empty)} split(s) empty; "
                        "training needs train, val, cal and test queries (a few dozen at least)")
    first = np.zeros(len(uniq), dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]  # each query's first row in the file
    dtypes = {t.name: "float16" if t.float16 or p1.f16_exact[t.name] else "float32" for t in spec.tokens}
    extras = pd.concat(p1.extras, ignore_index=True)
    bad_const: dict[str, tuple[int, int]] = {}
    meta_splits, sums = {}, {}
    for s, qs in splits.items():
        rows = np.concatenate([perm[offsets[q]:offsets[q + 1]] for q in qs])
        off_s = np.concatenate([[0], np.cumsum(kept_lengths[qs])]).astype(np.int64)
        labels = cols["label"][rows].astype(np.float32)
        src = SplitRows(p1, names.index(s), cols["split"], rows, first[codes[rows]])
        if not write:  # validation only: the list-constant check still reads the rows
            write_tokens(None, spec, src, off_s, dtypes, bad_const, chunk=CHUNK_ROWS)
            meta_splits[s] = {"report": report.to_dict(), "relevant_share":
                              float((labels >= spec.relevance_threshold).mean())}
            continue
        folder = tmp / s
        folder.mkdir()
        write_ids(folder, query_ids[qs], queries[qs], off_s, cid[rows], labels,
                  extras.iloc[rows].reset_index(drop=True))
        h = hashlib.sha256()  # the same bytes, in the same order, as RankingData.fingerprint
        for arr in (query_ids[qs].astype(str), cid[rows].astype(str)):
            h.update("\x1f".join(arr.tolist()).encode() + b"\x1e")
        h.update(off_s.tobytes())
        h.update(labels.tobytes())
        write_tokens(folder, spec, src, off_s, dtypes, bad_const, h, sums, chunk=CHUNK_ROWS)
        meta_splits[s] = {"fingerprint": h.hexdigest()[:16], "report": report.to_dict(),
                          "num_queries": len(qs), "num_candidates": len(rows)}
    for tok in spec.tokens:
        if tok.name in bad_const:
            r, ref = bad_const[tok.name]
            raise fail(r, ",".join(token_columns(tok)), f"differs from the first candidate of its list "
                       f"({line_label} {int(cols['line'][ref])}): this token must be identical for every "
                       "candidate of a list")
    shutil.rmtree(tmp / "raw")
    if not write:
        return {"report": report.to_dict(), "token_dims": dict(p1.dims),
                "relevant_share": meta_splits["all"]["relevant_share"]}
    return {"version": 1, "source": name, "file": str(path), "format": fmt, "seed": seed, "dtypes": dtypes,
            "splits": meta_splits, "sums": sums}


def _first_pass(path: Path, fmt: str, spec: FeatureSpec, name: str, tmp: Path, line_label: str,
                require_labels: bool, fast: bool, split_of) -> tuple[_Pass1, dict[str, np.ndarray]]:
    """Pass 1: every chunk validated, its features appended to tmp/raw (split_of: qid [n] -> split [n]);
    returns the pass and its columns."""
    if fmt == "parquet":
        chunks = fast_parquet_chunks(path, name, spec) if fast else parquet_chunks(path, name, spec, CHUNK_ROWS)
    elif fast:
        chunks = fast_jsonl_chunks(path, spec)
    else:
        chunks = ((f, {}) for f in jsonl_chunks(path, name, max(CHUNK_ROWS // 8, 1)))  # parsed JSON: ~32 B a number
    (tmp / "raw").mkdir()
    p1 = _Pass1(tmp / "raw", split_of)
    used = {c for t in spec.tokens for c in token_columns(t)} | set(_RESERVED) | {spec.label_field}
    try:
        for frame, vectors in chunks:
            if len(frame):
                if not require_labels and spec.label_field not in frame.columns:  # scoring-only input
                    frame = frame.assign(**{spec.label_field: spec.label_min})
                fail = row_failer(name, frame["_line"].to_numpy(), line_label)
                p1.add(frame, _checked_chunk(frame, spec, fail, vectors, p1.dims), used, fail)
    except DataError as exc:
        if fast and fmt == "parquet":  # chunked unlike the precise reader: it words the error
            raise FastPathMiss(str(exc)) from exc
        raise
    finally:
        chunks.close()
        cols = p1.finish() if p1.cols["qid"] else None
    if cols is None:
        raise DataError(name, None, None, "no candidates found (empty input)")
    return p1, cols


def _checked_chunk(frame: pd.DataFrame, spec: FeatureSpec, fail, vectors: dict, dims: dict):
    """validate_columns of one chunk; tokens a fast reader decoded as float16 are checked by
    columnar.split_half_tokens instead (they stay float16: no float32 copy). Features in spec order."""
    if not any(v.dtype == np.float16 for v in vectors.values()):
        return validate_columns(frame, spec, fail, vectors, dims)
    rest, others, half = split_half_tokens(spec, vectors, dims)
    cols = validate_columns(frame, rest, fail, others, dims)
    cols.features = {t.name: half[t.name] if t.name in half else cols.features[t.name] for t in spec.tokens}
    return cols
