"""Ranking quality on held-out test queries: original order vs tuned peers vs the CoTRR reranker.

    python bench/quality.py [--datasets demo,mq2008,mslr-tiny] [--seeds 3] [--json OUT] [--quick]
    python bench/quality.py --train F --val F --test F [--json OUT]    # any LETOR / Step5 files

In one run, on the same splits, with the same metric code (cotrr_core.evaluation.compare) and the
same convention for queries without a relevant candidate ("exclude" is primary):

* original   the first-stage order
* qbnorm     (data with a query-candidate vector pair, e.g. CLIP text/image) the untrained QB-Norm anchor:
             the cosine renormalised over a bank of training queries, temperature chosen on validation
* peers      lightgbm (lambdarank), ridge, xgboost (rank:ndcg), catboost (YetiRank / LambdaMart): each
             on the same features, a 12-point grid chosen on validation nDCG@10, GBDTs early-stopped
             on validation. Seeds: the grid runs with seed 0; the chosen point is refitted with seeds
             1..S-1 (LightGBM and XGBoost are deterministic here: no row or column sampling).
* cotrr      the served model: the run `python -m cotrr_core train` makes with the same config and seed
             (fit(): the network, then training/blend.py's LightGBM + ridge committee blended in when
             that wins on validation, w in BLEND_WEIGHTS), scored on test through
             Reranker.rerank_arrays (every candidate scored: top_m = the longest list, no MC)
* cotrr_nn   ablation, the network alone: the cotrr run's network part (the automatic recipe,
             recipe.auto_config, or bench/configs/<name>.json when present); with --members M > 1 an
             analysis-only seed ensemble of M networks (z-scored scores averaged; member 0 is that network
             part, the others train with train.blend=off);
             the committee of all the bench's peers alone (no network) is reported as an ablation too

Every choice (grid point, early-stop round, epoch, blend weight) is made on validation; test is read
once, for the report. cotrr and the seeded peers are run S times (--seeds); tables give mean and
spread (sd, min-max). Paired bootstrap 95% CIs (over test queries, per-query metric averaged over
seeds) of cotrr and cotrr_nn against every peer; "best peer" = the peer with the highest seed-mean
test nDCG@10 (the hardest comparison, not a selection). Every model runs on one thread.
Writes bench/results/quality.json and .md.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

# the repository root, not bench/, first: a bench/<name>.py must not shadow a standard module (http)
sys.path[:] = [str(Path(__file__).resolve().parents[1])] + [p for p in sys.path
                                                            if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from bench.common import (  # noqa: E402
    CONFIGS,
    Timer,
    files_benchmark,
    finish,
    fmt,
    get_benchmark,
    is_letor,
    md_table,
    train_run,
)
from cotrr_core.config import RunConfig  # noqa: E402
from cotrr_core.data.benchmarks import Benchmark  # noqa: E402
from cotrr_core.data.spec import FeatureSpec  # noqa: E402
from cotrr_core.evaluation.compare import HEADLINE, evaluate_scores, original_scores, per_query_metrics  # noqa: E402
from cotrr_core.evaluation.metrics import paired_bootstrap_ci  # noqa: E402
from cotrr_core.evaluation.qbnorm import qbnorm_anchor  # noqa: E402
from cotrr_core.training.blend import BLEND_WEIGHTS  # noqa: E402

PEERS = ("lightgbm", "ridge", "xgboost", "catboost")
SEEDED = {"catboost"}  # peers whose fit depends on the seed with these settings
PRIMARY = "exclude"
QUICK_GRIDS = {"lightgbm": {"num_leaves": (15,), "learning_rate": (0.1,), "min_data_in_leaf": (20,)},
               "ridge": {"alpha": (1.0,), "log1p": (False,)},
               "xgboost": {"max_depth": (6,), "learning_rate": (0.1,), "min_child_weight": (1.0,)},
               "catboost": {"loss_function": ("YetiRank",), "depth": (6,), "learning_rate": (0.1,)}}


def _z(s: np.ndarray) -> np.ndarray:
    return (s - s.mean()) / max(float(s.std()), 1e-12)


def _ndcg(data, scores) -> float:
    return evaluate_scores(data, scores, PRIMARY)["ndcg@10"]


def make_peer(name: str, quick: bool, seed: int = 0):
    """A fresh, unfitted peer (None when its package is not installed)."""
    from cotrr_core.evaluation.baselines import LightGBMRanker
    from cotrr_core.evaluation.peers import PEERS as CLASSES

    n = 200 if quick else 1000
    grid = QUICK_GRIDS[name] if quick else None
    if name == "lightgbm":
        return LightGBMRanker(grid=grid, n_estimators=n, seed=seed, n_jobs=1)
    try:
        __import__({"ridge": "sklearn", "xgboost": "xgboost", "catboost": "catboost"}[name])
    except ImportError:
        return None
    return CLASSES[name](grid=grid, n_estimators=n, seed=seed, n_jobs=1)


def fit_peer(name: str, train, val, test, seeds: int, quick: bool, log=print) -> dict | None:
    """Grid on val with seed 0, the chosen point refitted with the other seeds (seeded peers only)."""
    t = Timer()
    peer = make_peer(name, quick)
    if peer is None:
        log(f"  {name}: not installed, skipped")
        return None
    peer.fit(train, val)
    test_scores, val_scores = [peer.predict(test)], [peer.predict(val)]
    params = dict(peer.best_params_)
    if name in SEEDED:
        point = {k: v for k, v in params.items() if k not in ("iterations", "num_boost_round")}
        for seed in range(1, seeds):
            p = make_peer(name, quick, seed)
            p.grid = {k: (v,) for k, v in point.items()}
            p.fit(train, val)
            test_scores.append(p.predict(test))
            val_scores.append(p.predict(val))
    log(f"  {name}: {params} ({t()} s)")
    return {"test": test_scores, "val": val_scores, "params": params, "seconds": t(),
            "search": getattr(peer, "search_", [])}


def recipe(bench: Benchmark, override: str | None, quick: bool) -> tuple[RunConfig, str]:
    """The reranker's config: --config, else bench/configs/<name>.json, else the automatic recipe."""
    from cotrr_core.training.recipe import auto_config

    path = Path(override) if override else CONFIGS / f"{bench.name}.json"
    if path.exists():
        cfg, rule = RunConfig.load(path), f"config file {path.name}"
    else:
        cfg, rule = auto_config(bench.splits["train"])
    if quick:
        cfg.train.epochs, cfg.train.patience = min(cfg.train.epochs, 4), min(cfg.train.patience, 4)
        cfg.train.warmup_steps = min(cfg.train.warmup_steps, 4)
    return cfg, rule


