"""Calibration of P(relevant): calibrators fitted and CHOSEN on held-out cal (+ val) data, measured once on test.

    python bench/calibration.py [--datasets demo,mq2008] [--seeds 10] [--json OUT] [--quick]

Per dataset and seed: train one run with the automatic recipe (recipe.auto_config, as `train`
does), then cotrr_core.calibration.evaluate fits temperature / Platt / isotonic on the calibration
data: the cal split plus val (evaluate.fit_splits; val only chose the stopping epoch).
Selection: each method's out-of-fold ECE on that data (5 folds by query: fitted on 4, predicting
the 5th; 5 repeats); the lowest wins. Test (ECE, adaptive ECE, MCE, Brier, log loss) is only
reported, never used. Per dataset the JSON has `selected` (lowest seed-mean out-of-fold ECE),
`cal[method]` (cal + val, out-of-fold, seed mean), `[method]` (test, seed mean), `uncalibrated`,
and per seed everything.
Writes bench/results/calibration.json and calibration.md (unless --no-results).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Timer, finish, get_benchmark, md_table, stamp, train_run  # noqa: E402

METHODS = ("temperature", "platt", "isotonic")
METRICS = ("ece", "adaptive_ece", "mce", "brier", "log_loss")
TARGETS = {"demo": 0.02, "mq2008": 0.03}


def _mean(tables: list[dict], methods) -> dict:
    return {c: {m: float(np.mean([t[c][m] for t in tables])) for m in METRICS} for c in methods}


def run_dataset(name: str, seeds: int = 10, quick: bool = False, mc_samples: int = 20, log=print) -> dict:
    from cotrr_core.calibration.evaluate import calibrate_run, fit_splits, select_method
    from cotrr_core.training.recipe import auto_config

    timer = Timer()
    bench = get_benchmark(name)
    cfg, rule = auto_config(bench.splits["train"])
    if quick:
        cfg.train.epochs, cfg.train.patience = 3, 3
    per_seed = []
    root = Path(tempfile.mkdtemp(prefix="cotrr-calib-"))
    try:
        for seed in range(seeds):
            cfg.train.seed = seed
            run_dir, _ = train_run(bench, cfg, f"calib-s{seed}", root)
            sec = calibrate_run(run_dir, bench=bench, method="auto", mc_samples=mc_samples)
            per_seed.append({"seed": seed, "selected": sec["method"], "cal": sec["cal_cv"], "test": sec["table"],
                             "uncertainty": sec["uncertainty"]})
            log(f"  [{name}] seed {seed}: selected on cal+val {sec['method']}, test ECE "
                f"{sec['table'][sec['method']]['ece']:.4f} ({timer()} s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out: dict = {"cal": _mean([s["cal"] for s in per_seed], METHODS)}
    out.update(_mean([s["test"] for s in per_seed], ("uncalibrated",) + METHODS))
    out["selected"] = select_method(out["cal"])
    own = [s["test"][s["selected"]]["ece"] for s in per_seed]  # each seed's own cal-chosen calibrator
    out["selected_test_ece"] = {"mean": float(np.mean(own)), "sd": float(np.std(own, ddof=1)) if len(own) > 1 else 0.0,
                                "min": float(np.min(own)), "max": float(np.max(own)), "seeds": own}
    target = TARGETS.get(name)
    out["target_ece"] = target
    out["ece_target_met"] = None if target is None else bool(out["selected_test_ece"]["mean"] <= target)
    unc = [s["uncertainty"] for s in per_seed]
    out["uncertainty"] = {k: float(np.mean([u[k] for u in unc])) for k in ("aurc", "random_aurc", "oracle_aurc")}
    out["uncertainty"]["mc_samples"] = mc_samples
    out["per_seed"] = per_seed
    out["recipe"] = rule
    out["config"] = cfg.to_dict()
    fit = [bench.splits[k] for k in fit_splits(bench)]
    out["n"] = {"cal_queries": sum(d.num_queries for d in fit), "cal_candidates": sum(d.num_candidates for d in fit),
                "test_queries": bench.splits["test"].num_queries, "test_candidates": bench.splits["test"].num_candidates}
    out["selection"] = ("lowest out-of-fold ECE on the calibration data, " + "+".join(fit_splits(bench))
                        + " (5 folds by query, 5 repeats); test never decides")
    out["fit_splits"] = fit_splits(bench)
    out["quick"] = quick
    out["seconds"] = timer()
    return out


def table(name: str, sec: dict) -> str:
    rows = [["uncalibrated", "-"] + [sec["uncalibrated"][m] for m in METRICS]]
    rows += [[c + (" *" if c == sec["selected"] else ""), sec["cal"][c]["ece"]] + [sec[c][m] for m in METRICS]
             for c in METHODS]
    st, u = sec["selected_test_ece"], sec["uncertainty"]
    return "\n".join([
        f"### {name}", "", md_table(["calibrator", "cal+val ECE (out-of-fold)"] + [f"test {m}" for m in METRICS], rows), "",
        f"\\* selected on cal+val: {sec['selected']}. Means over {len(st['seeds'])} seeds. Test ECE of each seed's own "
        f"chosen calibrator: {st['mean']:.4f} (sd {st['sd']:.4f}, range [{st['min']:.4f}, {st['max']:.4f}]); "
        f"target {sec['target_ece']}: {sec['ece_target_met']}. Per seed chosen: "
        f"{[s['selected'] for s in sec['per_seed']]}.", "",
        f"Calibration data ({'+'.join(sec.get('fit_splits', ['cal']))}) {sec['n']['cal_queries']} queries / "
        f"{sec['n']['cal_candidates']} candidates; test "
        f"{sec['n']['test_queries']} / {sec['n']['test_candidates']}. Recipe: {sec['recipe']}.", "",
        f"MC-dropout ({u['mc_samples']} samples) std vs |p - y|: AURC {u['aurc']:.4f} (random {u['random_aurc']:.4f}, "
        f"oracle {u['oracle_aurc']:.4f}). Seconds: {sec['seconds']}.", ""])


def markdown(result: dict) -> str:
    merged = sum(isinstance(v, dict) and "stamp" in v for v in result.values()) > 0
    command = ("`python bench/calibration.py --merge --datasets NAME`, one process per dataset at once "
               "(bench/run_all.py); the stamp below is the last to finish" if merged else f"`{result['command']}`")
    parts = ["# Calibration: fitted and chosen on cal + val, measured on held-out test", "", f"Command: {command}", "",
             f"Machine: {result['machine']}. Commit {result.get('commit')}, load average at start "
             f"{result.get('load_average')}. Total {result['seconds']} s. ECE with 15 equal-width bins.", ""]
    parts += [table(n, s) for n, s in result.items() if isinstance(s, dict) and "per_seed" in s]
    return "\n".join(parts)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="demo,mq2008")
    p.add_argument("--seeds", type=int, default=10,
                   help="seeds (runs) per dataset: MQ2008's test ECE has sd ~0.005 between seeds, "
                        "so 3 cannot tell 0.027 from 0.031")
    p.add_argument("--json")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--mc-samples", type=int, default=20)
    p.add_argument("--no-results", action="store_true")
    p.add_argument("--merge", action="store_true", help="keep other datasets' sections of bench/results/calibration.json")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # one thread per process: datasets run as parallel processes on a shared CPU
    timer = Timer()
    result: dict = {"command": "python bench/calibration.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    result.update(stamp())
    for name in [n for n in args.datasets.split(",") if n]:
        print(f"== {name}", flush=True)
        result[name] = run_dataset(name, args.seeds, args.quick, args.mc_samples, log=lambda m: print(m, flush=True))
        print(table(name, result[name]), flush=True)
    result["seconds"] = timer()
    return finish("calibration", result, args.json, not args.no_results, markdown, merge=args.merge)


if __name__ == "__main__":
    main()
