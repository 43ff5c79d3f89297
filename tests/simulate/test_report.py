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
        assert {"ctr", "success", "ndcg@10"} <= set(result["summary"]["lifts"])
        lat = result["summary"]["latency_ms"]  # a stored measurement, not a lift with a p-value
        assert 0 < lat["control"]["p95"] and 0 < lat["treatment"]["p95"]
        assert result["summary"]["srm"]["p_value"] > 0.001  # hashing splits units fairly
        arms = {row["arm"] for row in result["table"]}
        assert arms == {"control", "treatment"}
    if kind == "shadow":
        assert 0.0 <= result["summary"]["top1_agreement"] <= 1.0
    if kind == "topm":
        ms = [row["M"] for row in result["table"]]
        assert ms == sorted(ms) and all(row["p50_ms"] > 0 for row in result["table"])
        stored = json.loads((tiny_run / "latency.json").read_text())  # measured once, reused next time
        entry = next(v for k, v in stored.items() if k.endswith("serve:top5"))
        assert {"measured_at", "load_avg_1m", "threads", "machine"} <= set(entry["conditions"])
        again = tmp_path / "again.json"
        assert main(["simulate", kind, str(tiny_run), "--json", str(again)]) == 0
        p50 = {row["M"]: row["p50_ms"] for row in json.loads(again.read_text())["table"]}
        assert p50 == {row["M"]: row["p50_ms"] for row in result["table"]}
