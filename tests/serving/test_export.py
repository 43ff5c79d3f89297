"""ONNX export: onnxruntime reproduces PyTorch's scores on a real padded batch of another shape."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cotrr_core.artifacts import load_run
from cotrr_core.config import RunConfig
from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.scoring import score_data
from cotrr_core.serving.export import ScoringGraph, export_onnx
from cotrr_core.training.trainer import fit

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(synthetic_file, tmp_path_factory):
    cfg = RunConfig()
    cfg.model.hidden, cfg.model.heads, cfg.model.layers = 32, 4, 1
    cfg.train.epochs, cfg.train.batch_size = 1, 8
    cfg.train.blend = "off"  # the network's graph; a blended run is refused (tests/serving/test_blended.py)
    bench = load_benchmark(str(synthetic_file))
    run_dir = tmp_path_factory.mktemp("export_run")
    fit(bench, cfg, run_dir, calibrate=False)
    info = export_onnx(run_dir, run_dir / "model.onnx")
    return run_dir, info, bench


def test_onnx_matches_pytorch_on_a_real_padded_batch(exported):
    run_dir, info, bench = exported
    assert info["opset"] >= 17 and info["inputs"][-1] == "mask"
    run = load_run(run_dir, device="cpu")
    data = bench.splits["test"]
    data = data.subset(range(min(3, data.num_queries)))
    padded = data.padded()
    padded.mask[0, 5:] = False  # ragged: list 0 is shorter (B, L differ from the export example)
    feeds = {name: padded.tokens[name] for name in info["inputs"][:-1]}
    feeds["mask"] = padded.mask
    onnx_scores = ort.InferenceSession(info["path"]).run(None, feeds)[0]
    with torch.no_grad():
        torch_scores = ScoringGraph(run)(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    assert onnx_scores.shape == padded.mask.shape
    m = padded.mask
    assert np.abs(onnx_scores[m] - torch_scores[m]).max() < 1e-4
    # the folded-in scaler reproduces the library's own scoring path on the untouched lists
    offline = score_data(run, data)
    for q in range(1, data.num_queries):
        n = data.list_lengths[q]
        assert np.abs(onnx_scores[q, :n] - offline[data.rows(q)]).max() < 1e-4

def test_cli_export(exported, tmp_path):
    from cotrr_core.cli import main

    run_dir, _, _ = exported
    assert main(["export", str(run_dir), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0
