"""Fit calibrators on a run's calibration split and measure them on held-out test queries."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cotrr_core.calibration import make_calibrator, save_calibrator
from cotrr_core.data.benchmarks import Benchmark, load_benchmark
from cotrr_core.io import read_json, write_json
from cotrr_core.metrics import adaptive_ece, brier, ece, log_loss, mce, risk_coverage
from cotrr_core.scoring import LoadedRun, load_run, mc_samples_data, score_data

__all__ = ["calibrate_run", "calibration_table", "uncalibrated_probs", "probability_std", "METHODS"]

METHODS = ("temperature", "platt", "isotonic")


def uncalibrated_probs(scores: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(score / T): what the focal head was trained to output."""
    return 1.0 / (1.0 + np.exp(-np.clip(scores / temperature, -50, 50)))


def calibration_table(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> dict[str, float]:
    return {"ece": ece(probs, y, n_bins), "adaptive_ece": adaptive_ece(probs, y, n_bins),
            "mce": mce(probs, y, n_bins), "brier": brier(probs, y), "log_loss": log_loss(probs, y)}


def probability_std(calibrator, samples: np.ndarray) -> np.ndarray:
    """Per-candidate std [N] of calibrated probabilities over MC-dropout score samples [S, N].

    Measured in probability space because that is where the error is: a score far from the
    decision boundary can wobble a lot without moving P(relevant).
    """
    probs = np.stack([calibrator.predict(s) for s in samples])
    return probs.std(axis=0)


def calibrate_run(run_dir: str | Path, bench: Benchmark | None = None, method: str = "isotonic",
                  mc_samples: int = 5, run: LoadedRun | None = None) -> dict:
    """Fit every calibrator on the 'cal' split, evaluate on 'test', store `method` as calibrator.json.

    Adds a 'calibration' section to metrics.json: per calibrator ECE / adaptive ECE / MCE /
    Brier / log loss on test, and whether MC-dropout uncertainty predicts the error (AURC).
    """
    run_dir = Path(run_dir)
    run = run or load_run(run_dir, device="cpu")
    bench = bench or load_benchmark(run.meta["dataset"])
    cal, test = bench.splits["cal"], bench.splits["test"]
    s_cal, _ = score_data(run, cal)
    s_test, _ = score_data(run, test)
    y_cal, y_test = cal.relevant().astype(int), test.relevant().astype(int)

    table = {"uncalibrated": calibration_table(uncalibrated_probs(s_test, run.temperature), y_test)}
    fitted, notes = {}, {}
    for name in METHODS:
        cal_model = make_calibrator(name).fit(s_cal, y_cal)
        fitted[name] = cal_model
        notes[name] = getattr(cal_model, "fit_note_", "")
        table[name] = calibration_table(cal_model.predict(s_test), y_test)
    chosen = fitted[method]
    save_calibrator(chosen, run_dir / "calibrator.json")

    p_test = chosen.predict(s_test)
    std_test = probability_std(chosen, mc_samples_data(run, test, mc_samples))
    rc = risk_coverage(np.abs(p_test - y_test), std_test)
    section = {
        "method": method, "fit_split": "cal", "eval_split": "test", "n_cal": int(len(y_cal)),
        "n_test": int(len(y_test)), "cal_queries": cal.num_queries, "test_queries": test.num_queries,
        "table": table, "fit_notes": notes,
        "uncertainty": {"mc_samples": mc_samples, "error": "|p_calibrated - y|",
                        "uncertainty": "std over MC-dropout samples of the calibrated probability", "aurc": rc["aurc"],
                        "random_aurc": rc["random_aurc"], "oracle_aurc": rc["oracle_aurc"],
                        "corr_std_error": _corr(std_test, np.abs(p_test - y_test))},
    }
    metrics_path = run_dir / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    metrics["calibration"] = section
    write_json(metrics_path, metrics)
    return section


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation, None when either side is constant (e.g. a model without dropout)."""
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None
