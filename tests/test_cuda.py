"""CUDA paths: training, resume, MC dropout and serving on a GPU. Skipped where CUDA is missing;
run them on a lent GPU with `python -m pytest -m cuda`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_listmle_with_a_cpu_generator_on_cuda_scores_matches_cpu():
    from cotrr_core.losses import listmle_loss

    g = torch.Generator().manual_seed(0)
    scores, labels = torch.randn(4, 7, generator=g), torch.randint(0, 3, (4, 7), generator=g).float()
    mask = torch.ones(4, 7, dtype=torch.bool)
    cpu = listmle_loss(scores, labels, mask, torch.Generator().manual_seed(1))
    gpu = listmle_loss(scores.cuda(), labels.cuda(), mask.cuda(), torch.Generator().manual_seed(1))
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-5)


def test_fit_resume_and_serve_on_cuda(synthetic_file, tmp_path):
    from cotrr_core.data.benchmarks import load_benchmark
    from cotrr_core.serving.features import request_records
    from cotrr_core.serving.reranker import Reranker
    from cotrr_core.training.trainer import fit
    from tests.training.test_trainer import tiny_config

    bench = load_benchmark(str(synthetic_file))
    metrics = fit(bench, tiny_config(epochs=2, device="cuda"), tmp_path)
    assert metrics["device"].startswith("cuda") and np.isfinite(metrics["test"]["cotrr"]["ndcg@10"])
    fit(bench, tiny_config(epochs=3, device="cuda"), tmp_path, resume=True)  # CUDA checkpoint -> resume
    reranker = Reranker.load(tmp_path, device="cuda")
    test = bench.splits["test"]
    res = reranker.rerank(str(test.queries[0]), request_records(test, 0), mc_samples=5)
    assert res.fallback_reason is None and all(c["uncertainty"] is not None for c in res.served)


def test_onnx_export_of_a_cuda_trained_run(synthetic_file, tmp_path):
    pytest.importorskip("onnxruntime")
    from cotrr_core.data.benchmarks import load_benchmark
    from cotrr_core.serving.export import export_onnx
    from cotrr_core.training.trainer import fit
    from tests.training.test_trainer import tiny_config

    fit(load_benchmark(str(synthetic_file)), tiny_config(epochs=1, device="cuda"), tmp_path, calibrate=False)
    info = export_onnx(tmp_path, tmp_path / "m.onnx")
    assert Path(info["path"]).exists()
