"""The on-disk dataset cache: a loaded file's splits as arrays, features memory-mapped.

Layout of one cache entry (a directory, written to a temp name and renamed into place):
    meta.json                     source, spec, feature dtypes, per split: fingerprint + load report,
                                  per file: size and CRC-32
    <split>/queries.parquet [Q rows] query_id, query (text, kept exactly as given)
    <split>/candidates.parquet [N rows] candidate_id
    <split>/offsets.npy [Q+1] int64, labels.npy [N] float32, extras.parquet [N rows]
    <split>/<token>.npy [N, d] float16 or float32, opened with mmap_mode="r"
Nothing is pickled (np.load with allow_pickle=False). Ids and text are variable-length columns, so an
entry costs about what the file holds, however long one id is. Features are float16 only where that
loses nothing (every value round-trips) or the spec's token says `float16: true`.

Housekeeping: an entry is checked on every open (each file's size; the CRC of files up to CHECK_BYTES,
which costs little against reading them; .npy headers against the meta), and a damaged one is reported
as DamagedEntry for the caller to rebuild. Builds write into `.<key>-<pid>-*` folders, so the next
build removes those of dead processes. After each commit the least recently used entries are evicted
beyond the size cap ($COTRR_CACHE_MAX_GB, default 64).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cotrr_core.data.dataset import RankingData
from cotrr_core.data.errors import LoadReport
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.io import REPO_ROOT, write_json

__all__ = ["STORE_VERSION", "CHECK_BYTES", "NPY_HEADER_BYTES", "DamagedEntry", "NpyWriter", "cache_key", "cache_root",
           "commit", "finish_npy", "new_temp_dir", "npy_header", "open_store", "sweep_dead_builds", "write_ids"]

STORE_VERSION = 3  # 2: ids as Parquet text columns, per-file size + CRC in meta.json; 3: file-order lists that
# straddled a chunk boundary were reordered by the streamed build (fixed): entries of version 2 are rebuilt
CHECK_BYTES = 64 * 2**20  # files up to this size are CRC-checked on every open; larger: size and header
NPY_HEADER_BYTES = 128  # what an [n, d] array's .npy header takes (numpy pads it to a multiple of 64)
_READ_BYTES = 1 << 24
_ORPHAN_SECONDS = 24 * 3600  # temp folders without a process id (older builds): removed after a day


class DamagedEntry(Exception):
    """A cache entry that does not match what was written: rebuild it, never read it."""


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


def new_temp_dir(root: Path, prefix: str) -> Path:
    """A build folder `root/.<prefix>-<pid>-*`: sweep_dead_builds can tell when its builder died."""
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{prefix}-{os.getpid()}-", dir=root))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_dead_builds(root: Path) -> list[Path]:
    """Remove the temp folders of builds whose process is gone (killed, crashed); returns them."""
    removed = []
    for entry in root.iterdir() if root.is_dir() else ():
        parts = entry.name.split("-")
        if not entry.name.startswith(".") or len(parts) < 2 or not entry.is_dir():
            continue
        if len(parts) >= 3 and parts[1].isdigit():
            dead = not _alive(int(parts[1]))
        else:
            dead = time.time() - entry.stat().st_mtime > _ORPHAN_SECONDS
        if dead:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The .npy (version 1.0) header of a C-order array of this dtype and shape."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                "fortran_order": False, "shape": shape})
    return head.getvalue()


def finish_npy(src: Path, dst: Path, dtype: np.dtype, shape: tuple[int, ...]) -> bool:
    """A file holding an array's C-order bytes after NPY_HEADER_BYTES reserved bytes becomes the .npy file
    `dst`: its header written in place, then renamed (no copy). False, nothing changed, when the header
    or the size does not match (the caller copies instead)."""
    head = npy_header(dtype, shape)
    if len(head) != NPY_HEADER_BYTES or \
            src.stat().st_size != NPY_HEADER_BYTES + int(np.prod(shape)) * np.dtype(dtype).itemsize:
        return False
    with open(src, "r+b") as fh:
        fh.write(head)
    os.replace(src, dst)
    return True


class NpyWriter:
    """An .npy file of known shape [n, d] written chunk by chunk (nothing of it stays in memory); its
    size and CRC-32 go into `sums` (keyed '<folder>/<file>') on close."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...], sums: dict | None = None) -> None:
        self.dtype, self.fh, self.key, self.sums = np.dtype(dtype), open(path, "wb"), f"{path.parent.name}/{path.name}", sums
        head = npy_header(self.dtype, shape)
        self.size, self.crc = 0, 0
        # a file larger than CHECK_BYTES is never CRC-checked on open, so none is computed for it
        self.summed = len(head) + int(np.prod(shape)) * self.dtype.itemsize <= CHECK_BYTES
        self._put(memoryview(head))

    def _put(self, data: memoryview) -> None:
        self.fh.write(data)
        self.size += data.nbytes
        if self.summed:
            self.crc = zlib.crc32(data, self.crc)

    def write(self, chunk: np.ndarray) -> None:
        self._put(memoryview(np.ascontiguousarray(chunk, dtype=self.dtype)).cast("B"))

    def close(self) -> None:
        self.fh.close()
        if self.sums is not None:
            self.sums[self.key] = {"size": self.size, "crc32": self.crc if self.summed else None}


