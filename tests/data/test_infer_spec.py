"""Spec inference (data/infer.py) and FeatureSpec.similarity."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cotrr_core.config import ConfigError
from cotrr_core.data import DataError, FeatureSpec, builtin_spec, load_dataset
from cotrr_core.data.infer import infer_spec, resolve_spec, spec_sidecar
from cotrr_core.data.stream import cached_splits
from tests.data.clip_file import clip_rows, write_clip_jsonl


def test_clip_only_file_gets_a_token_per_vector_and_the_first_stage(tmp_path):
    spec = load_dataset(write_clip_jsonl(tmp_path / "c.jsonl")).spec
    tokens = {t.name: t for t in spec.tokens}
    assert list(tokens) == ["clip_img", "clip_text", "first_stage"]
    assert tokens["clip_img"].dim == 16 and not tokens["clip_img"].list_constant
    assert tokens["clip_text"].dim == 16 and tokens["clip_text"].list_constant
    assert tokens["first_stage"].fields == ("first_stage_score",)
    assert spec.similarity == ("clip_text", "clip_img")
    assert (spec.label_field, spec.relevance_threshold) == ("compliance_score", 0.8)


def test_scalars_grade_label_and_text_extras(tmp_path):
    rows = [{"query_id": f"q{i // 4}", "candidate_id": str(i), "label": i % 3, "b_score": i * 0.5, "a_len": i,
             "emb": [float(i), 1.0], "title": f"t{i}", "first_stage_rank": i % 4 + 1} for i in range(16)]
    spec = infer_spec(pd.DataFrame(rows), "f.jsonl")
    assert [(t.name, t.fields) for t in spec.tokens] == [("emb", ("emb",)), ("scalars", ("a_len", "b_score"))]
    assert (spec.label_field, spec.relevance_threshold, spec.label_max) == ("label", 1.0, 24.0)
    assert spec.similarity is None
    path = tmp_path / "f.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_dataset(path)
    assert "title" in data.extras.columns and "a_len" not in data.extras.columns  # text: kept, never a feature


def test_all_step5_fields_keep_the_builtin_spec(tmp_path):
    from tests.conftest import make_step5_rows

    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_step5_rows(4, 3)))
    assert load_dataset(path).spec == builtin_spec("step5")


def test_no_label_is_one_error_naming_the_line(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "compliance_score"}) + "\n"
                            for r in clip_rows(3, 3)))
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert info.value.line == 1 and "label" in str(info.value)


def test_whole_file_and_streamed_cache_agree(tmp_path, monkeypatch):
    """The same spec, splits and fingerprints whichever loader reads the file; the spec is in the cache key."""
    from cotrr_core.data.benchmarks import load_benchmark

    path = write_clip_jsonl(tmp_path / "c.jsonl")
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))
    streamed = load_benchmark(str(path))
    monkeypatch.setenv("COTRR_CACHE", "off")
    whole = load_benchmark(str(path))
    assert streamed.spec == whole.spec == resolve_spec(path, "jsonl", str(path))
    for split in ("train", "val", "cal", "test"):
        assert streamed.splits[split].fingerprint() == whole.splits[split].fingerprint()
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))
    other = FeatureSpec.from_dict({**streamed.spec.to_dict(), "relevance_threshold": 0.5})
    cached_splits(path, other, name=str(path))
    assert len(list((tmp_path / "cache").iterdir())) == 2  # another spec, another cache entry


def test_one_field_scalar_token_streams_on_both_readers(tmp_path, monkeypatch):
    """first_stage_score is a one-field scalar token: the fast JSONL reader keeps it (no fallback) and the
    precise one reads it as a number in every chunk (its second chunk once took it for a vector); both
    build the splits the whole-file loader builds."""
    from cotrr_core.data import stream
    from cotrr_core.data.benchmarks import load_benchmark

    path = write_clip_jsonl(tmp_path / "c.jsonl")
    monkeypatch.setattr(stream, "CHUNK_ROWS", 64)  # the precise reader's chunks: 8 rows
    monkeypatch.setenv("COTRR_CACHE", "off")
    whole = load_benchmark(str(path))
    build, paths = stream._build, []

    def spy(*args, fast=False, **kwargs):
        paths.append(fast)
        return build(*args, fast=fast, **kwargs)

    monkeypatch.setattr(stream, "_build", spy)
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "fast"))
    fast = load_benchmark(str(path))
    assert paths == [True]
    monkeypatch.setattr(stream, "_build_checked", lambda p, fmt, spec, *a, **k: spy(p, fmt, spec, *a, **k))
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "precise"))
    precise = load_benchmark(str(path))
    assert paths == [True, False]
    for split in ("train", "val", "cal", "test"):
        assert fast.splits[split].fingerprint() == precise.splits[split].fingerprint() \
            == whole.splits[split].fingerprint()


def test_csv_and_parquet_infer_the_same_spec(tmp_path):
    rows = clip_rows(6, 4)
    frame = pd.DataFrame(rows)
    frame.to_parquet(tmp_path / "c.parquet")
    csv = frame.assign(**{c: frame[c].map(json.dumps) for c in ("clip_img_features", "clip_text_features")})
    csv.to_csv(tmp_path / "c.csv", index=False)
    jsonl = write_clip_jsonl(tmp_path / "c.jsonl", queries=6, candidates=4)
    specs = [load_dataset(p).spec.to_dict() for p in (jsonl, tmp_path / "c.csv", tmp_path / "c.parquet")]
    for s in specs:
        s.pop("name")
    assert specs[0] == specs[1] == specs[2]


def test_sidecar_spec_wins(tmp_path):
    path = write_clip_jsonl(tmp_path / "c.jsonl")
    chosen = infer_spec(pd.DataFrame(clip_rows(2, 3)), "c.jsonl", features=["clip_img_features"],
                        label_field="compliance_score", relevance_threshold=0.9)
    spec_sidecar(path).write_text(json.dumps(chosen.to_dict()))
    assert load_dataset(path).spec == chosen and chosen.token_names == ["clip_img"]


def test_similarity_round_trip_and_checks():
    spec = infer_spec(pd.DataFrame(clip_rows(2, 3)), "c.jsonl")
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    raw = spec.to_dict()
    for bad, msg in ((dict(query="clip_img", candidate="clip_text"), "list_constant"),
                     (dict(query="clip_text", candidate="nope"), "no token"),
                     (dict(query="clip_text", candidate="first_stage"), "vector field"),
                     (dict(query="clip_text"), "similarity")):
        with pytest.raises(ConfigError, match=msg):
            FeatureSpec.from_dict({**raw, "similarity": bad})
    with pytest.raises(ConfigError, match="unknown key"):
        FeatureSpec.from_dict({**raw, "simlarity": {}})
    assert "similarity" not in builtin_spec("step5").to_dict()


def test_saved_upload_spec_is_validated_in_the_child_first(tmp_path):
    from cotrr_core.data.uploads import save_upload_spec

    path = write_clip_jsonl(tmp_path / "c.jsonl")
    spec = load_dataset(path).spec
    raw = spec.to_dict()
    wrong = FeatureSpec.from_dict({**raw, "similarity": None, "tokens": [
        {**t, "list_constant": True} if t["name"] == "clip_img" else t for t in raw["tokens"]]})
    with pytest.raises(DataError, match="identical for every candidate"):
        save_upload_spec(path, wrong)
    assert not spec_sidecar(path).exists()
    assert "kept 60 queries" in save_upload_spec(path, spec)
    assert FeatureSpec.load(spec_sidecar(path)) == spec


@pytest.mark.parametrize("row", [[1.0, 2, -3.5], [0.5, True], [True, False], [1, "2"], [[1.0], [2.0]], [], (1.5, 2.5),
                                 [np.float32(1.5), np.int64(2)], [np.bool_(True)], [1.0, None], "1 2"])
def test_numeric_rows_as_the_element_by_element_rule(row):
    """Inference's fast numeric-row check agrees with the rule it replaces: a non-empty flat sequence of
    numbers, booleans excluded."""
    from cotrr_core.data.infer import _is_number, _numeric_row

    expected = isinstance(row, (list, tuple)) and len(row) > 0 and all(_is_number(x) for x in row)
    got = _numeric_row(row)
    assert (got is not None) == expected
    if expected:
        assert got.dtype == np.float64 and got.tolist() == [float(x) for x in row]


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2.5}', '{"x": NaN}', '{"x": 1e400}', '{"x": 123456789012345678901234567890}',
                                  '{"x": [1, -0.0, true, null, "s"]}'])
def test_head_lines_parse_as_the_standard_library(text):
    import json

    from cotrr_core.data.infer import _loads

    got, want = _loads(text), json.loads(text)
    assert json.dumps(got) == json.dumps(want)


def test_a_vector_field_turning_scalar_in_a_later_chunk_is_one_precise_error(tmp_path, monkeypatch):
    from cotrr_core.data import stream
    from cotrr_core.data.benchmarks import load_benchmark

    rows = clip_rows(queries=6)
    for r in rows[40:]:
        r["clip_img_features"] = 0.5
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(stream, "CHUNK_ROWS", 64)  # the precise reader's chunks: 8 rows
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))
    spec = load_dataset(write_clip_jsonl(tmp_path / "ok.jsonl", queries=2)).spec.to_dict()
    spec.pop("similarity")
    spec["tokens"][0].pop("dim")  # clip_img: a vector known only from the file's first chunk
    with pytest.raises(DataError) as info:
        load_benchmark(str(path), spec=FeatureSpec.from_dict(spec))
    assert info.value.line == 41 and "clip_img_features" in str(info.value)


def test_an_unchanged_file_is_inferred_once(tmp_path, monkeypatch):
    """resolve_spec remembers a file's inferred spec while its size and mtime hold; a changed file, or a
    sidecar written since, wins."""
    import os

    from cotrr_core.data import infer

    path = write_clip_jsonl(tmp_path / "c.jsonl", queries=4)
    reads = []
    real = infer.read_head
    monkeypatch.setattr(infer, "read_head", lambda *a: reads.append(a) or real(*a))
    first = resolve_spec(path, "jsonl", str(path))
    assert resolve_spec(path, "jsonl", str(path)) == first and len(reads) == 1
    rows = clip_rows(queries=4)
    for r in rows:
        r["extra_score"] = 1.5
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    changed = resolve_spec(path, "jsonl", str(path))
    assert len(reads) == 2 and [t.name for t in changed.tokens] == ["clip_img", "clip_text", "scalars", "first_stage"]
    spec_sidecar(path).write_text(json.dumps(first.to_dict()))
    assert resolve_spec(path, "jsonl", str(path)) == first and len(reads) == 2
