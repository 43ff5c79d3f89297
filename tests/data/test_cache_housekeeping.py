"""Crash-safe cache housekeeping (issue 28): dead builds' temp folders removed by the next build, damaged
entries rebuilt with a warning (same numbers), LRU eviction under the size cap, ids kept exactly, and
an entry whose cost follows the file's size, not its longest id."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cotrr_core.data import stream
from cotrr_core.data.spec import builtin_spec
from cotrr_core.data.store import cache_root
from tests.conftest import make_step5_rows, write_jsonl

STEP5 = builtin_spec("step5")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))


def _entries(root: Path) -> tuple[list[Path], list[Path]]:
    items = sorted(root.iterdir()) if root.exists() else []
    return [p for p in items if not p.name.startswith(".")], [p for p in items if p.name.startswith(".")]


def _numbers(splits: dict) -> dict:
    out = {}
    for s, d in splits.items():
        d.stored_fingerprint = None
        out[s] = (d.fingerprint(), d.labels.copy(), np.array(d.features["clip_img"], dtype=np.float32),
                  list(d.candidate_ids))
    return out


def _same_numbers(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for s in a:
        assert a[s][0] == b[s][0] and a[s][3] == b[s][3], s
        assert np.array_equal(a[s][1], b[s][1]) and np.array_equal(a[s][2], b[s][2]), s


_KILLED_BUILD = r"""
import sys, time
sys.path.insert(0, {root!r})
from cotrr_core.data import stream
from cotrr_core.data.spec import builtin_spec
def stall(tmp, final, meta, sums=None):  # every array written, not yet committed
    print("built", flush=True)
    time.sleep(600)
stream.commit = stall
stream.cached_splits(sys.argv[1], builtin_spec("step5"))
"""


def test_a_killed_build_leaves_nothing_after_the_next_build(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_step5_rows(n_queries=40, list_len=5))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_BUILD.format(root=str(ROOT)), str(path)],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert proc.stdout.readline().strip() == "built"
        entries, temps = _entries(cache_root())
        assert not entries and len(temps) == 1 and any(temps[0].rglob("*.npy"))  # the leak kill -9 leaves
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stream.cached_splits(path, STEP5)
    entries, temps = _entries(cache_root())
    assert len(entries) == 1 and temps == []


def test_a_live_build_temp_folder_is_not_swept(tmp_path):
    from cotrr_core.data.store import new_temp_dir, sweep_dead_builds

    mine = new_temp_dir(cache_root(), "abc")
    assert sweep_dead_builds(cache_root()) == [] and mine.exists()


@pytest.mark.parametrize("damage", ["flip labels", "flip features", "truncate features", "truncate ids",
                                    "truncate meta", "delete labels"])
def test_a_damaged_entry_is_rebuilt_with_the_same_numbers(tmp_path, damage):
    path = write_jsonl(tmp_path / "d.jsonl", make_step5_rows(n_queries=40, list_len=5))
    before = _numbers(stream.cached_splits(path, STEP5))
    (entry,), _ = _entries(cache_root())
    target = {"labels": entry / "train" / "labels.npy", "features": entry / "train" / "clip_img.npy",
              "ids": entry / "train" / "candidates.parquet", "meta": entry / "meta.json"}[damage.split()[1]]
    data = bytearray(target.read_bytes())
    if damage.startswith("flip"):
        at = len(data) - 6  # inside the array's values, past the header
        data[at] ^= 0x40
        target.write_bytes(bytes(data))
    elif damage.startswith("truncate"):
        target.write_bytes(bytes(data[: len(data) // 2]))
    else:
        target.unlink()
    with pytest.warns(UserWarning, match="damaged .*rebuilding"):
        after = _numbers(stream.cached_splits(path, STEP5))
    _same_numbers(before, after)
    entries, temps = _entries(cache_root())
    assert len(entries) == 1 and temps == []


def test_least_recently_used_entries_go_beyond_the_cap(tmp_path, monkeypatch):
    paths = [write_jsonl(tmp_path / f"d{i}.jsonl", make_step5_rows(n_queries=40, list_len=5, seed=i)) for i in range(3)]
    for p in paths:
        stream.cached_splits(p, STEP5)
    entries, _ = _entries(cache_root())
    assert len(entries) == 3
    one = sum(f.stat().st_size for f in entries[0].rglob("*") if f.is_file())
    # use the first file again: the second is now the least recently used
    old = time.time() - 100
    for i, e in enumerate(sorted(entries, key=lambda e: e.stat().st_mtime)):
        os.utime(e, (old + i, old + i))
    first = stream.cached_splits(paths[0], STEP5)
    assert first["train"].num_candidates > 0
    monkeypatch.setenv("COTRR_CACHE_MAX_GB", str(2.5 * one / 2**30))
    stream.cached_splits(write_jsonl(tmp_path / "d3.jsonl", make_step5_rows(n_queries=40, list_len=5, seed=3)), STEP5)
    left, _ = _entries(cache_root())
    sources = {(e / "meta.json").read_text().split('"file": "')[1].split('"')[0] for e in left}
    assert sources == {str(paths[0]), str(tmp_path / "d3.jsonl")}


def test_ids_are_kept_exactly_and_cost_follows_the_file(tmp_path):
    rows = make_step5_rows(n_queries=40, list_len=5)
    rows[0]["candidate_id"], rows[1]["candidate_id"] = "q000_c0", "q000_c0\u0000"
    long_id = "x" * 20_000
    rows[2]["candidate_id"] = long_id
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    data = stream.cached_dataset(path, STEP5)
    ids = set(data.candidate_ids)
    assert {"q000_c0", "q000_c0\u0000", long_id} <= ids
    (entry,), _ = _entries(cache_root())
    on_disk = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
    assert on_disk < 2 * path.stat().st_size + 200_000, (on_disk, path.stat().st_size)
