"""train's blend (training/blend.py): fitted on the same splits, chosen on validation, stored without pickles,
and what metrics.json reports is what the Reranker serves."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cotrr_core.artifacts import load_run
from cotrr_core.config import RunConfig
from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.evaluation.compare import evaluate_scores
from cotrr_core.scoring import score_data
from cotrr_core.training.blend import BLEND_WEIGHTS
from cotrr_core.training.trainer import fit
from tests.conftest import make_step5_rows, write_jsonl

pytest.importorskip("lightgbm")


def weak_network_config(blend: str = "auto") -> RunConfig:
    """One epoch of a tiny network: on the synthetic data (labels a smooth function of two conflict features)
    the trees win on validation, so the run blends."""
    cfg = RunConfig()
    cfg.model.hidden, cfg.model.heads, cfg.model.layers, cfg.model.dropout = 16, 2, 1, 0.1
    cfg.train.epochs, cfg.train.batch_size, cfg.train.warmup_steps = 1, 16, 1
    cfg.train.guard, cfg.train.blend = False, blend
    return cfg


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("blend") / "syn.jsonl", make_step5_rows(n_queries=120, list_len=10))
    return load_benchmark(str(path))


@pytest.fixture(scope="module")
def blended(bench, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("blended_run")
    metrics = fit(bench, weak_network_config(), run_dir)
    return run_dir, metrics


def _reference_committee(run_dir, data) -> np.ndarray:
    """The committee's z-score [N] rebuilt from the stored files with lightgbm and numpy directly."""
    import lightgbm as lgb

    from cotrr_core.evaluation.baselines import FeatureBuilder

    info = json.loads((run_dir / "blend.json").read_text())
    x = FeatureBuilder.from_state(info["features"]).transform(data).astype(np.float64)
    booster = lgb.Booster(model_file=str(run_dir / "lightgbm.txt"))
    r = info["ridge"]
    xr = np.sign(x) * np.log1p(np.abs(x)) if r["log1p"] else x
    raw = {"lightgbm": booster.predict(x),
           "ridge": ((xr - np.array(r["mean"])) / np.array(r["scale"])) @ np.array(r["coef"]) + r["intercept"]}
    z = info["z"]
    mean = np.mean([(raw[p] - z[p][0]) / z[p][1] for p in ("lightgbm", "ridge")], axis=0)
    return (mean - z["committee"][0]) / z["committee"][1]


def test_blend_is_chosen_on_validation_and_stored_without_pickles(blended, bench):
    run_dir, metrics = blended
    info = json.loads((run_dir / "blend.json").read_text())
    assert info["weight"] > 0, "precondition: the trees help a one-epoch network on this data"
    assert info["parts"] == ["network", "lightgbm", "ridge"] and metrics["blend"]["weight"] == info["weight"]
    assert (run_dir / "lightgbm.txt").read_text().startswith("tree")  # LightGBM's own text format
    assert not list(run_dir.glob("*.pkl")) and not list(run_dir.glob("*.joblib"))
    # the weight is the best of the tried ones on val, recomputed here from the stored parts
    val = bench.splits["val"]
    run = load_run(run_dir, device="cpu")
    network = score_data(dataclasses.replace(run, blend=None), val)
    zn = (network - info["z"]["network"][0]) / info["z"]["network"][1]
    committee = _reference_committee(run_dir, val)
    tried = {w: evaluate_scores(val, zn + w * committee)["ndcg@10"] for w in BLEND_WEIGHTS}
    assert tried[info["weight"]] == pytest.approx(max(tried.values()), abs=1e-9)
    assert info["val_ndcg@10"]["blend"] == pytest.approx(tried[info["weight"]], abs=1e-6)
    assert info["val_ndcg@10"]["blend"] >= info["val_ndcg@10"]["network"]
    # z statistics are validation's own
    assert info["z"]["network"][0] == pytest.approx(network.mean(), rel=1e-5, abs=1e-6)


def test_served_score_is_the_blend_and_test_metrics_use_it(blended, bench):
    run_dir, metrics = blended
    test = bench.splits["test"]
    run = load_run(run_dir, device="cpu")
    assert run.blend is not None
    network = score_data(dataclasses.replace(run, blend=None), test)
    info = json.loads((run_dir / "blend.json").read_text())
    expected = (network - info["z"]["network"][0]) / info["z"]["network"][1] \
        + info["weight"] * _reference_committee(run_dir, test)
    np.testing.assert_allclose(score_data(run, test), expected, rtol=1e-5, atol=1e-5)
    assert metrics["test"]["cotrr"]["ndcg@10"] == pytest.approx(evaluate_scores(test, expected)["ndcg@10"], abs=1e-9)
    assert metrics["test"]["network"]["ndcg@10"] == pytest.approx(evaluate_scores(test, network)["ndcg@10"], abs=1e-9)


def test_calibrator_is_fitted_on_the_blended_score(blended, bench):
    run_dir, metrics = blended
    run = load_run(run_dir, device="cpu")
    test = bench.splits["test"]
    y = test.relevant().astype(float)
    p = run.probabilities(score_data(run, test))
    brier = float(np.mean((p - y) ** 2))
    cal = metrics["calibration"]
    assert cal["table"][cal["method"]]["brier"] == pytest.approx(brier, abs=1e-6)


def test_no_blend_when_off_or_when_val_is_train(bench, tmp_path):
    off = tmp_path / "off"
    fit(bench, weak_network_config("off"), off, calibrate=False)
    assert not (off / "blend.json").exists() and load_run(off, device="cpu").blend is None
    same = dataclasses.replace(bench, splits={**bench.splits, "val": bench.splits["train"]})
    tiny = tmp_path / "tiny"
    fit(same, weak_network_config(), tiny, calibrate=False)
    info = json.loads((tiny / "blend.json").read_text())
    assert info["kind"] == "network" and "training split" in info["why"]
    assert load_run(tiny, device="cpu").blend is None and not (tiny / "lightgbm.txt").exists()


def test_feature_rows_from_tokens_match_the_split_features(bench):
    from cotrr_core.evaluation.baselines import FeatureBuilder
    from cotrr_core.evaluation.peers import RidgeRanker, ridge_scores

    train, val = bench.splits["train"], bench.splits["val"]
    fb = FeatureBuilder().fit(train)
    np.testing.assert_array_equal(fb.transform_tokens(val.features), fb.transform(val))
    again = FeatureBuilder.from_state(json.loads(json.dumps(fb.to_state())))
    np.testing.assert_array_equal(again.transform_tokens(val.features), fb.transform(val))
    ridge = RidgeRanker(grid={"alpha": (1.0,), "log1p": (True,)}).fit(train, val)
    np.testing.assert_allclose(ridge_scores(ridge.to_state(), fb.transform(val)), ridge.predict(val),
                               rtol=1e-4, atol=1e-4)
