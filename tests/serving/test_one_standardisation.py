"""One standardisation (model.Standardise, in the state dict) on every path: the trainer's batch forward,
offline scoring, serving (fp32 folded and unfolded, bf16) and the ONNX graph give the same scores.

Tolerances: fp32 paths agree to 1e-5 (folding moves scores by float32 rounding, ~1e-6); the ONNX graph to
1e-4 (another runtime's kernels); bf16 serving to 0.05 (bfloat16 keeps 8 bits of mantissa).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cotrr_core.artifacts import load_run
from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.scoring import score_data
from cotrr_core.serving.export import export_onnx
from cotrr_core.serving.policy import Policy
from cotrr_core.serving.reranker import Reranker


@pytest.fixture(scope="module")
def same_lists(run_dir, synthetic_file):
    run = load_run(run_dir, device="cpu")
    data = load_benchmark(str(synthetic_file)).splits["test"]
    assert run.model.standardise.stats(run.spec.tokens[0].name)[1].ne(1).any(), "a fitted standardisation"
    return run, data


def _served(run, data, **kw) -> np.ndarray:
    res = Reranker(run, Policy("full"), **kw).rerank_arrays(data.features, data.offsets, top_m=10**6)
    assert res.scored.all()
    return res.raw_score


def test_training_scoring_serving_and_onnx_give_the_same_scores(same_lists, run_dir, tmp_path):
    run, data = same_lists
    offline = score_data(run, data)  # [N]
    padded = data.padded()  # the trainer's batches: raw features, padded, through the model's forward
    tokens, mask, _ = padded.batch(slice(None))
    with torch.no_grad():
        trainer = run.model.eval()(tokens, mask)[mask].numpy()
    np.testing.assert_allclose(trainer, offline, atol=1e-5)
    np.testing.assert_allclose(_served(run, data), offline, atol=1e-5)  # fp32, folded
    np.testing.assert_allclose(_served(run, data, fold=False), offline, atol=1e-5)
    np.testing.assert_allclose(_served(run, data, precision="bf16"), offline, atol=0.05)

    ort = pytest.importorskip("onnxruntime")
    info = export_onnx(run_dir, tmp_path / "model.onnx")
    feeds = {name: padded.tokens[name] for name in info["inputs"][:-1]}
    feeds["mask"] = padded.mask
    onnx = ort.InferenceSession(info["path"]).run(None, feeds)[0]
    np.testing.assert_allclose(onnx[padded.mask], offline, atol=1e-4)


def test_predict_is_the_served_model_alone(same_lists):
    run, data = same_lists
    reranker = Reranker(run, Policy("off"))  # no policy, no top-M, no calibration in predict
    np.testing.assert_allclose(reranker.predict(data.features, data.offsets), score_data(run, data), atol=1e-5)


def test_a_run_saved_before_the_model_held_its_standardisation_loads_from_scaler_json(same_lists, run_dir,
                                                                                    tmp_path):
    run, data = same_lists
    old = tmp_path / "old_run"
    old.mkdir()
    for f in run_dir.iterdir():
        if f.is_file():
            (old / f.name).write_bytes(f.read_bytes())
    state = torch.load(old / "model.pt", weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("standardise.")}
    torch.save(state, old / "model.pt")
    np.testing.assert_array_equal(score_data(load_run(old, device="cpu"), data), score_data(run, data))
