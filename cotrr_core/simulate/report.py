"""`simulate ab|shadow|topm RUN_DIR`: run a simulation on a trained run's real test-split outputs.

Latencies time the serving path (Reranker) on this machine once per run and dataset, and are
stored with their conditions in the run directory (latency.json, cotrr_core.simulate.latency):
the app and this command read the same measurement.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cotrr_core.artifacts import load_run
from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.scoring import score_data
from cotrr_core.simulate.ab import simulate_ab
from cotrr_core.simulate.clicks import ClickModel
from cotrr_core.simulate.shadow import shadow_analysis
from cotrr_core.simulate.topm import recommend_m, topm_tradeoff

__all__ = ["simulate_run", "to_jsonable", "KINDS"]

KINDS = ("ab", "shadow", "topm")


def simulate_run(kind: str, run_dir: str | Path, dataset: str | None = None, *, seed: int = 0,
                 n_units: int = 2000, days: int = 7, share: float = 0.5, queries_per_unit_per_day: float = 1.0,
                 click_model: str = "pbm", latency_budget_ms: float = 5.0) -> dict[str, Any]:
    """Returns {"kind", "run", "dataset", "table": DataFrame, "summary": dict} computed from real outputs."""
    from cotrr_core.serving.reranker import Reranker
    from cotrr_core.simulate.inputs import rollout_inputs, topm_inputs
    from cotrr_core.training.runs import dataset_identity

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    run_dir = Path(run_dir)
    run = load_run(run_dir, device="cpu")
    dataset = dataset or run.meta["dataset"]
    key = dataset_identity(dataset)["key"]
    test = load_benchmark(dataset).splits["test"]
    scores = score_data(run, test)
    reranker = Reranker(run)
    out: dict[str, Any] = {"kind": kind, "run": run_dir.name, "dataset": dataset, "test_queries": test.num_queries}

    if kind == "topm":
        ms = [m for m in (5, 10, 20, 30, 50) if m < int(test.list_lengths.max())] + [int(test.list_lengths.max())]
        quality, latency = topm_inputs(run, test, ms, reranker=reranker, dataset_key=key)
        table = topm_tradeoff(quality, latency)
        out["table"] = table
        out["summary"] = {"latency_budget_ms": latency_budget_ms,
                          "recommended_m": recommend_m(table, latency_budget_ms)}
        return out

    inputs = rollout_inputs(run, test, scores, reranker=reranker, dataset_key=key)  # latencies: measured once
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
                      "n_units": n_units, "days": days, "share": share,
                      "latency_ms": {arm: {"p50": float(np.quantile(ms, 0.5)), "p95": float(np.quantile(ms, 0.95))}
                                     for arm, ms in (("control", inputs.latency_control_ms),
                                                     ("treatment", inputs.latency_treatment_ms))},
                      "unit_of_analysis": "users and queries (two-way clustered, stratified by query)"}
    return out


def to_jsonable(result: dict[str, Any]) -> dict[str, Any]:
    out = dict(result)
    if isinstance(out.get("table"), pd.DataFrame):
        out["table"] = out["table"].to_dict(orient="records")
    return out