def served_scores(run_dir: Path, data) -> np.ndarray:
    """Scores [N] of `data` from the run as served: Reranker.rerank_arrays on every candidate (no MC), each row
    scored by minus its position in the served order (so the metrics rank exactly as the Reranker does)."""
    from cotrr_core.artifacts import load_run
    from cotrr_core.serving.reranker import Reranker

    rr = Reranker(load_run(run_dir, device="cpu"), batching=False)
    try:
        features = {t.name: data.features[t.name] for t in rr.run.spec.tokens}
        res = rr.rerank_arrays(features, data.offsets, top_m=int(data.list_lengths.max()), mc_samples=0)
    finally:
        rr.close()
    fell = {r for r, n in zip(res.fallback_reason, data.list_lengths) if r is not None and n > 1}
    if fell:
        raise RuntimeError(f"{run_dir}: the Reranker fell back on some lists ({sorted(fell)})")
    scores = np.empty(data.num_candidates)
    scores[res.order] = -np.arange(data.num_candidates, dtype=np.float64)
    return scores


def network_scores(run_dir: Path, data) -> np.ndarray:
    """The run's network part alone [N] (its blend, if any, left out)."""
    import dataclasses

    from cotrr_core.artifacts import load_run
    from cotrr_core.scoring import score_data

    return score_data(dataclasses.replace(load_run(run_dir, device="cpu"), blend=None), data)


def train_cotrr(bench: Benchmark, cfg: RunConfig, rep: int, members: int, root: Path, log=print):
    """One seed repetition: the served run (seed rep * members, as `train` makes it) and `members` networks
    (that run's network part, then seeds rep * members + j trained with train.blend=off). Returns
    ({"cotrr": (val, test), "cotrr_nn": (val, test)}, best epochs, the served run's blend summary)."""
    from cotrr_core.io import read_json

    val, test = bench.splits["val"], bench.splits["test"]
    zs_val, zs_test, epochs, blend = [], [], [], None
    for j in range(members):
        c = RunConfig.from_dict(cfg.to_dict())
        c.train.seed = rep * members + j
        if j > 0:
            c.train.blend = "off"
        run_dir, metrics = train_run(bench, c, f"s{c.train.seed}", root)
        epochs.append(metrics["best_epoch"])
        zs_val.append(_z(network_scores(run_dir, val)))
        zs_test.append(_z(network_scores(run_dir, test)))
        if j == 0:
            served = (served_scores(run_dir, val), served_scores(run_dir, test))
            blend = read_json(run_dir / "blend.json") if (run_dir / "blend.json").exists() else {"weight": 0.0}
            blend = {k: v for k, v in blend.items() if k not in ("features", "ridge", "lightgbm", "z")}
    log(f"  cotrr rep {rep}: best epochs {epochs}; served blend w = {blend.get('weight')} "
        f"(val nDCG@10 {blend.get('val_ndcg@10')})")
    return {"cotrr": served, "cotrr_nn": (np.mean(zs_val, axis=0), np.mean(zs_test, axis=0))}, epochs, blend


