"""Serving latency of a run, measured ONCE under stated conditions and stored in RUN_DIR/latency.json.

Every page and command reads the same measurement for the same key (dataset identity + path
timed) instead of re-timing under whatever load the dashboard itself puts on the machine;
the conditions (machine, load average, threads, repeats, time) are stored beside the numbers.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cotrr_core.io import read_json, write_json

__all__ = ["Latency", "stored_latency", "measurement_conditions", "latency_key", "LATENCY_FILE"]

LATENCY_FILE = "latency.json"
_VERSION = "v2"  # entries of earlier versions (bare lists, model-path timings) are not reused
_LOCK = threading.Lock()  # one measurement at a time in this process: sessions must not time each other


@dataclass
class Latency:
    """ms: [Q] per-list latency (best of `repeats`); conditions: how and when it was measured."""

    key: str
    ms: np.ndarray
    conditions: dict[str, Any]

    @property
    def p50(self) -> float:
        return float(np.quantile(self.ms, 0.5))

    @property
    def p95(self) -> float:
        return float(np.quantile(self.ms, 0.95))

    def describe(self) -> str:
        c = self.conditions
        return (f"measured once at {c.get('measured_at', '?')} on {c.get('machine', '?')} "
                f"({c.get('cpus', '?')} CPUs, load average {c.get('load_avg_1m', float('nan')):.2f}), "
                f"{c.get('threads', '?')} thread, one request at a time, best of {c.get('repeats', '?')} per list; "
                f"{c.get('path', '')}")


def latency_key(dataset_key: str, what: str) -> str:
    """'v2/demo/serve:top20' -> one stored measurement per (dataset, path timed)."""
    return f"{_VERSION}/{dataset_key}/{what}"


def measurement_conditions(path: str, repeats: int, threads: int = 1, device: str = "cpu") -> dict[str, Any]:
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {"measured_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}".strip(),
            "cpus": os.cpu_count(), "load_avg_1m": round(load, 2), "threads": threads, "repeats": repeats,
            "device": device, "path": path}


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError):
        return {}


def stored_latency(run_dir: str | Path, key: str, measure: Callable[[], np.ndarray],
                   conditions: Callable[[], dict[str, Any]]) -> Latency:
    """The stored measurement under `key`, or measure() now (once) and store it with conditions()."""
    path = Path(run_dir) / LATENCY_FILE
    entry = _read(path).get(key)
    if not isinstance(entry, dict):
        with _LOCK:
            entry = _read(path).get(key)  # another session may have measured it while we waited
            if not isinstance(entry, dict):
                cond = conditions()  # load average before our own timing adds to it
                ms = np.asarray(measure(), dtype=np.float64)
                entry = {"ms": [round(float(x), 5) for x in ms], "conditions": cond}
                cache = _read(path)
                cache[key] = entry
                write_json(path, cache)
    return Latency(key, np.asarray(entry["ms"], dtype=np.float64), dict(entry.get("conditions", {})))
