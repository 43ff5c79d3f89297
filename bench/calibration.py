"""Calibration of P(relevant) on held-out TEST queries, calibrators fitted on the cal split.

    python bench/calibration.py [--datasets demo,mq2008] [--json OUT] [--quick] [--run-dir DIR ...]

Per dataset: train one run with the dataset's bench config (bench/configs/<dataset>.json; list
context as chosen by the last bench/quality.py run when its result is available), or reuse a given
run directory, then cotrr_core.calibration.evaluate fits temperature / Platt / isotonic on the cal split
and measures ECE, adaptive ECE, MCE, Brier and log loss on test, plus the MC-dropout uncertainty
AURC (does the MC std rank the calibrated errors |p - y| better than random?).
Writes bench/results/calibration.json and calibration.md (unless --no-results).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (finish, RESULTS, Timer, dataset_config, get_benchmark, md_table,  # noqa: E402
                          train_run)

CALIBRATORS = ("uncalibrated", "temperature", "platt", "isotonic")
METRICS = ("ece", "adaptive_ece", "mce", "brier", "log_loss")
TARGETS = {"demo": 0.02, "mq2008": 0.03}


def _selected_list_context(name: str) -> bool | None:
    """list_context of the variant bench/quality.py selected on val for this dataset, if known."""
    path = RESULTS / "quality.json"
    try:
        sec = json.loads(path.read_text())[name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if sec.get("quick"):
        return None
    return sec.get("selected") == "cotrr_listctx"


def run_dataset(name: str, quick: bool = False, run_dir: str | None = None, mc_samples: int = 20,
                run_root: Path | None = None, config: str | None = None, log=print) -> dict:
    from cotrr_core.calibration.evaluate import calibrate_run

    timer = Timer()
    bench = get_benchmark(name)
    method = "isotonic"
    if run_dir is None:
        cfg = dataset_config(name, quick, config)
        lc = _selected_list_context(name)
        if lc is not None:
            cfg.model.list_context = lc
        run, _ = train_run(bench, cfg, "calib", run_root)
        run_dir = str(run)
        method = cfg.calibration.method
        log(f"  [{name}] trained {run_dir} ({timer()} s)")
    section = calibrate_run(run_dir, bench=bench, method=method,
                            mc_samples=mc_samples)
    out: dict = {c: {m: section["table"][c][m] for m in METRICS} for c in CALIBRATORS}
    unc = section["uncertainty"]
    out["uncertainty"] = {"mc_samples": unc["mc_samples"], "error": unc["error"], "aurc": unc["aurc"],
                          "random_aurc": unc["random_aurc"], "oracle_aurc": unc["oracle_aurc"],
                          "corr_std_error": unc["corr_std_error"],
                          "better_than_random": bool(unc["aurc"] < unc["random_aurc"])}
    best = min(CALIBRATORS[1:], key=lambda c: out[c]["ece"])
    out["best_calibrator"] = best
    target = TARGETS.get(name)
    out["target_ece"] = target
    out["checks"] = {
        "ece_target_met": None if target is None else bool(out[best]["ece"] <= target),
        "brier_below_uncalibrated": {c: bool(out[c]["brier"] < out["uncalibrated"]["brier"]) for c in CALIBRATORS[1:]},
        "log_loss_below_uncalibrated": {c: bool(out[c]["log_loss"] < out["uncalibrated"]["log_loss"])
                                        for c in CALIBRATORS[1:]},
    }
    out["n"] = {"cal_candidates": section["n_cal"], "test_candidates": section["n_test"],
                "cal_queries": section["cal_queries"], "test_queries": section["test_queries"]}
    out["fit_split"], out["eval_split"], out["run_dir"] = "cal", "test", run_dir
    out["quick"] = quick
    out["seconds"] = timer()
    return out


def table(name: str, sec: dict) -> str:
    rows = [[c] + [sec[c][m] for m in METRICS] for c in CALIBRATORS]
    u = sec["uncertainty"]
    return "\n".join([
        f"### {name}", "", md_table(["calibrator"] + list(METRICS), rows), "",
        f"Fitted on the cal split ({sec['n']['cal_queries']} queries, {sec['n']['cal_candidates']} candidates), "
        f"measured on test ({sec['n']['test_queries']} queries, {sec['n']['test_candidates']} candidates). "
        f"Best: {sec['best_calibrator']}; ECE target {sec['target_ece']}: {sec['checks']['ece_target_met']}.", "",
        f"MC-dropout ({u['mc_samples']} samples) uncertainty vs error {u['error']}: AURC {u['aurc']:.4f} "
        f"(random {u['random_aurc']:.4f}, oracle {u['oracle_aurc']:.4f}; corr {u['corr_std_error']:.3f}). "
        f"Seconds: {sec['seconds']}.", ""])


def markdown(result: dict) -> str:
    parts = ["# Calibration on held-out test queries", "",
             f"Machine: {result['machine']}. Total {result['seconds']} s. ECE with 15 equal-width bins.", ""]
    parts += [table(n, s) for n, s in result.items() if isinstance(s, dict) and "uncertainty" in s]
    return "\n".join(parts)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="demo,mq2008")
    p.add_argument("--json")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--run-dir", action="append", help="reuse a trained run (one per dataset, in order)")
    p.add_argument("--run-root")
    p.add_argument("--config", help="a RunConfig JSON for every dataset")
    p.add_argument("--mc-samples", type=int, default=20)
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args(argv)
    timer = Timer()
    names = [n for n in args.datasets.split(",") if n]
    reuse = args.run_dir or []
    result: dict = {}
    for i, name in enumerate(names):
        print(f"== {name}", flush=True)
        result[name] = run_dataset(name, args.quick, reuse[i] if i < len(reuse) else None, args.mc_samples,
                                   Path(args.run_root) if args.run_root else None, args.config,
                                   log=lambda m: print(m, flush=True))
        print(table(name, result[name]), flush=True)
    result["seconds"] = timer()
    return finish("calibration", result, args.json, not args.no_results, markdown)


if __name__ == "__main__":
    main()