def _committee(scores: dict[str, list[np.ndarray]], members: list[str], rep: int) -> np.ndarray:
    """z(mean of the members' z-scored scores) [N]; a seeded peer contributes its seed `rep` run."""
    return _z(np.mean([_z(scores[m][min(rep, len(scores[m]) - 1)]) for m in members], axis=0))


def _anchors(bench: Benchmark, scores: dict, val_scores: dict, params: dict) -> list[str]:
    """The untrained QB-Norm anchor, for data whose spec names a query-candidate vector pair; its names."""
    train, val, test = bench.splits["train"], bench.splits["val"], bench.splits["test"]
    if getattr(train.spec, "similarity", None) is None:
        return []
    a = qbnorm_anchor(train, val, test)
    scores["qbnorm"], val_scores["qbnorm"] = [a["test"]], [a["val"]]
    params["qbnorm"] = {"t": a["t"], "val_ndcg@10 by t": a["val_ndcg@10"],
                        "bank": f"{train.num_queries} training queries"}
    return ["qbnorm"]


def _spread(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "seeds": [float(x) for x in v]}


def _per_query_mean(test, scores_list: list[np.ndarray], metric: str = "ndcg@10") -> np.ndarray:
    return np.mean([per_query_metrics(test, s, PRIMARY)[metric] for s in scores_list], axis=0)


