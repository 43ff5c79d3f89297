"""The recipe search behind recipe.auto_config: variants of the automatic recipe, on VALIDATION only.

    python bench/search.py [--datasets mq2008] [--seeds 3]

Each variant changes one thing of auto_config's choice for the dataset; every variant is trained
with the same seeds (0..S-1, one thread) and scored by its best-epoch validation nDCG@10 (mean and
sd over seeds) and the nDCG@10 of the seed ensemble (z-scored scores averaged). Test is never
loaded into a metric here. Writes bench/results/search.json and search.md.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Timer, finish, get_benchmark, md_table, score_run, stamp, train_run  # noqa: E402

VARIANTS: dict[str, dict] = {
    "auto": {},
    "ranknet only (old mq2008 config)": {"loss.pairwise_warmup_epochs": 1000},
    "softmax CE instead of ListMLE+focal": {"loss.listwise": "softmax", "loss.listmle_weight": 1.0,
                                            "loss.focal_weight": 0.0},
    "input noise 0.1": {"train.input_noise": 0.1},
    "no list context": {"model.list_context": False},
    "log1p features on": {"train.log_features": "on"},
}


def run_dataset(name: str, seeds: int, log=print) -> dict:
    from cotrr_core.evaluation.compare import evaluate_scores
    from cotrr_core.training.recipe import auto_config

    timer = Timer()
    bench = get_benchmark(name)
    val = bench.splits["val"]
    base, rule = auto_config(bench.splits["train"])
    rows = {}
    root = Path(tempfile.mkdtemp(prefix="cotrr-search-"))
    try:
        for variant, over in VARIANTS.items():
            t = Timer()
            singles, zs = [], []
            for seed in range(seeds):
                cfg = base.with_overrides({**over, "train.seed": seed})
                run_dir, metrics = train_run(bench, cfg, f"search-s{seed}", root)
                singles.append(metrics["best_val_ndcg@10"])
                s = score_run(run_dir, val)
                zs.append((s - s.mean()) / max(s.std(), 1e-12))
            ens = evaluate_scores(val, np.mean(zs, axis=0))["ndcg@10"]
            rows[variant] = {"overrides": over, "val_ndcg@10_mean": float(np.mean(singles)),
                             "val_ndcg@10_sd": float(np.std(singles, ddof=1)) if seeds > 1 else 0.0,
                             "val_ndcg@10_seeds": [float(x) for x in singles], "val_ndcg@10_ensemble": float(ens),
                             "seconds": t()}
            log(f"  [{name}] {variant}: {rows[variant]['val_ndcg@10_mean']:.4f} ensemble {ens:.4f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"variants": rows, "recipe": rule, "base_config": base.to_dict(), "seeds": seeds, "split": "val",
            "val_queries": val.num_queries, "seconds": timer()}


def markdown(result: dict) -> str:
    parts = ["# Recipe search on validation (test never read)", "", f"Command: `{result['command']}`", "",
             f"Machine: {result['machine']}. Commit {result.get('commit')}, load average at start "
             f"{result.get('load_average')}. Total {result['seconds']} s.", ""]
    for name, sec in result.items():
        if isinstance(sec, dict) and "variants" in sec:
            rows = [[v, r["val_ndcg@10_mean"], r["val_ndcg@10_sd"], r["val_ndcg@10_ensemble"], r["seconds"]]
                    for v, r in sec["variants"].items()]
            parts += [f"### {name}", "", f"Base: {sec['recipe']}. {sec['seeds']} seeds, {sec['val_queries']} val queries.",
                      "", md_table(["variant", "val nDCG@10 mean", "sd", "seed ensemble", "seconds"], rows), ""]
    return "\n".join(parts)


def main(argv=None) -> dict:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="mq2008")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--json")
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    timer = Timer()
    result: dict = {"command": "python bench/search.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    result.update(stamp())
    for name in [n for n in args.datasets.split(",") if n]:
        print(f"== {name}", flush=True)
        result[name] = run_dataset(name, args.seeds, log=lambda m: print(m, flush=True))
    result["seconds"] = timer()
    return finish("search", result, args.json, not args.no_results, markdown)


if __name__ == "__main__":
    main()
