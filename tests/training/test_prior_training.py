"""Training with a first-stage prior: the bank, the choices on validation, what is served, and the
flickr8k-dev benchmark (real CLIP embeddings, from ../shared/datasets)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from cotrr_core.config import RunConfig
from cotrr_core.data.benchmarks import load_benchmark, shared_datasets_dir
from cotrr_core.data.spec import FeatureSpec
from tests.conftest import write_jsonl

SPEC = {"name": "pair", "format": "step5", "label_field": "compliance_score", "relevance_threshold": 0.8,
        "tokens": [{"name": "img", "fields": ["img"], "dim": 8},
                   {"name": "text", "fields": ["text"], "dim": 8, "list_constant": True},
                   {"name": "first_stage", "fields": ["first_stage_score"]}],
        "similarity": {"query": "text", "candidate": "img"}}


def _rows(n_queries=150, list_len=8, perfect_first_stage=False, seed=0):
    """One relevant image per query near its text; two hub images near every query compete with it."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=8)
    hubs = [centre + rng.normal(scale=0.3, size=8) for _ in range(2)]
    rows = []
    for q in range(n_queries):
        text = centre + rng.normal(size=8)
        images = [text + rng.normal(scale=1.2, size=8)] + hubs + [rng.normal(size=8) * 2 for _ in range(list_len - 3)]
        cos = [float(np.dot(text, im) / np.linalg.norm(text) / np.linalg.norm(im)) for im in images]
        order = np.argsort([-1.0] + [0.0] * (list_len - 1)) if perfect_first_stage else np.argsort(-np.array(cos))
        for rank, c in enumerate(order):
            rows.append({"query_id": f"q{q}", "candidate_id": f"q{q}_c{c}", "compliance_score": float(c == 0),
                         "first_stage_rank": rank + 1, "first_stage_score": cos[c],
                         "img": images[c].round(5).tolist(), "text": text.round(5).tolist()})
    return rows


def _fit(tmp_path, rows, name):
    from cotrr_core.training.trainer import fit

    path = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    bench = load_benchmark(str(path), spec=FeatureSpec.from_dict(SPEC))
    cfg = RunConfig()
    cfg.model.hidden, cfg.model.heads, cfg.model.layers = 32, 4, 1
    cfg.train.epochs, cfg.calibration.mc_samples = 3, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = fit(bench, cfg, tmp_path / name)
    return bench, metrics


def test_a_run_serves_its_best_mode_on_validation_and_the_reranker_serves_it(tmp_path):
    from cotrr_core.scoring import score_data
    from cotrr_core.serving.reranker import Reranker

    bench, metrics = _fit(tmp_path, _rows(), "hubs")
    ranker = metrics["ranker"]
    assert ranker["prior"] == "similarity" and ranker["bank_size"] == bench.splits["train"].num_queries
    assert set(ranker["val_ndcg@10"]) == {"network", "prior", "first_stage"}
    assert ranker["val_ndcg@10"][ranker["mode"]] == max(ranker["val_ndcg@10"].values())
    saved = json.loads((tmp_path / "hubs" / "metrics.json").read_text())["ranker"]
    assert saved["mode"] == ranker["mode"]
    rr = Reranker.load(tmp_path / "hubs", device="cpu")
    assert rr.run.model.prior.mode_name == ranker["mode"]
    assert not bool(rr.run.model.prior.similarity.exclude_positives)  # served: the whole bank
    test = bench.splits["test"]
    offline = score_data(rr.run, test)
    served = rr.predict({k: np.asarray(v) for k, v in test.features.items()}, test.offsets)
    np.testing.assert_allclose(served, offline, rtol=1e-4, atol=1e-4)


def test_a_run_keeps_the_first_stage_order_when_nothing_beats_it(tmp_path):
    _, metrics = _fit(tmp_path, _rows(perfect_first_stage=True), "perfect")
    assert metrics["ranker"]["mode"] == "first_stage"
    assert metrics["test"]["cotrr"]["ndcg@10"] == pytest.approx(metrics["test"]["original"]["ndcg@10"])
    assert "keeps the first-stage order" in (tmp_path / "perfect" / "log.txt").read_text()


FLICKR = shared_datasets_dir() / "flickr8k_clip_dev"


@pytest.mark.skipif(not FLICKR.exists(), reason="needs ../shared/datasets/flickr8k_clip_dev")
def test_flickr8k_dev_is_the_task_its_source_describes():
    bench = load_benchmark("flickr8k-dev")
    splits = bench.splits
    assert sum(d.num_queries for d in splits.values()) == 1000
    assert sum(int(d.relevant().sum()) for d in splits.values()) == 938  # SOURCE.md: 938 of 1000 in the top 20
    assert set(splits["train"].query_ids).isdisjoint(splits["test"].query_ids)
    assert bench.spec.similarity == ("clip_text", "clip_img")
    assert all((d.list_lengths == 20).all() for d in splits.values())


@pytest.mark.slow
@pytest.mark.skipif(not FLICKR.exists(), reason="needs ../shared/datasets/flickr8k_clip_dev")
def test_train_on_flickr8k_dev_beats_the_clip_order(tmp_path):
    from cotrr_core.training.recipe import auto_config
    from cotrr_core.training.trainer import fit

    bench = load_benchmark("flickr8k-dev")
    cfg, _ = auto_config(bench.splits["train"])
    metrics = fit(bench, cfg, tmp_path / "f", calibrate=False)
    assert metrics["ranker"]["mode"] != "first_stage"
    assert metrics["test"]["cotrr"]["ndcg@10"] > metrics["test"]["original"]["ndcg@10"] + 0.02