def write_ids(folder: Path, query_ids: np.ndarray, queries: np.ndarray, offsets: np.ndarray,
              candidate_ids: np.ndarray, labels: np.ndarray, extras: pd.DataFrame) -> None:
    """Everything of a split but its features (ids and text as variable-length Parquet strings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = lambda a: pa.array([str(x) for x in a], pa.large_string())  # noqa: E731
    pq.write_table(pa.table({"query_id": text(query_ids), "query": text(queries)}), folder / "queries.parquet")
    pq.write_table(pa.table({"candidate_id": text(candidate_ids)}), folder / "candidates.parquet")
    np.save(folder / "offsets.npy", np.asarray(offsets, dtype=np.int64), allow_pickle=False)
    np.save(folder / "labels.npy", np.asarray(labels, dtype=np.float32), allow_pickle=False)
    extras.to_parquet(folder / "extras.parquet", index=False)


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(_READ_BYTES):
            crc = zlib.crc32(block, crc)
    return crc


def _file_sums(tmp: Path, known: dict) -> dict:
    """Size and CRC-32 of every file of a finished build (those a writer already summed are kept)."""
    out = {}
    for p in sorted(tmp.rglob("*")):
        key = p.relative_to(tmp).as_posix()
        if p.is_file() and key != "meta.json":
            size = p.stat().st_size
            out[key] = known.get(key) or {"size": size, "crc32": _crc(p) if size <= CHECK_BYTES else None}
    return out


def check_entry(folder: Path, meta: dict) -> None:
    """Every file of the entry has its recorded size (and CRC where cheap); raises DamagedEntry."""
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise DamagedEntry("meta.json lists no files")
    for key, info in files.items():
        p = folder / key
        size = p.stat().st_size if p.is_file() else None
        if size != info["size"]:
            raise DamagedEntry(f"{key}: {size} bytes, {info['size']} were written")
        if size <= CHECK_BYTES and _crc(p) != info["crc32"]:
            raise DamagedEntry(f"{key}: checksum differs from the one written")


def _read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise DamagedEntry(f"meta.json unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("version") != STORE_VERSION or "splits" not in meta:
        raise DamagedEntry("meta.json is not a cache entry of this version")
    return meta


def open_store(folder: Path, spec: FeatureSpec) -> dict[str, RankingData]:
    """The cached splits, after check_entry; features are read-only memmaps (read them with data/rowread.py).
    Raises DamagedEntry when anything differs from what was written."""
    meta = _read_meta(folder)
    check_entry(folder, meta)
    try:
        out = {name: _open_split(folder / name, info, spec, meta["dtypes"]) for name, info in meta["splits"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:  # e.g. a damaged header in a large feature file
        raise DamagedEntry(f"cannot read: {exc}") from None
    os.utime(folder)  # last use, for the LRU eviction
    return out


def _open_split(d: Path, info: dict, spec: FeatureSpec, dtypes: dict) -> RankingData:
    import pyarrow.parquet as pq

    queries = pq.read_table(d / "queries.parquet")
    cands = pq.read_table(d / "candidates.parquet")
    offsets = np.load(d / "offsets.npy", allow_pickle=False)
    labels = np.load(d / "labels.npy", allow_pickle=False)
    n, q = info["num_candidates"], info["num_queries"]
    features = {t.name: np.load(d / f"{t.name}.npy", mmap_mode="r", allow_pickle=False) for t in spec.tokens}
    shapes_ok = len(labels) == n == cands.num_rows and len(offsets) == q + 1 == queries.num_rows + 1 and \
        all(f.ndim == 2 and len(f) == n and f.dtype == np.dtype(dtypes[k]) for k, f in features.items())
    if not shapes_ok:
        raise DamagedEntry(f"{d.name}: array shapes differ from the meta")
    report = LoadReport(**{k: v for k, v in info["report"].items() if k != "skip_reasons"})
    report.skip_reasons.update(info["report"]["skip_reasons"])
    return RankingData(
        spec=spec, query_ids=_text(queries, "query_id"), queries=_text(queries, "query"), offsets=offsets,
        candidate_ids=_text(cands, "candidate_id"), labels=labels, features=features,
        extras=pd.read_parquet(d / "extras.parquet"), report=report, stored_fingerprint=info["fingerprint"])


def _text(table, column: str) -> np.ndarray:
    return np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=object)


def commit(tmp: Path, final: Path, meta: dict, sums: dict | None = None) -> None:
    """File sums and meta.json last, then one rename: a cache entry is complete or absent. Then prune."""
    meta = {**meta, "version": STORE_VERSION, "files": _file_sums(tmp, sums or {})}
    write_json(tmp / "meta.json", meta)
    try:
        os.replace(tmp, final)
    except OSError:  # another process committed the same entry first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    prune(final.parent, keep=final)


def cap_bytes() -> int:
    return int(float(os.environ.get("COTRR_CACHE_MAX_GB", "64")) * 2**30)


def prune(root: Path, keep: Path | None = None) -> None:
    """Drop entries whose source file is gone (temp uploads, test files), then the least recently used
    ones while the cache is over cap_bytes() (never `keep`, the entry just written)."""
    entries = []
    for entry in root.iterdir():
        try:
            meta = json.loads((entry / "meta.json").read_text())
            source, size = meta.get("file"), sum(f["size"] for f in meta.get("files", {}).values())
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # a temp folder being written, or not ours
        if source and not Path(source).exists():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entries.append((entry.stat().st_mtime, size, entry))
    total, cap = sum(e[1] for e in entries), cap_bytes()
    for _, size, entry in sorted(entries, key=lambda e: e[0]):
        if total <= cap:
            break
        if keep is not None and entry == keep:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
