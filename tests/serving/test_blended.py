"""A blended run served by the Reranker: the columnar path, fp32 folded and bf16 network parts, MC over the
network part, the fallback contract, and export refusing it."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cotrr_core.artifacts import load_run
from cotrr_core.config import ConfigError
from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.evaluation.baselines import FeatureBuilder
from cotrr_core.model import Ragged
from cotrr_core.serving.blended import BatchFeatures, BlendedModel, load_blend
from cotrr_core.serving.policy import Policy
from cotrr_core.serving.reranker import Reranker
from cotrr_core.training.trainer import fit
from tests.conftest import make_step5_rows, write_jsonl
from tests.training.test_blend import _reference_committee, weak_network_config

pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def blended(tmp_path_factory):
    base = tmp_path_factory.mktemp("served_blend")
    bench = load_benchmark(str(write_jsonl(base / "syn.jsonl", make_step5_rows(n_queries=120, list_len=10))))
    fit(bench, weak_network_config(), base / "run")
    assert json.loads((base / "run" / "blend.json").read_text())["weight"] > 0, "precondition: a blended run"
    return base / "run", bench


def _arrays(data):
    return {k: np.asarray(v) for k, v in data.features.items()}, np.asarray(data.offsets)


def _expected(run_dir, data, network: np.ndarray) -> np.ndarray:
    info = json.loads((run_dir / "blend.json").read_text())
    zn = (network - info["z"]["network"][0]) / info["z"]["network"][1]
    return zn + info["weight"] * _reference_committee(run_dir, data)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_reranker_serves_the_blend(blended, precision):
    run_dir, bench = blended
    test = bench.splits["test"]
    run = load_run(run_dir, device="cpu")
    rr = Reranker(run, Policy("full"), precision)
    alone = Reranker(dataclasses.replace(run, blend=None), Policy("full"), precision)
    try:
        assert isinstance(rr.model, BlendedModel) and not isinstance(alone.model, BlendedModel)
        features, offsets = _arrays(test)
        got = rr.predict(features, offsets)
        np.testing.assert_allclose(got, _expected(run_dir, test, alone.predict(features, offsets)), rtol=1e-4, atol=1e-4)
        res = rr.rerank_arrays(features, offsets, top_m=int(test.list_lengths.max()), mc_samples=0)
        assert all(r is None for r in res.fallback_reason)
        np.testing.assert_allclose(res.raw_score, got, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(res.probability, run.probabilities(got), atol=1e-5)
        for k in range(len(offsets) - 1):  # served order = the blended score's order
            rows = slice(offsets[k], offsets[k + 1])
            assert np.all(np.diff(got[res.order[rows]]) <= 1e-6)
        weight = json.loads((run_dir / "blend.json").read_text())["weight"]
        assert rr.health()["served_model"] == {"kind": "blend", "weight": weight, "committee": ["lightgbm", "ridge"]}
        assert alone.health()["served_model"] == {"kind": "network"}
    finally:
        rr.close()
        alone.close()


@pytest.mark.parametrize("per_list", [True, False])
def test_batch_features_are_the_fitted_builders(blended, per_list):
    """Serving's torch feature rows equal FeatureBuilder's numpy ones, with the list-constant token given once per
    list (as requests carry it) or on every row."""
    _, bench = blended
    test = bench.splits["test"]
    builder = FeatureBuilder(wide=4, pca_dims=3).fit(bench.splits["train"])  # these 4-wide vectors count as wide
    assert builder.pca_ and builder.pairs_, "precondition: wide tokens and a query-candidate cosine"
    features, offsets = _arrays(test)
    lengths = np.diff(offsets)[:6]
    rows = np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k in range(6)])
    tokens = {name: torch.from_numpy(x[rows].astype(np.float32)) for name, x in features.items()}
    batch = Ragged.from_lengths(tokens, {}, lengths)
    if per_list:
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        lists = {n: tokens[n][starts] for n in test.list_constant}
        batch = Ragged({n: x for n, x in tokens.items() if n not in lists}, lists, batch.mask, batch.positions)
    expected = builder.transform_tokens({name: x[rows] for name, x in features.items()})
    np.testing.assert_allclose(BatchFeatures(builder)(batch), expected, rtol=1e-6, atol=1e-6)


def test_mc_samples_vary_the_network_part_only(blended):
    run_dir, bench = blended
    test = bench.splits["test"]
    rr = Reranker(load_run(run_dir, device="cpu"), Policy("full"))
    try:
        features, offsets = _arrays(test)
        res = rr.rerank_arrays(features, offsets, top_m=10, mc_samples=4, time_budget_ms=60_000)
        assert all(r is None for r in res.fallback_reason)
        assert np.isfinite(res.uncertainty).all() and (res.uncertainty > 0).any()
        np.testing.assert_allclose(res.raw_score, rr.predict(features, offsets), rtol=1e-5, atol=1e-5)
        batch = rr.inputs(features, offsets, offsets[:-1])
        from cotrr_core.serving.blended import sampled_scores

        _, samples = sampled_scores(rr.model, batch, 3)
        from cotrr_core.mc import mc_scores

        torch.manual_seed(0)
        net = mc_scores(rr.model.network, batch, 3)[1]
        # blended samples = network samples z-scored + the same committee: their spread is the network's / sd
        sd = rr.model.blend.z["network"][1]
        assert samples.std(0).mean().item() == pytest.approx(net.std(0).mean().item() / sd, rel=0.5)
    finally:
        rr.close()


def test_padded_forward_matches_ragged_score(blended):
    run_dir, bench = blended
    rr = Reranker(load_run(run_dir, device="cpu"), Policy("full"))
    try:
        features, offsets = _arrays(bench.splits["val"])
        batch = rr.inputs(features, offsets, offsets[:-1])
        tokens, mask = batch.padded()
        with torch.inference_mode():
            padded, ragged = rr.model(tokens, mask), rr.model.score(batch)
        np.testing.assert_allclose(padded[mask].numpy(), ragged.numpy(), rtol=1e-5, atol=1e-5)
    finally:
        rr.close()


def test_fallback_contract_is_unchanged(blended):
    run_dir, bench = blended
    rr = Reranker(load_run(run_dir, device="cpu"), Policy("full"))
    try:
        features, offsets = _arrays(bench.splits["test"])
        bad = {k: v.copy() for k, v in features.items()}
        bad["conflict"][offsets[1]:offsets[2]] = np.nan  # list 1 has a NaN feature
        res = rr.rerank_arrays(bad, offsets, top_m=10, mc_samples=0)
        assert res.fallback_reason[1] == "invalid_input" and res.fallback_reason[0] is None
        assert list(res.order[offsets[1]:offsets[2]]) == list(range(offsets[1], offsets[2]))
    finally:
        rr.close()


def test_export_refuses_a_blended_run(blended, tmp_path, capsys):
    from cotrr_core.cli import main
    from cotrr_core.serving.export import export_onnx

    run_dir, _ = blended
    with pytest.raises(ConfigError, match="lightgbm, ridge.*cannot be exported"):
        export_onnx(run_dir, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    assert main(["export", str(run_dir), "--onnx", str(tmp_path / "m.onnx")]) != 0
    assert "cannot export this run to ONNX" in capsys.readouterr().err


def test_a_damaged_blend_json_names_the_file_and_field(blended, tmp_path):
    run_dir, _ = blended
    info = json.loads((run_dir / "blend.json").read_text())
    del info["z"]
    (tmp_path / "blend.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match=r"blend.json: field 'z'"):
        load_blend(tmp_path)


def test_list_latency_times_the_served_blend(blended, monkeypatch):
    """The Top-M latency the app simulates is the served model's: a blended run's includes its committee."""
    from cotrr_core.simulate.inputs import measure_list_latency

    run_dir, bench = blended
    calls = []
    real = BlendedModel.forward

    def counted(self, tokens, mask):
        calls.append(mask.shape)
        return real(self, tokens, mask)

    monkeypatch.setattr(BlendedModel, "forward", counted)
    ms = measure_list_latency(load_run(run_dir, device="cpu"), bench.splits["test"], top_m=5, repeats=1, max_queries=3)
    assert len(ms) == 3 and np.all(ms > 0)
    assert [tuple(s) for s in calls] == [(1, 5)] * 3
