"""LightGBM lambdarank baseline: learns a synthetic task, predicts per candidate, saves as text."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lightgbm")

from cotrr_core.data.benchmarks import load_benchmark  # noqa: E402
from cotrr_core.evaluation.baselines import FeatureBuilder, LightGBMRanker  # noqa: E402
from cotrr_core.evaluation.compare import evaluate_scores  # noqa: E402

GRID = {"num_leaves": (7,), "learning_rate": (0.1,), "min_data_in_leaf": (5, 20)}


@pytest.fixture(scope="module")
def bench(synthetic_file):
    return load_benchmark(str(synthetic_file))


@pytest.fixture(scope="module")
def ranker(bench):
    return LightGBMRanker(grid=GRID, n_estimators=100, early_stopping_rounds=20).fit(
        bench.splits["train"], bench.splits["val"])


def test_beats_random_and_predicts_one_score_per_candidate(bench, ranker):
    test = bench.splits["test"]
    scores = ranker.predict(test)
    assert scores.shape == (test.num_candidates,) and np.isfinite(scores).all()
    rng = np.random.default_rng(0)
    random = np.mean([evaluate_scores(test, rng.normal(size=test.num_candidates))["ndcg@10"] for _ in range(10)])
    assert evaluate_scores(test, scores)["ndcg@10"] > random + 0.05
    # the grid was searched and the choice recorded, selected on validation
    assert len(ranker.search_) == 2 and ranker.best_params_["num_boost_round"] >= 1
    best = max(ranker.search_, key=lambda r: r["val_ndcg@10"])
    assert best["min_data_in_leaf"] == ranker.best_params_["min_data_in_leaf"]


def test_features_are_the_same_tokens(bench):
    train = bench.splits["train"]
    fb = FeatureBuilder(clip="raw").fit(train)
    assert fb.transform(train).shape == (train.num_candidates, sum(train.token_dims.values()))
    # the synthetic CLIP vectors are 4-d, narrower than `wide`: kept raw, no cosine/PCA
    assert FeatureBuilder().fit(train).transform(train).shape[1] == sum(train.token_dims.values())
    fb = FeatureBuilder(wide=4, pca_dims=2).fit(train)  # 4-d CLIP vectors: PCA(2) each + their cosine
    x = fb.transform(train)
    assert x.shape[1] == 2 + 2 + 2 + 2 + 1 and "clip_img_pc1" in fb.names_
    assert np.abs(x[:, -1]).max() <= 1.0 + 1e-6


def test_save_is_lightgbm_text_and_round_trips(bench, ranker, tmp_path):
    path = ranker.save(tmp_path / "lgb.txt")
    assert path.read_text().startswith("tree")  # LightGBM's own text model format, not a pickle
    again = LightGBMRanker.load(path)
    test = bench.splits["test"]
    np.testing.assert_allclose(again.predict(test), ranker.predict(test))
    assert ranker.to_state()["format"] == "lightgbm-text"


def test_integer_grades_are_used_as_is():
    from cotrr_core.evaluation.baselines import _int_labels

    y, gain, scale = _int_labels(np.array([0, 1, 2, 0], dtype=np.float32), 21)
    assert gain is None and scale == 1.0 and y.tolist() == [0, 1, 2, 0]
    y, gain, scale = _int_labels(np.array([0.0, 0.5, 1.0]), 21)
    assert y.tolist() == [0, 10, 20] and gain[20] == pytest.approx(1.0) and gain[10] == pytest.approx(2 ** 0.5 - 1)
