"""Tests of the built-in demo benchmark generator (cotrr_core.data.demo)."""
from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest

from cotrr_core.data.demo import (
    COLUMNS,
    SIZES,
    demo_cache_path,
    generate_demo_frame,
    read_demo_frame,
    render_candidate_image,
    write_demo_jsonl,
)
from cotrr_core.data.demo import generate as demo
from cotrr_core.data.demo.catalogue import CATALOGUE
from cotrr_core.data.demo.features import (
    CONFLICT_COLUMNS,
    VISUAL_COLUMNS,
    ciede2000,
    conflict_features,
    rgb_to_lab,
    visual_features,
)

TINY = dict(n_queries=8, min_candidates=10, max_candidates=14, embed_dim=64)

# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula", Table 1 (pairs 1, 7, 13, 17, 25, 34).
SHARMA_PAIRS = [
    ((50.0000, 2.6772, -79.7751), (50.0000, 0.0000, -82.7485), 2.0425),
    ((50.0000, 0.0000, 0.0000), (50.0000, -1.0000, 2.0000), 2.3669),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0009), 7.1792),
    ((50.0000, 2.5000, 0.0000), (73.0000, 25.0000, -18.0000), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return generate_demo_frame(**SIZES["small"], embed_dim=128)


@pytest.fixture(scope="module")
def tiny() -> pd.DataFrame:
    return generate_demo_frame(**TINY)


def _spec(**overrides) -> dict:
    c = CATALOGUE[0]  # negroni: red, clear, on the rocks, orange peel
    spec = dict(cocktail=c.name, liquid_rgb=list(c.rgb), clarity=c.clarity, temperature=c.temperature,
                glass=c.glass, garnish=c.garnish, background_rgb=[205, 195, 180], fill=0.75, scale=0.95,
                dx=0.0, dy=0.0, noise_std=3.0, size=64, seed=7)
    return {**spec, **overrides}


def test_same_seed_same_frame_and_other_seed_differs(tiny):
    again = generate_demo_frame(**TINY)
    pd.testing.assert_frame_equal(tiny.drop(columns=list(demo.VECTOR_COLUMNS)),
                                  again.drop(columns=list(demo.VECTOR_COLUMNS)))
    for col in demo.VECTOR_COLUMNS:
        assert np.array_equal(np.stack(tiny[col]), np.stack(again[col]))
    other = generate_demo_frame(**{**TINY, "seed": 1})
    assert not tiny["query"].equals(other["query"]) or not tiny["first_stage_score"].equals(other["first_stage_score"])


def test_column_contract_and_types(tiny):
    assert list(tiny.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert tiny["query_id"].iloc[0] == "q0001"
    assert all(c.startswith(q + "_c") for q, c in zip(tiny["query_id"], tiny["candidate_id"]))
    assert not tiny.duplicated(["query_id", "candidate_id"]).any()
    assert (tiny["image"] == "demo://" + tiny["candidate_id"]).all()
    for col in demo.VECTOR_COLUMNS:
        assert all(v.dtype == np.float32 and v.shape == (64,) for v in tiny[col])
    for spec in tiny["render_spec"]:
        assert {"cocktail", "liquid_rgb", "glass", "garnish", "seed"} <= set(json.loads(spec))


def test_rows_grouped_in_rank_order(tiny):
    assert tiny["query_id"].is_monotonic_increasing
    for _, g in tiny.groupby("query_id"):
        assert list(g["first_stage_rank"]) == list(range(1, len(g) + 1))
        assert g["first_stage_score"].is_monotonic_decreasing
        assert TINY["min_candidates"] <= len(g) <= TINY["max_candidates"]


def test_value_ranges_and_no_nan(small):
    numeric = ["compliance_score", "first_stage_score", *VISUAL_COLUMNS, *CONFLICT_COLUMNS]
    assert not small[numeric].isna().any().any()
    assert small["compliance_score"].between(0, 1).all()
    for col in ("subject_ratio", "object_area", "brightness", "saturation", "hue_variance", "edge_density",
                "temperature_conflict", "clarity_conflict", "garnish_mismatch", "overall_conflict_prob"):
        assert small[col].between(0, 1).all(), col
    assert (small["color_delta_e"] >= 0).all() and (small["aspect_ratio"] >= 0).all()


def test_text_embedding_shared_within_query(small):
    for _, g in small.groupby("query_id"):
        first = g["clip_text_features"].iloc[0]
        assert all(np.array_equal(first, v) for v in g["clip_text_features"])
    norms = np.linalg.norm(np.stack(small["clip_img_features"]), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4)


def test_default_embedding_dimension():
    assert inspect.signature(generate_demo_frame).parameters["embed_dim"].default == 1024


def test_render_is_deterministic_image():
    a, b = render_candidate_image(_spec()), render_candidate_image(_spec())
    assert a.mode == "RGB" and a.size == (64, 64)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(render_candidate_image(_spec(seed=8))))


def test_visual_features_recomputed_from_pixels():
    img = np.asarray(render_candidate_image(_spec()))
    feats = visual_features(img)
    luma = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
    assert feats["brightness"] == pytest.approx(luma.mean() / 255, abs=1e-4)
    assert feats["contrast"] == pytest.approx(luma.std() / 255, abs=1e-4)
    border = np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).astype(float), 0)
    subject = np.sqrt(((img - border) ** 2).sum(-1)) > 35
    assert feats["subject_ratio"] == pytest.approx(subject.mean())
    tall = visual_features(np.asarray(render_candidate_image(_spec(glass="collins"))))
    assert tall["aspect_ratio"] > feats["aspect_ratio"]  # a collins glass is taller than a rocks glass


