"""Tables over the run registry: one row per run, config diffs, history frames for comparison."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pandas as pd

from cotrr_core.training.runs import RunInfo, read_history

__all__ = ["runs_table", "flatten_config", "config_diff", "metrics_side_by_side", "history_frame", "launch_steps",
           "run_kind", "blend_parts"]

_TEST_KEYS = ("ndcg@10", "c@1", "mrr")


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """{"model": {"hidden": 256}} -> {"model.hidden": 256} (the run config of config.json)."""
    run = config.get("run", config)
    return {f"{section}.{k}": v for section, fields in run.items() if isinstance(fields, dict)
            for k, v in fields.items()}


_MODES = {"network": "network", "prior": "prior alone", "first_stage": "first-stage order"}


def run_kind(metrics: dict[str, Any]) -> str | None:
    """Which model a finished run serves: "network", "network + lightgbm + ridge (w = 2)", "prior alone", ..."""
    mode = metrics.get("ranker", {}).get("mode")
    if mode is None and "test" not in metrics:
        return None
    base = _MODES.get(mode, mode or "network")
    blend = metrics.get("blend") or {}
    if blend.get("weight", 0) > 0:
        return f"{base} + {' + '.join(blend.get('committee', []))} (w = {blend['weight']:g})"
    return base


def blend_parts(metrics: dict[str, Any]) -> pd.DataFrame:
    """Each part's validation nDCG@10 (network, each peer, their committee, the blend) and whether the run
    serves it; empty for a run trained without the blend step."""
    blend = metrics.get("blend") or {}
    scores, held = blend.get("val_ndcg@10") or {}, set(blend.get("parts") or [])
    rows = [{"part": part, "val_ndcg@10": value,
             "served": part in held or (part == "blend" and blend.get("weight", 0) > 0)}
            for part, value in scores.items()]
    return pd.DataFrame(rows, columns=["part", "val_ndcg@10", "served"])


def runs_table(runs: list[RunInfo]) -> pd.DataFrame:
    rows = []
    for r in runs:
        flat = flatten_config(r.config) if r.config else {}
        test = r.metrics.get("test", {})
        cal = r.metrics.get("calibration", {})
        row = {"run_id": r.run_id, "state": r.state, "progress": float(r.status.get("progress", 0.0)),
               "dataset": r.config.get("dataset"), "model": run_kind(r.metrics), "hidden": flat.get("model.hidden"),
               "layers": flat.get("model.layers"), "heads": flat.get("model.heads"),
               "list_context": flat.get("model.list_context"), "epochs": flat.get("train.epochs"),
               "best_epoch": r.metrics.get("best_epoch"), "train_seconds": r.metrics.get("train_seconds")}
        for key in _TEST_KEYS:
            row[f"test_{key}"] = test.get("cotrr", {}).get(key)
            row[f"original_{key}"] = test.get("original", {}).get(key)
        if cal:
            row["ece_uncalibrated"] = cal["table"]["uncalibrated"]["ece"]
            row[f"ece_{cal['method']}"] = cal["table"][cal["method"]]["ece"]
            row["ece_calibrated"] = cal["table"][cal["method"]]["ece"]
        row["message"] = r.status.get("message", "")
        rows.append(row)
    return pd.DataFrame(rows)


def config_diff(a: RunInfo, b: RunInfo, only_different: bool = True) -> pd.DataFrame:
    fa, fb = flatten_config(a.config), flatten_config(b.config)
    fa["dataset"], fb["dataset"] = a.config.get("dataset"), b.config.get("dataset")
    rows = [{"field": k, a.run_id: fa.get(k), b.run_id: fb.get(k), "differs": fa.get(k) != fb.get(k)}
            for k in sorted(set(fa) | set(fb))]
    df = pd.DataFrame(rows)
    return df[df["differs"]].drop(columns="differs") if only_different and len(df) else df


def metrics_side_by_side(runs: list[RunInfo]) -> pd.DataFrame:
    keys = sorted({k for r in runs for k in r.metrics.get("test", {}).get("cotrr", {})} - {"queries"})
    rows = []
    for k in keys:
        row: dict[str, Any] = {"metric": k}
        for r in runs:
            row[r.run_id] = r.metrics.get("test", {}).get("cotrr", {}).get(k)
        row["original order"] = next((r.metrics["test"]["original"].get(k) for r in runs
                                      if "test" in r.metrics), None)
        rows.append(row)
    return pd.DataFrame(rows)


def history_frame(runs: list[RunInfo] | list[Path]) -> pd.DataFrame:
    """Per-epoch history of one or more runs, long format with a run_id column."""
    frames = []
    for r in runs:
        path = r.path if isinstance(r, RunInfo) else Path(r)
        hist = read_history(path)
        if hist:
            frames.append(pd.DataFrame(hist).assign(run_id=path.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["epoch", "run_id"])


_STEPS = ("Build or load the dataset", "Train", "Calibrate on the calibration split", "Measure serving latency")


def _started(run_id: str) -> _dt.datetime | None:
    """Launch time from the run id's UTC stamp (20261123-113414-name)."""
    try:
        return _dt.datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=_dt.UTC)
    except ValueError:
        return None


def launch_steps(run_id: str, status: dict[str, Any], now: _dt.datetime | None = None,
                 latency_measured: bool = False) -> tuple[list[dict[str, str]], str]:
    """The first-launch step list from a run's status.json: rows {step, state: done|active|pending|failed}
    and a one-line estimate ("about 2 min left"), extrapolated from the training progress so far."""
    state, progress, message = status.get("state"), float(status.get("progress", 0.0)), status.get("message", "")
    if state == "done":
        active = 3 if not latency_measured else 4
    elif state == "running" and "calibrat" in message:
        active = 2
    elif state == "running" and progress > 0:
        active = 1
    else:
        active = 0  # queued: the process starts and loads (or builds) the dataset before the first step
    failed = state in ("failed", "cancelled")
    rows = [{"step": name, "state": "done" if i < active else ("failed" if failed and i == active else
                                                                 "active" if i == active else "pending")}
            for i, name in enumerate(_STEPS)]
    now = now or _dt.datetime.now(_dt.UTC)
    start = _started(run_id)
    elapsed = (now - start).total_seconds() if start else None
    if failed or elapsed is None:
        eta = ""
    elif active == 0:
        eta = f"{elapsed:.0f} s so far; building the demo data takes about a minute the first time"
    elif active == 1 and progress >= 0.05:
        eta = f"{elapsed:.0f} s so far, about {elapsed * (1 - progress) / progress / 60:.1f} min left (from progress)"
    else:
        eta = f"{elapsed:.0f} s so far"
    return rows, eta
