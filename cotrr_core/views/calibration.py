"""Calibration view of a run: reliability before/after, the calibrator table, risk-coverage."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cotrr_core.artifacts import LoadedRun
from cotrr_core.calibration.evaluate import METHODS, fit_calibrators, probability_std
from cotrr_core.data.benchmarks import Benchmark
from cotrr_core.evaluation.metrics import reliability_curve, risk_coverage
from cotrr_core.scoring import mc_samples_data

__all__ = ["CalibrationView", "calibration_view", "risk_view", "METHODS"]


@dataclass
class CalibrationView:
    """reliability: per non-empty bin and stage (before / after), with Wilson intervals;
    table: one row per calibrator (uncalibrated + every method) on test; histogram: confidence
    counts per bin and stage; risk: MC-dropout risk-coverage curve of the chosen calibrator
    (empty unless with_risk; see risk_view, which does not depend on the bins)."""

    method: str
    reliability: pd.DataFrame
    table: pd.DataFrame
    histogram: pd.DataFrame
    risk: pd.DataFrame
    risk_summary: dict[str, float]
    n_cal: int
    n_test: int
    fit_note: str


def risk_view(run: LoadedRun, bench: Benchmark, method: str = "isotonic",
              mc_samples: int = 5) -> tuple[pd.DataFrame, dict[str, float]]:
    """Risk-coverage of |p_calibrated - y| on test, most certain first by MC-dropout spread, as
    calibrate_run measures it (same default samples); no binning is involved. Returns (curve, summary)."""
    fit = fit_calibrators(run, bench)
    after = np.asarray(fit.fitted[method].predict(fit.s_test), dtype=np.float64)
    std_test = probability_std(fit.fitted[method], mc_samples_data(run, bench.splits["test"], mc_samples))
    rc = risk_coverage(np.abs(after - fit.y_test), std_test)
    risk = pd.DataFrame({"coverage": rc["coverage"], "risk": rc["risk"]})
    if len(risk) > 400:  # the curve is smooth; keep 400 evenly spaced points plus the last
        idx = np.unique(np.r_[np.linspace(0, len(risk) - 1, 400).astype(int), len(risk) - 1])
        risk = risk.iloc[idx].reset_index(drop=True)
    return risk, {"aurc": rc["aurc"], "random_aurc": rc["random_aurc"], "oracle_aurc": rc["oracle_aurc"],
                  "mc_samples": float(mc_samples)}


def calibration_view(run: LoadedRun, bench: Benchmark, method: str = "isotonic", n_bins: int = 15,
                     strategy: str = "uniform", mc_samples: int = 5, with_risk: bool = True) -> CalibrationView:
    """Calibrators fitted on 'cal' (calibration.evaluate), shown on 'test' with `method` highlighted."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    fit = fit_calibrators(run, bench)
    y_test, before = fit.y_test, fit.uncalibrated
    table = fit.table(n_bins)
    rows = [{"calibrator": name, **row} for name, row in table.items()]
    after = np.asarray(fit.fitted[method].predict(fit.s_test), dtype=np.float64)

    rel, hist = [], []
    edges = np.linspace(0, 1, n_bins + 1)
    for stage, p in (("before", before), (f"after ({method})", after)):
        curve = reliability_curve(p, y_test, n_bins=n_bins, strategy=strategy)
        rel.append(pd.DataFrame({k: np.asarray(v) for k, v in curve.items()}).assign(stage=stage))
        counts, _ = np.histogram(p, bins=edges)
        hist.append(pd.DataFrame({"bin_lower": edges[:-1], "bin_upper": edges[1:], "count": counts, "stage": stage}))
    risk, risk_summary = (risk_view(run, bench, method, mc_samples) if with_risk
                          else (pd.DataFrame(columns=["coverage", "risk"]), {}))
    return CalibrationView(
        method=method, reliability=pd.concat(rel, ignore_index=True), table=pd.DataFrame(rows),
        histogram=pd.concat(hist, ignore_index=True), risk=risk, risk_summary=risk_summary,
        n_cal=int(len(fit.y_cal)), n_test=int(len(y_test)), fit_note=fit.notes()[method])
