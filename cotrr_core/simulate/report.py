"""`simulate ab|shadow|topm RUN_DIR`: run a simulation on a trained run's real test-split outputs.

Latencies are measured on this machine with the run's real scoring path; the top-M
grid's measurements are cached in the run directory (latency.json) keyed by dataset and M.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.io import read_json, write_json
from cotrr_core.scoring import score_data
from cotrr_core.training.runs import load_run
from cotrr_core.simulate.ab import simulate_ab
from cotrr_core.simulate.clicks import ClickModel
from cotrr_core.simulate.shadow import shadow_analysis
from cotrr_core.simulate.topm import recommend_m, topm_tradeoff

__all__ = ["simulate_run", "to_jsonable", "KINDS"]

KINDS = ("ab", "shadow", "topm")


def _cached_latency(run_dir: Path, key: str, measure) -> np.ndarray:
    path = run_dir / "latency.json"
    cache = read_json(path) if path.exists() else {}
    if key not in cache:
        cache[key] = [round(float(x), 5) for x in measure()]
        write_json(path, cache)
    return np.asarray(cache[key])


def simulate_run(kind: str, run_dir: str | Path, dataset: str | None = None, *, seed: int = 0,
                 n_units: int = 2000, days: int = 7, share: float = 0.5, queries_per_unit_per_day: float = 1.0,
                 click_model: str = "pbm", latency_budget_ms: float = 5.0) -> dict[str, Any]:
    """Returns {"kind", "run", "dataset", "table": DataFrame, "summary": dict} computed from real outputs."""
    from cotrr_core.simulate.inputs import measure_list_latency, rollout_inputs, topm_inputs

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    run_dir = Path(run_dir)
    run = load_run(run_dir, device="cpu")
    dataset = dataset or run.meta["dataset"]
    test = load_benchmark(dataset).splits["test"]
    scores = score_data(run, test)
    out: dict[str, Any] = {"kind": kind, "run": run_dir.name, "dataset": dataset, "test_queries": test.num_queries}

    if kind == "topm":
        ms = [m for m in (5, 10, 20, 30, 50) if m < int(test.list_lengths.max())] + [int(test.list_lengths.max())]
        quality, _ = topm_inputs(run, test, ms, scores=scores, max_queries=0)
        latency = {m: _cached_latency(run_dir, f"{dataset}:top{m}",
                                      lambda m=m: measure_list_latency(run, test, top_m=m)) for m in ms}
        table = topm_tradeoff(quality, latency)
        out["table"] = table
        out["summary"] = {"latency_budget_ms": latency_budget_ms,
                          "recommended_m": recommend_m(table, latency_budget_ms)}
        return out

    inputs = rollout_inputs(run, test, scores)  # measures both arms' latencies (about a second)
    if kind == "shadow":
        res = shadow_analysis(inputs.original_order, inputs.wouldbe_order, inputs.control_labels, inputs.mask,
                              relevance_threshold=inputs.relevance_threshold, seed=seed,
                              latency_original_ms=inputs.latency_control_ms,
                              latency_shadow_ms=inputs.latency_treatment_ms)
        out["table"] = res.most_disagreeing(10)
        out["summary"] = {**res.summary, "deltas": res.deltas, "latency": res.latency}
        return out

    clicks = ClickModel(name=click_model)
    res = simulate_ab(inputs.control_labels, inputs.treatment_labels, inputs.mask, n_units=n_units, days=days,
                      queries_per_unit_per_day=queries_per_unit_per_day, share=share,
                      relevance_threshold=inputs.relevance_threshold,
                      latency_control_ms=inputs.latency_control_ms,
                      latency_treatment_ms=inputs.latency_treatment_ms, click_model=clicks, seed=seed)
    out["table"] = res.totals.reset_index()
    out["summary"] = {"lifts": res.lifts, "srm": res.srm, "mde": res.mde, "click_model": clicks.params(),
                      "n_units": n_units, "days": days, "share": share}
    return out


def to_jsonable(result: dict[str, Any]) -> dict[str, Any]:
    out = dict(result)
    if isinstance(out.get("table"), pd.DataFrame):
        out["table"] = out["table"].to_dict(orient="records")
    return out
