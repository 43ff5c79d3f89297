"""Ranking quality on held-out test queries: original order vs LightGBM vs the CoTRR variants.

    python bench/quality.py [--datasets demo,mq2008,mslr-tiny] [--json OUT] [--quick]
    python bench/quality.py --train F --val F --test F [--json OUT]    # any LETOR / Step5 files

In one run, on the same splits, with the same metric code (cotrr_core.evaluation.compare) and the same
convention for queries without a relevant candidate ("exclude" is primary):

* original       the first-stage order
* lightgbm       LightGBM lambdarank on the same token features, small grid chosen on val
* cotrr_percand  the reranker, list context off
* cotrr_listctx  the reranker, list context on
* cotrr          whichever variant has the higher VALIDATION nDCG@10 (never chosen on test)

Paired bootstrap 95% CIs (over test queries) of cotrr - original and cotrr - lightgbm.
Per-dataset configs: bench/configs/<dataset>.json (a RunConfig) when present.
Writes bench/results/quality.json and quality.md (unless --no-results) and prints a table.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (finish, Timer, dataset_config, files_benchmark, fmt, get_benchmark,  # noqa: E402
                          is_letor, md_table, score_run, train_run)
from cotrr_core.data.benchmarks import Benchmark  # noqa: E402
from cotrr_core.evaluation.compare import HEADLINE, compare_rankings, evaluate_scores, original_scores  # noqa: E402

MODELS = ("original", "lightgbm", "cotrr", "cotrr_percand", "cotrr_listctx")
VARIANTS = {"cotrr_percand": False, "cotrr_listctx": True}
PRIMARY = "exclude"
QUICK_GRID = {"num_leaves": (15,), "learning_rate": (0.1,), "min_data_in_leaf": (20,)}


def _headline(data, scores, convention: str = PRIMARY) -> dict[str, float]:
    m = evaluate_scores(data, scores, convention)
    return {k: m[k] for k in HEADLINE} | {"queries": m["queries"]}


def run_dataset(bench: Benchmark, cfg, quick: bool = False, run_root: Path | None = None,
                log=print) -> dict:
    """Everything for one benchmark; returns its JSON section."""
    timer = Timer()
    train, val, test = bench.splits["train"], bench.splits["val"], bench.splits["test"]
    scores_test: dict[str, object] = {"original": original_scores(test)}
    scores_val: dict[str, object] = {"original": original_scores(val)}
    seconds: dict[str, float] = {}

    from cotrr_core.evaluation.baselines import LightGBMRanker

    t = Timer()
    lgb = LightGBMRanker(grid=QUICK_GRID if quick else None, n_estimators=200 if quick else 1000)
    lgb.fit(train, val)
    scores_test["lightgbm"], scores_val["lightgbm"] = lgb.predict(test), lgb.predict(val)
    seconds["lightgbm"] = t()
    log(f"  [{bench.name}] lightgbm {lgb.best_params_} ({seconds['lightgbm']} s)")

    runs, best_epoch = {}, {}
    for variant, list_context in VARIANTS.items():
        t = Timer()
        vcfg = copy.deepcopy(cfg)
        vcfg.model.list_context = list_context
        run_dir, metrics = train_run(bench, vcfg, variant.removeprefix("cotrr_"), run_root)
        runs[variant], best_epoch[variant] = str(run_dir), metrics["best_epoch"]
        scores_test[variant], scores_val[variant] = score_run(run_dir, test), score_run(run_dir, val)
        seconds[variant] = t()
        log(f"  [{bench.name}] {variant}: best epoch {metrics['best_epoch']}, "
            f"val nDCG@10 {metrics['best_val_ndcg@10']:.4f} ({seconds[variant]} s)")

    val_ndcg = {k: evaluate_scores(val, s, PRIMARY)["ndcg@10"] for k, s in scores_val.items()}
    selected = max(VARIANTS, key=lambda v: val_ndcg[v])  # ties -> per-candidate (listed first)
    scores_test["cotrr"], val_ndcg["cotrr"] = scores_test[selected], val_ndcg[selected]

    out: dict = {m: _headline(test, scores_test[m]) for m in MODELS}
    n_test = test.num_queries
    n_used = out["original"]["queries"]
    out["convention"] = (f"{PRIMARY}: test queries without a relevant candidate (label >= "
                         f"{test.spec.relevance_threshold:g}) are left out of every mean and CI; "
                         f"{n_used} of {n_test} test queries are scored")
    out["selected"] = selected
    out["selection"] = "cotrr = the variant with the higher validation nDCG@10 (exclude convention)"
    out["val_ndcg@10"] = val_ndcg
    out["ci"] = {
        "method": "paired bootstrap over test queries, 2000 resamples, 95% percentile interval of the mean difference",
        "cotrr_vs_original": compare_rankings(test, scores_test["cotrr"], scores_test["original"], PRIMARY),
        "cotrr_vs_lightgbm": compare_rankings(test, scores_test["cotrr"], scores_test["lightgbm"], PRIMARY),
    }
    if is_letor(test):
        out["ndcg@10_one"] = {m: evaluate_scores(test, scores_test[m], "one")["ndcg@10"] for m in MODELS}
        out["ndcg@10_one_note"] = ("nDCG@10 with queries without a relevant document scored 1 "
                                   "(LightGBM/allRank convention, comparable with the SOURCE.md anchors)")
    out["lightgbm_params"] = lgb.best_params_
    out["lightgbm_features"] = {"mode": lgb.features_.clip, "width": len(lgb.features_.names_)}
    out["best_epoch"] = best_epoch
    out["runs"] = runs
    out["config"] = cfg.to_dict()
    out["splits"] = {k: {"queries": d.num_queries, "candidates": d.num_candidates} for k, d in bench.splits.items()}
    out["note"] = bench.note
    out["quick"] = quick
    seconds["total"] = timer()
    out["seconds"] = seconds
    return out


def table(name: str, sec: dict) -> str:
    cols = list(HEADLINE)
    rows = [[m + (" *" if m == "cotrr" else "")] + [sec[m][c] for c in cols] + [sec["val_ndcg@10"][m]]
            for m in MODELS]
    text = [f"### {name}", "", md_table(["model"] + cols + ["val nDCG@10"], rows), "",
            f"\\* cotrr = {sec['selected']} (chosen on validation nDCG@10). Convention: {sec['convention']}.", ""]
    ci_rows = []
    for pair in ("cotrr_vs_original", "cotrr_vs_lightgbm"):
        for metric in ("ndcg@10", "c@1", "mrr", "map"):
            c = sec["ci"][pair][metric]
            ci_rows.append([pair.replace("_vs_", " - "), metric, c["diff"], f"[{c['lo']:.3f}, {c['hi']:.3f}]",
                            c["p_value"], c["n"]])
    text += [md_table(["difference", "metric", "mean", "95% CI", "p", "queries"], ci_rows), ""]
    if "ndcg@10_one" in sec:
        one = sec["ndcg@10_one"]
        text += ["nDCG@10 with queries without a relevant document scored 1: "
                 + ", ".join(f"{m} {fmt(one[m])}" for m in MODELS), ""]
    text += [f"LightGBM: {sec['lightgbm_params']}; features {sec['lightgbm_features']}. "
             f"Seconds: {sec['seconds']}.", ""]
    return "\n".join(text)


def markdown(result: dict) -> str:
    parts = ["# Ranking quality on held-out test queries", "",
             f"Machine: {result['machine']}. Total {result['seconds']} s.", ""]
    for name, sec in result.items():
        if isinstance(sec, dict) and "ci" in sec:
            parts.append(table(name, sec))
    return "\n".join(parts)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="demo,mq2008,mslr-tiny")
    p.add_argument("--train")
    p.add_argument("--val")
    p.add_argument("--test")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--quick", action="store_true", help="at most 4 epochs, one LightGBM grid point (smoke)")
    p.add_argument("--config", help="a RunConfig JSON for every dataset (default: bench/configs/<dataset>.json)")
    p.add_argument("--run-root", help="where to put the bench- run directories (default artifacts/runs)")
    p.add_argument("--no-results", action="store_true", help="do not write bench/results/")
    p.add_argument("--seed", type=int, default=0, help="query split seed (hash-split benchmarks)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    timer = Timer()
    result: dict = {}
    if args.train or args.val or args.test:
        if not (args.train and args.val and args.test):
            raise SystemExit("--train, --val and --test go together")
        jobs = [(Path(args.train).stem, lambda: files_benchmark(args.train, args.val, args.test, args.seed))]
    else:
        jobs = [(n, (lambda n=n: get_benchmark(n, args.seed))) for n in args.datasets.split(",") if n]
    run_root = Path(args.run_root) if args.run_root else None
    for name, make in jobs:
        print(f"== {name}", flush=True)
        bench = make()
        cfg = dataset_config(name, args.quick, args.config)
        result[name] = run_dataset(bench, cfg, args.quick, run_root,
                                   log=lambda m: print(m, flush=True))
        print(table(name, result[name]), flush=True)
    result["seconds"] = timer()
    return finish("quality", result, args.json, not args.no_results, markdown)


if __name__ == "__main__":
    main()
