"""The streamed Parquet build's fast path (columnar.fast_parquet_chunks; issue 28's 10^6-row target):
half-float vectors stay float16, row groups are decoded ahead, each split's raw files are renamed into
place when already in order. Same arrays, fingerprints and errors as the precise reader and the
whole-file load."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cotrr_core.data import DataError, columnar, load_dataset, split_write, stream
from cotrr_core.data.benchmarks import _hash_split
from cotrr_core.data.rowread import RunReader
from cotrr_core.data.spec import builtin_spec
from cotrr_core.data.store import NPY_HEADER_BYTES, finish_npy
from tests.conftest import make_step5_rows
from tests.data.test_bad_input import FUZZ

STEP5 = builtin_spec("step5")
VECTORS = ("clip_img_features", "clip_text_features")


@pytest.fixture(autouse=True)
def small_groups(tmp_path, monkeypatch):
    """A private cache; row groups beyond 64 rows read in batches of 64."""
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(columnar, "GROUP_ROWS", 64)


@pytest.fixture
def small_pass2(monkeypatch):
    """Pass 2 in chunks of 50 rows (so are the precise reader's: its length errors then name the
    chunk's most common length, not the file's)."""
    monkeypatch.setattr(stream, "CHUNK_ROWS", 50)


def _vectors(values: list) -> pa.Array:
    """A list<halffloat> column: None rows become null lists, None elements null elements."""
    lengths = [0 if v is None else len(v) for v in values]
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    flat = [x for v in values if v is not None for x in v]
    with np.errstate(over="ignore"):  # 1e6 is inf in float16: a defect some cases want
        items = pa.array([None if x is None else np.float16(x) for x in flat], pa.float16())
    mask = pa.array([v is None for v in values])
    return pa.ListArray.from_arrays(offsets, items, mask=mask if any(v is None for v in values) else None)


def half_parquet(path, rows: list[dict], row_group_size: int = 60):
    """rows as Parquet, the two CLIP columns as list<halffloat> (as the demo writes them)."""
    cols = {k: [r.get(k) for r in rows] for k in rows[0]}
    table = pa.table({k: _vectors(v) if k in VECTORS else v for k, v in cols.items()})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _in_order(rows: list[dict]) -> list[dict]:
    """Each list already in its original order (descending first-stage score)."""
    return sorted(rows, key=lambda r: (r["query_id"], -r["first_stage_score"]))


def _precise_only(monkeypatch) -> None:
    def miss(*_a, **_k):
        raise columnar.FastPathMiss("forced")
    monkeypatch.setattr(stream, "fast_parquet_chunks", miss)


def _same(a, b) -> None:
    assert a.fingerprint() == b.fingerprint()
    for k in ("query_ids", "queries", "offsets", "candidate_ids", "labels"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert a.features.keys() == b.features.keys()
    for k in a.features:
        assert np.array_equal(np.asarray(a.features[k], np.float32), np.asarray(b.features[k], np.float32)), k
    assert a.extras.equals(b.extras)
    assert str(a.report) == str(b.report)


@pytest.mark.parametrize("order", ["shuffled", "in_order"])
@pytest.mark.parametrize("seed", [0, None])
def test_a_half_float_file_reads_the_same_fast_precise_and_whole(tmp_path, monkeypatch, small_pass2, order, seed):
    rows = make_step5_rows(n_queries=40, list_len=7, seed=5)
    rows = _in_order(rows) if order == "in_order" else rows[::-1]
    path = half_parquet(tmp_path / "d.parquet", rows)
    whole = load_dataset(path, spec=STEP5)
    ref = _hash_split(whole, seed=seed) if seed is not None else {"all": whole}
    halves = []
    monkeypatch.setattr(stream, "split_half_tokens", lambda *a: halves.append(1) or columnar.split_half_tokens(*a))
    fast = stream.cached_splits(path, STEP5, seed=seed)
    assert halves, "the fast path did not run"
    with monkeypatch.context() as m:
        _precise_only(m)
        path.touch()  # a new cache key: built again, by the precise reader
        precise = stream.cached_splits(path, STEP5, seed=seed)
    assert set(fast) == set(precise) == set(ref)
    for s in ref:
        _same(ref[s], fast[s])
        _same(precise[s], fast[s])
        assert fast[s].features["clip_img"].dtype == np.float16
        fast[s].stored_fingerprint = None  # recomputed from the memmapped arrays: still equal
        assert fast[s].fingerprint() == ref[s].fingerprint()


@pytest.mark.parametrize("order", ["shuffled", "in_order"])
def test_splits_already_in_order_are_renamed_into_place_not_copied(tmp_path, monkeypatch, small_pass2, order):
    rows = make_step5_rows(n_queries=30, list_len=6, seed=2)
    rows = _in_order(rows) if order == "in_order" else rows[::-1]
    path = half_parquet(tmp_path / "d.parquet", rows)
    copied = []

    class Spy(split_write.NpyWriter):
        def __init__(self, p, *a, **k):
            copied.append(p.name)
            super().__init__(p, *a, **k)
    monkeypatch.setattr(split_write, "NpyWriter", Spy)  # pass 2 writes the arrays
    got = stream.cached_splits(path, STEP5)
    assert (not copied) if order == "in_order" else len(copied) == 4 * len(STEP5.tokens)
    for s, ref in _hash_split(load_dataset(path, spec=STEP5), seed=0).items():
        _same(ref, got[s])


def _damage(rows: list[dict], kind: str, r: int) -> tuple[list[dict], int]:
    """rows with one defect at row r; returns them and the row group size to write."""
    f, v = "clip_img_features", rows[r]["clip_img_features"]
    if kind == "empty":
        for row in rows:
            row[f] = []
    elif kind == "dim-per-group":  # every row of the second row group one longer
        for row in rows[30:60]:
            row[f] = row[f] + [0.5]
        return rows, 30
    elif kind == "text-differs":
        rows[r]["clip_text_features"] = [x + 1 for x in rows[r]["clip_text_features"]]
    elif kind == "label":
        rows[r]["compliance_score"] = 1.5
    elif kind == "label+nan":  # two defects in one row group: the precise reader's order decides
        rows[r]["compliance_score"] = 1.5
        rows[min(r + 1, len(rows) - 1)][f] = [float("nan")] + v[1:]
    elif kind == "duplicate":
        rows[r]["candidate_id"] = rows[r - 1 if r % 6 else r + 1]["candidate_id"]
    else:
        rows[r][f] = {"nan": [float("nan")] + v[1:], "inf": v[:-1] + [float("-inf")], "f16-overflow": [1e6] + v[1:],
                      "long": v + [0.5], "null": None, "null-element": [None] + v[1:]}[kind]
    return rows, 60


KINDS = ["empty", "dim-per-group", "text-differs", "label", "label+nan", "duplicate", "nan", "inf", "f16-overflow",
         "long", "null", "null-element"]


def _outcome(fn) -> tuple:
    try:
        data = fn()
    except DataError as err:
        return ("error", str(err))
    return ("ok", {k: v.fingerprint() for k, v in data.items()})


def _agree(path, monkeypatch) -> tuple:
    """The fast build, the precise build and the whole-file load: one outcome."""
    fast = _outcome(lambda: stream.cached_splits(path, STEP5, seed=None))
    with monkeypatch.context() as m:
        _precise_only(m)
        path.touch()
        precise = _outcome(lambda: stream.cached_splits(path, STEP5, seed=None))
    assert fast == precise == _outcome(lambda: {"all": load_dataset(path, spec=STEP5)})
    return fast


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_half_float_file_gets_the_precise_error(tmp_path, monkeypatch, kind):
    rows, group = _damage(make_step5_rows(n_queries=20, list_len=6, seed=7), kind, 100)  # a later row group
    outcome = _agree(half_parquet(tmp_path / "d.parquet", rows, group), monkeypatch)
    assert outcome[0] == "error", kind
    if kind not in ("empty", "dim-per-group"):
        assert "row " in outcome[1], outcome


@settings(max_examples=40, **FUZZ)
@given(kind=st.sampled_from(KINDS), r=st.integers(1, 119), seed=st.integers(0, 2**16))
def test_fuzzed_half_float_defects_one_outcome_on_every_path(tmp_path_factory, kind, r, seed):
    tmp = tmp_path_factory.mktemp("case")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COTRR_CACHE", str(tmp / "cache"))
        rows, group = _damage(make_step5_rows(n_queries=20, list_len=6, seed=seed), kind, r)
        mp.setattr(columnar, "GROUP_ROWS", 64)
        _agree(half_parquet(tmp / "d.parquet", rows, group), mp)


@pytest.mark.parametrize("pattern", ["runs", "scattered", "one"])
def test_run_reader_reads_the_rows_asked(tmp_path, pattern):
    data = np.arange(300 * 3, dtype=np.float16).reshape(300, 3)
    path = tmp_path / "a.raw"
    path.write_bytes(bytes(NPY_HEADER_BYTES) + data.tobytes())
    arr = np.memmap(path, dtype=np.float16, mode="r", offset=NPY_HEADER_BYTES, shape=data.shape)
    rng = np.random.default_rng(0)
    rows = {"runs": np.concatenate([np.arange(10, 40), np.arange(100, 180), [7], np.arange(250, 300)]),
            "scattered": rng.permutation(300)[:120], "one": np.array([299])}[pattern]
    with RunReader(arr) as reader:
        for _ in range(2):  # the buffer is reused
            block = reader.read(rows)
            assert np.array_equal(block, data[rows])
            wide = reader.float32(block)
            assert wide.dtype == np.float32 and np.array_equal(wide, data[rows].astype(np.float32))
    with RunReader(arr, slots=2) as reader:  # a read into one slot leaves the other's rows alone
        first, second = reader.read(rows[:1], slot=0), reader.read(rows[1:], slot=1)
        assert np.array_equal(first, data[rows[:1]]) and np.array_equal(second, data[rows[1:]])


def test_finish_npy_renames_a_complete_file_and_refuses_another_size(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    src = tmp_path / "a.raw"
    src.write_bytes(bytes(NPY_HEADER_BYTES) + data.tobytes())
    assert not finish_npy(src, tmp_path / "a.npy", np.dtype(np.float32), (5, 3))
    assert src.exists() and not (tmp_path / "a.npy").exists()
    assert finish_npy(src, tmp_path / "a.npy", np.dtype(np.float32), (4, 3))
    assert np.array_equal(np.load(tmp_path / "a.npy", allow_pickle=False), data) and not src.exists()
