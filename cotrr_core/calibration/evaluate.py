"""The one place that fits calibrators on a run's held-out 'cal' (+ 'val') data and measures them on 'test'."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cotrr_core.artifacts import LoadedRun, load_run, write_metrics
from cotrr_core.calibration.calibrators import Calibrator, make_calibrator, save_calibrator, uncalibrated_probs
from cotrr_core.data.benchmarks import Benchmark, load_benchmark
from cotrr_core.evaluation.metrics import adaptive_ece, brier, ece, log_loss, mce, risk_coverage
from cotrr_core.io import read_json
from cotrr_core.scoring import mc_samples_data, score_data

__all__ = ["CalibrationFit", "fit_calibrators", "calibrate_loaded", "calibrate_run", "calibration_table",
           "probability_std", "METHODS", "cal_cv_table", "select_method", "fit_splits"]

METHODS = ("temperature", "platt", "isotonic")


def calibration_table(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> dict[str, float]:
    """ECE, adaptive ECE, MCE, Brier and log loss of probabilities [N] against 0/1 labels [N]."""
    return {"ece": ece(probs, y, n_bins), "adaptive_ece": adaptive_ece(probs, y, n_bins),
            "mce": mce(probs, y, n_bins), "brier": brier(probs, y), "log_loss": log_loss(probs, y)}


def probability_std(calibrator, samples: np.ndarray) -> np.ndarray:
    """Per-candidate std [N] of calibrated probabilities over MC-dropout score samples [S, N].

    Measured in probability space because that is where the error is: a score far from the
    decision boundary can wobble a lot without moving P(relevant).
    """
    probs = np.stack([calibrator.predict(s) for s in samples])
    return probs.std(axis=0)


def fit_splits(bench: Benchmark) -> list[str]:
    """The splits calibrators are fitted on: 'cal', plus 'val' when it is a held-out split of its own.

    Val only picked the stopping epoch (by nDCG), so its scores are as unseen as cal's for
    calibration, and twice the queries halve the calibrator's variance. A val that is train
    (tiny benchmarks) or cal is not added: it would be fitted on training scores or twice.
    """
    val, cal = bench.splits.get("val"), bench.splits["cal"]
    own = val is not None and val is not cal and val is not bench.splits.get("train")
    return ["cal", "val"] if own else ["cal"]


@dataclass
class CalibrationFit:
    """Every calibrator fitted on the fit splits (fit_splits), with raw scores [N] and 0/1 labels [N]
    of the fit data (s_cal, y_cal, query index g_cal) and of test."""

    s_cal: np.ndarray
    y_cal: np.ndarray
    g_cal: np.ndarray
    s_test: np.ndarray
    y_test: np.ndarray
    uncalibrated: np.ndarray  # sigmoid(score / T) on test [N_test]
    fitted: dict[str, Calibrator]

    def table(self, n_bins: int = 15) -> dict[str, dict[str, float]]:
        """Calibration metrics on test: uncalibrated, then one row per method."""
        out = {"uncalibrated": calibration_table(self.uncalibrated, self.y_test, n_bins)}
        out.update({name: calibration_table(cal.predict(self.s_test), self.y_test, n_bins)
                    for name, cal in self.fitted.items()})
        return out

    def notes(self) -> dict[str, str]:
        return {name: getattr(cal, "fit_note_", "") for name, cal in self.fitted.items()}


def cal_cv_table(s_cal: np.ndarray, y_cal: np.ndarray, groups: np.ndarray, folds: int = 5, repeats: int = 5,
                 seed: int = 0, n_bins: int = 15) -> dict[str, dict[str, float]]:
    """Out-of-fold calibration metrics on the calibration data alone (cal [+ val]), per method in METHODS.

    Queries (`groups` [N], a query index per candidate) are cut into `folds` folds; each method
    is fitted on the other folds and predicts the held-out one, and the pooled out-of-fold
    probabilities are scored. In-sample ECE would always crown isotonic (it fits the bins). The
    metrics are averaged over `repeats` random fold assignments: one cut of ~100 queries is
    noisy enough to flip the choice.
    """
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    tables: dict[str, list[dict[str, float]]] = {name: [] for name in METHODS}
    for _ in range(repeats):
        fold_of = dict(zip(uniq, rng.permutation(len(uniq)) % folds))
        fold = np.array([fold_of[g] for g in groups])
        for name in METHODS:
            p = np.empty(len(s_cal))
            for k in range(folds):
                held = fold == k
                if held.any():
                    p[held] = make_calibrator(name).fit(s_cal[~held], y_cal[~held]).predict(s_cal[held])
            tables[name].append(calibration_table(p, y_cal, n_bins))
    return {name: {m: float(np.mean([t[m] for t in ts])) for m in ts[0]} for name, ts in tables.items()}


def select_method(cv_table: dict[str, dict[str, float]]) -> str:
    """The method with the lowest out-of-fold cal ECE (ties: the simpler, earlier in METHODS)."""
    return min(METHODS, key=lambda m: (round(cv_table[m]["ece"], 6), METHODS.index(m)))


def fit_calibrators(run: LoadedRun, bench: Benchmark, test_scores: np.ndarray | None = None) -> CalibrationFit:
    """Score the fit splits and 'test' with the run's model; fit every method in METHODS on the fit splits.

    test_scores: the run's raw scores [N_test] of 'test' when the caller has them (not scored again).
    """
    parts = [bench.splits[name] for name in fit_splits(bench)]
    test = bench.splits["test"]
    s_cal = np.concatenate([score_data(run, d) for d in parts])
    y_cal = np.concatenate([d.relevant() for d in parts]).astype(int)
    first = np.cumsum([0] + [d.num_queries for d in parts])
    g_cal = np.concatenate([k + np.repeat(np.arange(d.num_queries), d.list_lengths) for k, d in zip(first, parts)])
    s_test = score_data(run, test) if test_scores is None else np.asarray(test_scores, dtype=np.float64)
    y_test = test.relevant().astype(int)
    fitted = {name: make_calibrator(name).fit(s_cal, y_cal) for name in METHODS}
    return CalibrationFit(s_cal, y_cal, g_cal, s_test, y_test, uncalibrated_probs(s_test, run.temperature), fitted)


def calibrate_loaded(run: LoadedRun, bench: Benchmark, method: str = "isotonic", mc_samples: int = 5,
                     test_scores: np.ndarray | None = None) -> dict:
    """Fit every calibrator on 'cal' (+ 'val', see fit_splits), evaluate on 'test', keep `method`.

    Args:
        run: a trained run, loaded (artifacts.load_run) or still in the trainer's memory.
        bench: its benchmark.
        method: the calibrator to keep ("temperature", "platt", "isotonic"), or "auto": the one
            with the lowest out-of-fold ECE on the calibration data (cal_cv_table; test never decides).
        mc_samples: MC-dropout samples for the uncertainty check.
        test_scores: the run's raw scores [N_test] of 'test', when already computed.
    Returns:
        The 'calibration' section of metrics.json: per calibrator ECE / adaptive ECE / MCE / Brier /
        log loss on test, and whether MC-dropout uncertainty predicts the error (AURC). The kept
        calibrator is written to run.run_dir/calibrator.json and set as run.calibrator.
    """
    fit = fit_calibrators(run, bench, test_scores)
    cv = cal_cv_table(fit.s_cal, fit.y_cal, fit.g_cal)
    chosen_name = select_method(cv) if method == "auto" else method
    chosen = fit.fitted[chosen_name]
    save_calibrator(chosen, Path(run.run_dir) / "calibrator.json")
    run.calibrator = chosen
    std_test = probability_std(chosen, mc_samples_data(run, bench.splits["test"], mc_samples))
    fitted_on = "+".join(fit_splits(bench))
    return {
        "method": chosen_name, "configured_method": method,
        "selected_on": f"out-of-fold ECE on {fitted_on} (5 folds by query, 5 repeats)",
        "cal_cv": cv, "fit_split": fitted_on, "eval_split": "test", "n_cal": int(len(fit.y_cal)),
        "n_test": int(len(fit.y_test)), "cal_queries": int(len(np.unique(fit.g_cal))),
        "test_queries": bench.splits["test"].num_queries, "table": fit.table(), "fit_notes": fit.notes(),
        "uncertainty": _uncertainty(chosen.predict(fit.s_test), fit.y_test, std_test, mc_samples),
    }


def _uncertainty(p_test: np.ndarray, y_test: np.ndarray, std_test: np.ndarray, mc_samples: int) -> dict:
    """Does the MC-dropout std [N] of calibrated probabilities [N] predict their error against labels [N]?"""
    error = np.abs(p_test - y_test)
    rc = risk_coverage(error, std_test)
    return {"mc_samples": mc_samples, "error": "|p_calibrated - y|",
            "uncertainty": "std over MC-dropout samples of the calibrated probability", "aurc": rc["aurc"],
            "random_aurc": rc["random_aurc"], "oracle_aurc": rc["oracle_aurc"],
            "corr_std_error": _corr(std_test, error)}


def calibrate_run(run_dir: str | Path, bench: Benchmark | None = None, method: str = "isotonic",
                  mc_samples: int = 5, run: LoadedRun | None = None) -> dict:
    """Calibrate a finished run directory (`calibrate_loaded`) and add the section to its metrics.json.

    Args:
        run_dir: a trained run's directory.
        bench: its benchmark (default: reloaded from the run's config).
        method, mc_samples: see `calibrate_loaded`.
        run: the run already loaded (default: load_run(run_dir) on CPU).
    Returns:
        The 'calibration' section now in metrics.json.
    """
    run_dir = Path(run_dir)
    run = run or load_run(run_dir, device="cpu")
    section = calibrate_loaded(run, bench or load_benchmark(run.meta["dataset"]), method, mc_samples)
    metrics_path = run_dir / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    write_metrics(run_dir, {**metrics, "calibration": section})
    return section


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation, None when either side is constant (e.g. a model without dropout)."""
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None
