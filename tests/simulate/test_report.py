"""`simulate ab|shadow|topm RUN_DIR` end to end on a tiny real run."""
from __future__ import annotations

import json

import pytest

from cotrr_core.cli import main
from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.training.trainer import fit
from tests.training.test_trainer import tiny_config


@pytest.fixture(scope="module")
def tiny_run(synthetic_file, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    fit(load_benchmark(str(synthetic_file)), tiny_config(epochs=3), run_dir)
    return run_dir


@pytest.mark.parametrize("kind", ["ab", "shadow", "topm"])
def test_simulate_cli_prints_and_writes_json(kind, tiny_run, tmp_path, capsys):
    out = tmp_path / f"{kind}.json"
    assert main(["simulate", kind, str(tiny_run), "--units", "200", "--days", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"simulate {kind}" in printed
    result = json.loads(out.read_text())
    assert result["kind"] == kind and result["table"]
    if kind == "ab":
        assert {"ctr", "success", "ndcg@10", "latency_ms"} <= set(result["summary"]["lifts"])
        assert result["summary"]["srm"]["p_value"] > 0.001  # hashing splits units fairly
        arms = {row["arm"] for row in result["table"]}
        assert arms == {"control", "treatment"}
    if kind == "shadow":
        assert 0.0 <= result["summary"]["top1_agreement"] <= 1.0
    if kind == "topm":
        ms = [row["M"] for row in result["table"]]
        assert ms == sorted(ms) and all(row["p50_ms"] > 0 for row in result["table"])
        assert (tiny_run / "latency.json").exists()  # measurements are cached for the next call
