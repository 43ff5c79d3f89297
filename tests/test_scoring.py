"""A run reloaded from disk scores exactly as the model that training evaluated."""
from __future__ import annotations

from cotrr_core.artifacts import load_run
from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.evaluation.compare import evaluate_scores
from cotrr_core.scoring import score_data
from cotrr_core.training.trainer import fit
from tests.training.test_trainer import tiny_config


def test_reloaded_run_reproduces_the_recorded_test_metrics(tmp_path):
    # demo-small's spec order (clip_img, clip_text, visual, conflict) is not config.json's sorted order
    bench = load_benchmark("demo-small")
    metrics = fit(bench, tiny_config(epochs=1), tmp_path, calibrate=False)
    run = load_run(tmp_path, device="cpu")
    assert list(run.model.encoder.names) == [t.name for t in bench.spec.tokens]
    rescored = evaluate_scores(bench.splits["test"], score_data(run, bench.splits["test"]))
    assert rescored["ndcg@10"] == metrics["test"]["cotrr"]["ndcg@10"]
