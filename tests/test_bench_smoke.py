"""bench/quality.py and bench/calibration.py end to end on demo-small with a tiny config (JSON shape only)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightgbm")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = ("original", "lightgbm", "ridge", "cotrr_nn", "cotrr")
HEADLINE = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "c@1", "mrr", "map")


def tiny_config(path: Path) -> Path:
    from cotrr_core.config import RunConfig

    cfg = RunConfig()
    cfg.model.hidden, cfg.model.heads, cfg.model.layers, cfg.model.dropout = 32, 4, 1, 0.1
    cfg.train.epochs, cfg.train.patience, cfg.train.batch_size, cfg.train.warmup_steps = 2, 2, 8, 2
    path.write_text(cfg.to_json())
    return path


@pytest.mark.slow
def test_quality_and_calibration_json_shape(tmp_path):
    from bench import calibration, quality

    cfg = tiny_config(tmp_path / "tiny.json")
    out = tmp_path / "q.json"
    result = quality.main(["--datasets", "demo-small", "--quick", "--seeds", "2", "--peers", "lightgbm,ridge",
                           "--config", str(cfg), "--json", str(out), "--no-results"])
    on_disk = json.loads(out.read_text())
    assert {"demo-small", "machine", "seconds", "commit", "load_average", "command"} <= set(on_disk)
    assert on_disk["seconds"] == result["seconds"]
    sec = on_disk["demo-small"]
    for model in MODELS:
        assert set(HEADLINE) <= set(sec[model]), model
        assert all(0.0 <= sec[model][m] <= 1.0 for m in HEADLINE)
        spread = sec[model]["ndcg@10_spread"]
        assert spread["min"] <= sec[model]["ndcg@10"] <= spread["max"]
    assert len(sec["cotrr"]["ndcg@10_spread"]["seeds"]) == 2 and len(sec["blend_weights"]) == 2
    assert set(sec["blend_weights"]) <= set(quality.BLEND_WEIGHTS) and sec["committee"] == ["lightgbm", "ridge"]
    if sec["blend_weights"] == [0.0, 0.0]:  # the reranker alone was chosen: cotrr is cotrr_nn exactly
        assert sec["cotrr"]["ndcg@10"] == sec["cotrr_nn"]["ndcg@10"]
    assert len(sec["ablation"]["committee_alone_ndcg@10"]["seeds"]) == 2
    assert sec["best_peer"] in ("lightgbm", "ridge") and sec["convention"].startswith("exclude")
    ci = sec["ci"][f"cotrr_vs_{sec['best_peer']}"]
    assert ci["lo"] <= ci["diff"] <= ci["hi"] and ci["n"] == sec["original"]["queries"]

    cal = calibration.main(["--datasets", "demo-small", "--quick", "--seeds", "1", "--mc-samples", "3",
                            "--json", str(tmp_path / "c.json"), "--no-results"])
    sec = json.loads((tmp_path / "c.json").read_text())["demo-small"]
    for c in ("uncalibrated", "temperature", "platt", "isotonic"):
        assert set(sec[c]) == {"ece", "adaptive_ece", "mce", "brier", "log_loss"}
    assert sec["selected"] in ("temperature", "platt", "isotonic")
    assert sec["selected"] == min(sec["cal"], key=lambda m: (round(sec["cal"][m]["ece"], 6),
                                                            ("temperature", "platt", "isotonic").index(m)))
    assert {"aurc", "random_aurc"} <= set(sec["uncertainty"]) and cal["machine"]
    assert sec["fit_splits"] == ["cal", "val"]


def test_files_benchmark_splits_val_into_val_and_cal(tmp_path):
    from bench.common import files_benchmark

    rows = []
    for q in range(20):
        for d in range(5):
            feats = " ".join(f"{i}:{(q * 7 + d * 3 + i) % 10 / 10:.2f}" for i in range(1, 6))
            rows.append(f"{int(d == 0) * 2} qid:{q} {feats}")
    f = tmp_path / "t.txt"
    f.write_text("\n".join(rows) + "\n")
    bench = files_benchmark(str(f), str(f), str(f))
    assert set(bench.splits) == {"train", "val", "cal", "test"}
    assert bench.splits["val"].num_queries + bench.splits["cal"].num_queries == 20
    assert not set(bench.splits["val"].query_ids) & set(bench.splits["cal"].query_ids)