def run_dataset(bench: Benchmark, seeds: int = 3, members: int = 3, quick: bool = False, config: str | None = None,
                run_root: Path | None = None, peers: tuple[str, ...] = PEERS, log=print,
                save_scores: Path | None = None) -> dict:
    """Everything for one benchmark; returns its JSON section (and, with save_scores, every model's val and
    test scores per seed in save_scores/<name>.npz, keys "val|test/<model>/<seed>", for re-analysis)."""
    timer = Timer()
    train, val, test = bench.splits["train"], bench.splits["val"], bench.splits["test"]
    scores: dict[str, list[np.ndarray]] = {"original": [original_scores(test)]}
    val_scores: dict[str, list[np.ndarray]] = {"original": [original_scores(val)]}
    seconds, params, search = {}, {}, {}
    for name in peers:
        r = fit_peer(name, train, val, test, seeds, quick, log)
        if r is not None:
            scores[name], val_scores[name] = r["test"], r["val"]
            seconds[name], params[name], search[name] = r["seconds"], r["params"], r["search"]
    anchors = _anchors(bench, scores, val_scores, params)
    committee = [p for p in peers if p in scores]
    if not committee:
        raise SystemExit("the quality bench needs at least one peer (the blend's committee score)")

    cfg, rule = recipe(bench, config, quick)
    log(f"  cotrr recipe: {rule}")
    t = Timer()
    tmp = None if run_root else Path(tempfile.mkdtemp(prefix="cotrr-quality-"))
    scores["cotrr_nn"], val_scores["cotrr_nn"], scores["cotrr"], val_scores["cotrr"] = [], [], [], []
    weights, epochs, alone, blends = [], [], [], []
    try:
        for rep in range(seeds):
            alone.append(_ndcg(test, _committee(scores, committee, rep)))
            got, ep, blend = train_cotrr(bench, cfg, rep, members, run_root or tmp, log)
            weights.append(blend.get("weight"))
            blends.append(blend)
            epochs.append(ep)
            for m in ("cotrr", "cotrr_nn"):
                val_scores[m].append(got[m][0])
                scores[m].append(got[m][1])
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    seconds["cotrr"] = t()

    models = list(scores)
    out: dict = {}
    for m in models:
        per_seed = [{k: v for k, v in evaluate_scores(test, s, PRIMARY).items()} for s in scores[m]]
        row = {k: float(np.mean([p[k] for p in per_seed])) for k in HEADLINE}
        row["queries"] = per_seed[0]["queries"]
        row["ndcg@10_spread"] = _spread([p["ndcg@10"] for p in per_seed])
        row["val_ndcg@10"] = float(np.mean([_ndcg(val, s) for s in val_scores[m]]))
        out[m] = row
    peer_names = [p for p in peers if p in scores]
    best_peer = max(peer_names, key=lambda p: out[p]["ndcg@10"])
    pq = {m: _per_query_mean(test, scores[m]) for m in models}
    out["ci"] = {"method": "paired bootstrap over test queries (2000 resamples, 95% percentile interval) of the "
                           "per-query nDCG@10 averaged over seeds",
                 **{f"{a}_vs_{b}": paired_bootstrap_ci(pq[a], pq[b])
                    for a in ("cotrr", "cotrr_nn") for b in peer_names + anchors + ["original"]}}
    out["best_peer"] = best_peer
    out["models"] = models
    out["recipe"] = rule
    out["blend_weights"] = weights
    out["committee"] = committee
    out["blend"] = ("cotrr = the run `python -m cotrr_core train` makes (the network, blended by training/blend.py "
                    "with a LightGBM + ridge committee, z statistics fitted on val, w in "
                    f"{list(BLEND_WEIGHTS)} chosen on val nDCG@10), scored through Reranker.rerank_arrays")
    out["served_blends"] = blends
    out["ablation"] = {"committee_alone_ndcg@10": _spread(alone),
                       "note": f"the committee of the bench's peers ({', '.join(committee)}) without the "
                               "network, test z-scored on itself, per seed"}
    out["best_epochs"] = epochs
    out["seeds"], out["members"] = seeds, members
    out["convention"] = (f"{PRIMARY}: test queries without a relevant candidate (label >= "
                         f"{test.spec.relevance_threshold:g}) are left out of every mean and CI; "
                         f"{out['original']['queries']} of {test.num_queries} test queries are scored")
    if is_letor(test):
        out["ndcg@10_one"] = {m: float(np.mean([evaluate_scores(test, s, "one")["ndcg@10"] for s in scores[m]]))
                              for m in models}
    out["peer_params"], out["peer_search"] = params, search
    out["config"] = cfg.to_dict()
    out["splits"] = {k: {"queries": d.num_queries, "candidates": d.num_candidates} for k, d in bench.splits.items()}
    out["note"] = bench.note
    out["val_is_train"] = bench.splits["val"] is bench.splits["train"]
    out["quick"] = quick
    seconds["total"] = timer()
    out["seconds"] = seconds
    if save_scores:
        save_scores.mkdir(parents=True, exist_ok=True)
        arrays = {f"{split}/{m}/{i}": s for split, d in (("val", val_scores), ("test", scores))
                  for m, ss in d.items() for i, s in enumerate(ss)}
        np.savez_compressed(save_scores / f"{bench.name}.npz", **arrays)
    return out


def table(name: str, sec: dict) -> str:
    cols = list(HEADLINE)
    val_note = "val nDCG@10 (val = train!)" if sec.get("val_is_train") else "val nDCG@10"
    rows = []
    for m in sec["models"]:
        sp = sec[m]["ndcg@10_spread"]
        rows.append([m] + [sec[m][c] for c in cols]
                    + [f"{sp['sd']:.3f} [{sp['min']:.3f}, {sp['max']:.3f}]", len(sp["seeds"]), sec[m]["val_ndcg@10"]])
    text = [f"### {name}", "", md_table(["model"] + cols + ["nDCG@10 sd [min, max]", "seeds", val_note], rows), "",
            f"Recipe: {sec['recipe']}. {sec['blend']}"
            + (" (val = train here)" if sec.get("val_is_train") else "") + f"; chosen w per seed: {sec['blend_weights']}. "
            f"Ensemble of {sec['members']} runs per seed, {sec['seeds']} seeds. Convention: {sec['convention']}.", ""]
    if sec.get("val_is_train"):
        text += ["**val = cal = train on this dataset (smoke test only): nothing here is chosen on held-out "
                 "data, and the CIs below are descriptive, not evidence.**", ""]
    if "ablation" in sec:
        ab = sec["ablation"]["committee_alone_ndcg@10"]
        text += [f"Ablation: the peer committee alone (no reranker) has test nDCG@10 {ab['mean']:.3f} "
                 f"(sd {ab['sd']:.3f}, seeds {[round(x, 3) for x in ab['seeds']]}).", ""]
    ci_rows = []
    for key, c in sec["ci"].items():
        if key == "method":
            continue
        a, b = key.split("_vs_")
        ci_rows.append([f"{a} - {b}" + (" (best peer)" if b == sec["best_peer"] else ""), c["diff"],
                        f"[{c['lo']:.3f}, {c['hi']:.3f}]", "-" if sec.get("val_is_train") else c["p_value"], c["n"]])
    text += [md_table(["nDCG@10 difference", "mean", "95% CI", "p", "queries"], ci_rows), ""]
    if "ndcg@10_one" in sec:
        text += ["nDCG@10 with queries without a relevant document scored 1: "
                 + ", ".join(f"{m} {fmt(v)}" for m, v in sec["ndcg@10_one"].items()), ""]
    chosen = "chosen on val = train" if sec.get("val_is_train") else "chosen on val"
    text += [f"Peers ({chosen}): {sec['peer_params']}. Seconds: {sec['seconds']}.", ""]
    return "\n".join(text)


