"""The dataset cache: a streamed, memory-mapped load equals the whole-file load (arrays, fingerprints,
reports), lazy batches equal eager padding, and bad input in any chunk is still one precise error."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cotrr_core.data import DataError, columnar, load_dataset, stream
from cotrr_core.data.benchmarks import _hash_split, load_benchmark
from cotrr_core.data.spec import builtin_spec
from tests.conftest import make_step5_rows, write_jsonl


@pytest.fixture(autouse=True)
def small_chunks(tmp_path, monkeypatch):
    """A private cache, and chunks of 50 rows so every file here spans several chunks."""
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(stream, "CHUNK_ROWS", 50)
    monkeypatch.setattr(columnar, "BLOCK_BYTES", 16384)  # the columnar JSONL reader: several batches too
    monkeypatch.setattr(columnar, "GROUP_ROWS", 50)  # the fast Parquet reader: a row group in batches


def _parquet(path, rows):
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _same(a, b):
    assert a.fingerprint() == b.fingerprint()
    for k in ("query_ids", "queries", "offsets", "candidate_ids", "labels"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    for k in a.features:
        assert np.array_equal(a.features[k], np.asarray(b.features[k], dtype=np.float32)), k
    assert a.extras.equals(b.extras)
    assert str(a.report) == str(b.report)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_cached_splits_equal_the_whole_file_load(tmp_path, fmt):
    rows = make_step5_rows(n_queries=40, list_len=7, seed=3)
    rows = rows[::-1]  # lists out of order in the file: the cache must sort them the same way
    path = write_jsonl(tmp_path / "d.jsonl", rows) if fmt == "jsonl" else _parquet(tmp_path / "d.parquet", rows)
    ref = _hash_split(load_dataset(path), seed=1)
    got = stream.cached_splits(path, builtin_spec("step5"), seed=1)
    assert set(got) == set(ref)
    for s in ref:
        _same(ref[s], got[s])
        got[s].stored_fingerprint = None  # recomputed from the memmapped arrays: still equal
        assert got[s].fingerprint() == ref[s].fingerprint()
        assert isinstance(got[s].features["clip_img"], np.memmap)


def test_second_open_reads_the_cache_and_vectors_go_float16_only_when_exact(tmp_path):
    rows = make_step5_rows(n_queries=30, list_len=5)
    for r in rows:  # float16-exact image vectors, inexact text vectors
        r["clip_img_features"] = [0.5, -0.25, 1.0, 2.0]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    first = stream.cached_splits(path, builtin_spec("step5"))
    assert first["train"].features["clip_img"].dtype == np.float16
    assert first["train"].features["clip_text"].dtype == np.float32
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").exists()
    again = stream.cached_splits(path, builtin_spec("step5"))
    assert again["test"].fingerprint() == first["test"].fingerprint()
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_load_benchmark_goes_through_the_cache_and_off_switch_matches(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", make_step5_rows(n_queries=40, list_len=6))
    cached = load_benchmark(str(path))
    monkeypatch.setenv("COTRR_CACHE", "off")
    whole = load_benchmark(str(path))
    assert not isinstance(whole.splits["train"].features["clip_img"], np.memmap)
    for s in whole.splits:
        _same(whole.splits[s], cached.splits[s])


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_lazy_batches_equal_eager_padding_from_memory_and_from_the_cache(tmp_path, fmt):
    rows = make_step5_rows(n_queries=40, list_len=9)
    for i, r in enumerate(rows):  # lists of different lengths
        r["_drop"] = i % 9 >= 4 + (i // 9) % 5
    rows = [{k: v for k, v in r.items() if k != "_drop"} for r in rows if not r["_drop"]]
    path = write_jsonl(tmp_path / "d.jsonl", rows) if fmt == "jsonl" else _parquet(tmp_path / "d.parquet", rows)
    mem = _hash_split(load_dataset(path), 0)["train"]
    disk = stream.cached_splits(path, builtin_spec("step5"))["train"]
    # reference: the eager algorithm (pad everything with 0), written out here
    lengths = np.minimum(mem.list_lengths, 6)
    L = lengths.max()
    mask = np.arange(L)[None] < lengths[:, None]
    idx = np.where(mask, mem.offsets[:-1, None] + np.arange(L)[None], 0)
    eager = {k: np.where(mask[..., None], v[idx], 0.0).astype(np.float32) for k, v in mem.features.items()}
    pick = np.array([3, 0, 7, 5])
    for data in (mem, disk):
        padded = data.padded(max_len=6)
        tokens, m, labels = padded.batch(pick)
        Lb = int(mask[pick].sum(1).max())
        assert np.array_equal(m.numpy(), mask[pick, :Lb])
        for k in eager:
            assert np.array_equal(tokens[k].numpy(), eager[k][pick, :Lb]), k
        assert np.array_equal(labels.numpy(), np.where(mask, mem.labels[idx], 0)[pick, :Lb])
        for k in eager:  # the compatibility view: everything at once
            assert np.array_equal(padded.tokens[k], eager[k])


def test_scaler_fit_in_chunks_matches_numpy(monkeypatch):
    from cotrr_core.data import scaling

    monkeypatch.setattr(scaling, "CHUNK_ROWS", 7)
    x = np.random.default_rng(0).lognormal(1.0, 2.0, (100, 3)).astype(np.float32)
    for log in (False, True):
        s = scaling.FeatureScaler(log).fit({"a": x})
        x64 = x.astype(np.float64)
        fx = np.sign(x64) * np.log1p(np.abs(x64)) if log else x64
        np.testing.assert_allclose(s.mean_["a"], fx.mean(0), rtol=1e-12)
        np.testing.assert_allclose(s.std_["a"], fx.std(0), rtol=1e-12)


def _bad(tmp_path, mutate, n_queries=60):
    rows = make_step5_rows(n_queries=n_queries, list_len=5)
    mutate(rows)
    return write_jsonl(tmp_path / "bad.jsonl", rows)


@pytest.mark.parametrize("mutate, line, field, words", [
    (lambda r: r[237].update(clip_img_features=[1.0, "x", 2.0, 3.0]), 238, "clip_img_features", "element 1"),
    (lambda r: r[180].update(clip_img_features=[1.0, 2.0]), 181, "clip_img_features", "length 2, expected 4"),
    (lambda r: r[130].update(compliance_score=3.0), 131, "compliance_score", "out of range"),
    (lambda r: r[199].update(candidate_id=r[198]["candidate_id"]), 200, "candidate_id", "duplicate"),
    (lambda r: r[163].update(clip_text_features=[9.0, 9.0, 9.0, 9.0]), 164, "clip_text_features", "differs"),
    (lambda r: r[120].pop("brightness"), 121, "brightness", "missing"),
])
def test_an_error_in_a_later_chunk_names_file_line_and_field(tmp_path, mutate, line, field, words):
    path = _bad(tmp_path, mutate)
    with pytest.raises(DataError) as info:
        stream.cached_splits(path, builtin_spec("step5"))
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), line, field) and words in err.problem
    with pytest.raises(DataError) as whole:  # the whole-file load names the same place
        load_dataset(path)
    assert (whole.value.line, whole.value.field) == (line, field)
    assert not list((tmp_path / "cache").iterdir()), "a failed load leaves no cache entry or temp folder"


def test_malformed_json_in_a_later_chunk(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_step5_rows(n_queries=30, list_len=5))
    lines = path.read_text().splitlines()
    lines[140] = lines[140][:-3]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 141: malformed JSON"):
        stream.cached_splits(path, builtin_spec("step5"))


def test_tiled_writer_equals_the_tiled_frame(tmp_path):
    from cotrr_core.data.demo import generate_demo_frame, tile_demo_frame
    from cotrr_core.data.demo.generate import write_demo_parquet, write_tiled

    frame = generate_demo_frame(n_queries=3, min_candidates=4, max_candidates=5, embed_dim=8)
    write_demo_parquet(tile_demo_frame(frame, 7), tmp_path / "ref.parquet")
    assert write_tiled(frame, 7, tmp_path / "t.parquet", "parquet") == len(tile_demo_frame(frame, 7))
    write_tiled(frame, 7, tmp_path / "t.jsonl", "jsonl")
    ref = load_dataset(tmp_path / "ref.parquet").fingerprint()
    assert load_dataset(tmp_path / "t.parquet").fingerprint() == ref
    assert json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])["query_id"] == "q0001"


def test_streamed_validation_reports_like_the_whole_file_load(tmp_path, monkeypatch):
    from cotrr_core import cli

    rows = make_step5_rows(n_queries=30, list_len=5)
    rows += [dict(rows[0], query_id="lonely", candidate_id="x")]  # a one-candidate list: skipped, counted
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    out = stream.validate_file(path, builtin_spec("step5"))
    whole = load_dataset(path)
    assert str(out["report"]) == str(whole.report) and out["token_dims"] == whole.token_dims
    assert out["relevant_share"] == pytest.approx(float(whole.relevant().mean()))
    monkeypatch.setattr(cli, "STREAM_VALIDATE_BYTES", 0)
    assert cli.main(["validate", str(path)]) == 0
    bad = _bad(tmp_path, lambda r: r[163].update(clip_text_features=[9.0, 9.0, 9.0, 9.0]))
    assert cli.main(["validate", str(bad)]) != 0
    assert not list(tmp_path.glob(".validate-*"))


def test_cached_dataset_is_load_dataset_for_scoring_only_files(tmp_path):
    rows = make_step5_rows(n_queries=12, list_len=6)[::-1]
    for r in rows:
        r.pop("compliance_score")
    rows.append(dict(rows[0], query_id="single", candidate_id="s"))
    path = _parquet(tmp_path / "unlabelled.parquet", rows)
    ref = load_dataset(path, min_candidates=1, require_labels=False)
    got = stream.cached_dataset(path, builtin_spec("step5"), min_candidates=1, require_labels=False)
    _same(ref, got)
    sub = got.subset([2, 0])  # read from the memmap into memory, as float32
    _same(ref.subset([2, 0]), sub)
    assert not isinstance(sub.features["clip_img"], np.memmap)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_raw_features_widen_to_float32_when_a_later_chunk_is_not_float16_exact(tmp_path, fmt):
    rows = make_step5_rows(n_queries=40, list_len=5, seed=4)
    for i, r in enumerate(rows):  # exact in float16 for the first 120 rows, then not
        r["clip_img_features"] = [0.5, -0.25, 1.0, 2.0] if i < 120 else [0.1, -0.3, 1.0, 2.0]
    path = write_jsonl(tmp_path / "d.jsonl", rows) if fmt == "jsonl" else _parquet(tmp_path / "d.parquet", rows)
    ref = _hash_split(load_dataset(path), seed=0)
    got = stream.cached_splits(path, builtin_spec("step5"))
    for s in ref:
        _same(ref[s], got[s])
        assert got[s].features["clip_img"].dtype == np.float32


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_lists_in_file_order_keep_it_across_chunks(tmp_path, fmt):
    rows = make_step5_rows(n_queries=20, list_len=7, seed=1)  # lists of 7 rows straddle chunks of 50
    for i, r in enumerate(rows):
        del r["first_stage_score"]
        r["note"] = f"row {i}"  # an extra column, kept in the same order
    path = write_jsonl(tmp_path / "d.jsonl", rows) if fmt == "jsonl" else _parquet(tmp_path / "d.parquet", rows)
    ref = _hash_split(load_dataset(path), seed=0)
    got = stream.cached_splits(path, builtin_spec("step5"))
    for s in ref:
        assert got[s].report.order_from == "file order"
        _same(ref[s], got[s])