def test_conflicts_follow_the_pixels():
    expected = {"colour": CATALOGUE[0].rgb, "clarity": "clear", "temperature": "rocks", "garnish": "orange_peel"}

    def conflicts(**overrides) -> dict:
        img = np.asarray(render_candidate_image(_spec(**overrides)))
        return conflict_features(img, expected, np.random.default_rng(0))

    base = conflicts()
    assert base["color_delta_e"] < 8 and base["overall_conflict_prob"] < 0.3
    assert conflicts(liquid_rgb=[60, 140, 60])["color_delta_e"] > 25
    assert conflicts(temperature="up")["temperature_conflict"] > 0.7  # no ice seen
    assert conflicts(clarity="cloudy")["clarity_conflict"] > 0.7
    assert conflicts(garnish="olive")["garnish_mismatch"] > 0.7
    assert conflicts(liquid_rgb=[60, 140, 60])["overall_conflict_prob"] > base["overall_conflict_prob"]


def test_ciede2000_matches_sharma_pairs():
    lab1 = np.array([p[0] for p in SHARMA_PAIRS])
    lab2 = np.array([p[1] for p in SHARMA_PAIRS])
    want = np.array([p[2] for p in SHARMA_PAIRS])
    assert np.allclose(ciede2000(lab1, lab2), want, atol=1e-4)
    assert np.allclose(ciede2000(lab2, lab1), want, atol=1e-4)  # symmetric


def test_rgb_to_lab_reference_points():
    assert np.allclose(rgb_to_lab(np.array([255, 255, 255])), [100, 0, 0], atol=1e-3)
    assert np.allclose(rgb_to_lab(np.array([255, 0, 0])), [53.2408, 80.0925, 67.2032], atol=1e-3)


def test_small_generation_stats(small):
    groups = [g for _, g in small.groupby("query_id")]
    relevant = [(g["compliance_score"] >= 0.8).to_numpy() for g in groups]
    assert np.mean([r.any() for r in relevant]) > 0.9
    assert np.mean([(~r).sum() >= 3 for r in relevant]) > 0.9
    top1 = np.mean([r[0] for r in relevant])
    assert 0.2 < top1 < 0.85  # the first stage is good but leaves room for a reranker
    kinds = set(small["candidate_kind"])
    assert {"exact", "similar", "distractor"} <= kinds and any(k.startswith("wrong_") for k in kinds)
    assert small.loc[small["candidate_kind"] == "distractor", "compliance_score"].max() < 0.5


def test_cache_is_atomic_and_reused(tmp_path, monkeypatch):
    monkeypatch.setitem(SIZES, "unit", TINY)
    path = demo_cache_path("unit", root=tmp_path)
    assert path == tmp_path / "artifacts" / "datasets" / "demo_unit_v1.parquet" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    stamp = path.stat().st_mtime_ns
    monkeypatch.setattr(demo, "generate_demo_frame", lambda **kw: pytest.fail("cache not reused"))
    assert demo_cache_path("unit", root=tmp_path) == path and path.stat().st_mtime_ns == stamp
    back = read_demo_frame(path)
    assert list(back.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert back["clip_img_features"].iloc[0].dtype == np.float32


def test_cache_roundtrip_values(tmp_path, tiny):
    path = tmp_path / "d.parquet"
    demo.write_demo_parquet(tiny, path)
    back = read_demo_frame(path)
    pd.testing.assert_frame_equal(back.drop(columns=list(demo.VECTOR_COLUMNS)),
                                  tiny.drop(columns=list(demo.VECTOR_COLUMNS)), check_dtype=False)
    for col in demo.VECTOR_COLUMNS:
        assert np.allclose(np.stack(back[col]), np.stack(tiny[col]), atol=2e-3)


def test_unknown_size_rejected(tmp_path):
    with pytest.raises(KeyError):
        demo_cache_path("huge", root=tmp_path)


def test_write_jsonl(tmp_path, tiny):
    path = tmp_path / "step5.jsonl"
    write_demo_jsonl(tiny, path)
    lines = path.read_text().splitlines()
    assert len(lines) == len(tiny)
    row = json.loads(lines[0])
    assert row["candidate_id"] == tiny["candidate_id"].iloc[0]
    assert len(row["clip_text_features"]) == 64 and isinstance(row["clip_text_features"][0], float)
    assert row["compliance_score"] == round(float(tiny["compliance_score"].iloc[0]), 6)