def markdown(result: dict) -> str:
    merged = sum(isinstance(v, dict) and "stamp" in v for v in result.values()) > 0
    command = ("`python bench/quality.py --merge --datasets NAME`, one process per dataset at once (bench/run_all.py); "
               "the stamp below is the last to finish" if merged else f"`{result['command']}`")
    parts = ["# Ranking quality on held-out test queries", "", f"Command: {command}", "",
             f"Machine: {result['machine']}. Commit {result.get('commit')}, load average at start "
             f"{result.get('load_average')}. Total {result['seconds']} s.", ""]
    for name, sec in result.items():
        if isinstance(sec, dict) and "ci" in sec:
            parts.append(table(name, sec))
    return "\n".join(parts)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="demo,mq2008,mslr-tiny,flickr8k-dev")
    p.add_argument("--train")
    p.add_argument("--val")
    p.add_argument("--test")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--seeds", type=int, default=3, help="repetitions of cotrr and of the seeded peers")
    p.add_argument("--members", type=int, default=1,
                   help="networks per cotrr_nn seed (default 1: the network `train` builds; more: a seed "
                        "ensemble, an analysis no user can train or serve)")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--quick", action="store_true", help="at most 4 epochs, one grid point per peer (smoke)")
    p.add_argument("--config", help="a RunConfig JSON for every dataset (default: bench/configs/<name>.json, "
                                    "else the automatic recipe)")
    p.add_argument("--run-root", help="keep the bench run directories here (default: a temporary directory)")
    p.add_argument("--save-scores", help="write each model's val and test scores per seed to DIR/<dataset>.npz")
    p.add_argument("--no-results", action="store_true",
                   help="do not write bench/results/ (files given by --train/--val/--test never are)")
    p.add_argument("--merge", action="store_true", help="keep other datasets' sections of bench/results/quality.json")
    p.add_argument("--seed", type=int, default=0, help="query split seed (hash-split benchmarks)")
    p.add_argument("--spec", help="feature spec JSON for the files (default: each file's own, else inferred from it)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    import torch

    from bench.common import stamp

    # one thread for every model, as the peers: threads spin and collapse on a shared, loaded CPU
    torch.set_num_threads(1)
    timer = Timer()
    result: dict = {"command": "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    result.update(stamp())
    spec = FeatureSpec.load(args.spec) if args.spec else None
    if args.train or args.val or args.test:
        if not (args.train and args.val and args.test):
            raise SystemExit("--train, --val and --test go together")
        jobs = [(Path(args.train).stem, lambda: files_benchmark(args.train, args.val, args.test, args.seed, spec))]
    else:
        jobs = [(n, (lambda n=n: get_benchmark(n, args.seed, spec))) for n in args.datasets.split(",") if n]
    run_root = Path(args.run_root) if args.run_root else None
    peers = tuple(p for p in args.peers.split(",") if p)
    for name, make in jobs:
        print(f"== {name}", flush=True)
        bench = make()
        result[name] = run_dataset(bench, args.seeds, 1 if args.quick else args.members, args.quick, args.config,
                                   run_root, peers, log=lambda m: print(m, flush=True),
                                   save_scores=Path(args.save_scores) if args.save_scores else None)
        print(table(name, result[name]), flush=True)
    result["seconds"] = timer()
    # the project's own benchmark table is not replaced by a run on a user's files: those go to --json
    keep = not (args.no_results or args.train)
    if not (keep or args.json):
        print("(no --json: the results above are not written anywhere)")
    return finish("quality", result, args.json, keep, markdown, merge=args.merge)


if __name__ == "__main__":
    main()
