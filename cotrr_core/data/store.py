"""The on-disk dataset cache: a loaded file's splits as .npy arrays, features memory-mapped.

Layout of one cache entry (a directory, written to a temp name and renamed into place):
    meta.json                     source, spec, feature dtypes, per split: fingerprint + load report
    <split>/query_ids.npy [Q] str, queries.npy [Q] str, offsets.npy [Q+1] int64
    <split>/candidate_ids.npy [N] str, labels.npy [N] float32, extras.parquet [N rows]
    <split>/<token>.npy [N, d] float16 or float32, opened with mmap_mode="r"
Nothing is pickled (np.load with allow_pickle=False); ids are fixed-width unicode arrays.
Features are float16 only where that loses nothing (every value round-trips) or the spec's token
says `float16: true`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cotrr_core.data.dataset import RankingData
from cotrr_core.data.errors import LoadReport
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.io import REPO_ROOT, write_json

__all__ = ["STORE_VERSION", "NpyWriter", "cache_key", "cache_root", "open_store", "write_ids"]

STORE_VERSION = 1


def cache_root() -> Path:
    """$COTRR_CACHE (a folder; "off" loads files whole instead), else artifacts/datasets/cache."""
    env = os.environ.get("COTRR_CACHE")
    return Path(env) if env and env != "off" else REPO_ROOT / "artifacts" / "datasets" / "cache"


def cache_key(path: Path, spec: FeatureSpec, **options: Any) -> str:
    """Changes with the file (path, size, mtime), the spec and the load options."""
    st = path.stat()
    ident = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "spec": spec.to_dict(),
             "version": STORE_VERSION, **options}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


class NpyWriter:
    """An .npy file of known shape [n, d] written chunk by chunk (nothing of it stays in memory)."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.dtype, self.fh = np.dtype(dtype), open(path, "wb")
        np.lib.format.write_array_header_1_0(self.fh, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                       "fortran_order": False, "shape": shape})

    def write(self, chunk: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(chunk, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.fh.close()


def write_ids(folder: Path, query_ids: np.ndarray, queries: np.ndarray, offsets: np.ndarray,
              candidate_ids: np.ndarray, labels: np.ndarray, extras: pd.DataFrame) -> None:
    """Everything of a split but its features."""
    for name, arr in (("query_ids", query_ids), ("queries", queries), ("candidate_ids", candidate_ids)):
        np.save(folder / f"{name}.npy", np.asarray([str(x) for x in arr], dtype=str) if len(arr) else
                np.zeros(0, dtype="<U1"), allow_pickle=False)
    np.save(folder / "offsets.npy", np.asarray(offsets, dtype=np.int64), allow_pickle=False)
    np.save(folder / "labels.npy", np.asarray(labels, dtype=np.float32), allow_pickle=False)
    extras.to_parquet(folder / "extras.parquet", index=False)


def open_store(folder: Path, spec: FeatureSpec) -> dict[str, RankingData]:
    """The cached splits; features are read-only memmaps (read them with data/rowread.py)."""
    meta = json.loads((folder / "meta.json").read_text())
    out = {}
    for name, info in meta["splits"].items():
        d = folder / name
        def load(f: str, d: Path = d) -> np.ndarray:
            return np.load(d / f, allow_pickle=False)
        report = LoadReport(**{k: v for k, v in info["report"].items() if k != "skip_reasons"})
        report.skip_reasons.update(info["report"]["skip_reasons"])
        out[name] = RankingData(
            spec=spec, query_ids=load("query_ids.npy").astype(object), queries=load("queries.npy").astype(object),
            offsets=load("offsets.npy"), candidate_ids=load("candidate_ids.npy").astype(object),
            labels=load("labels.npy"),
            features={t.name: np.load(d / f"{t.name}.npy", mmap_mode="r", allow_pickle=False) for t in spec.tokens},
            extras=pd.read_parquet(d / "extras.parquet"), report=report, stored_fingerprint=info["fingerprint"])
    return out


def commit(tmp: Path, final: Path, meta: dict) -> None:
    """meta.json last, then one rename: a cache entry is complete or absent. Then prune."""
    write_json(tmp / "meta.json", meta)
    try:
        os.replace(tmp, final)
    except OSError:  # another process committed the same entry first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    prune(final.parent)


def prune(root: Path) -> None:
    """Drop entries whose source file is gone (temp uploads, test files): the cache must not only grow."""
    for entry in root.iterdir():
        try:
            source = json.loads((entry / "meta.json").read_text()).get("file")
        except (OSError, ValueError):
            continue  # a temp folder being written, or not ours
        if source and not Path(source).exists():
            shutil.rmtree(entry, ignore_errors=True)
