"""Does `python -m cotrr_core train` serve bench/quality.py's `cotrr` row? (issue 27's done-means check)

    python bench/quality.py --datasets mq2008 --seeds 1 --members 1 --no-results --json /tmp/q.json
    python bench/train_vs_quality.py --dataset mq2008 --quality /tmp/q.json [--run-dir DIR] [--rep 0]

Trains with the command line exactly as a user would (the automatic recipe, train.seed = rep * members, the
bench's seed for that repetition), unless --run-dir names a finished run of it, then scores the test split
through Reranker.rerank_arrays (bench/quality.served_scores) and compares its nDCG@10 with the bench's
`cotrr` for that repetition. Exit status 1 when they differ by more than --tol (0.002).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# the repository root, not bench/, first: a bench/<name>.py must not shadow a standard module (http)
sys.path[:] = [str(Path(__file__).resolve().parents[1])] + [p for p in sys.path
                                                            if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from bench.quality import PRIMARY, served_scores  # noqa: E402
from cotrr_core.data.benchmarks import load_benchmark  # noqa: E402
from cotrr_core.evaluation.compare import evaluate_scores  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--quality", required=True, help="bench/quality.py --json output for the dataset")
    p.add_argument("--rep", type=int, default=0)
    p.add_argument("--run-dir", help="a finished `train` run of this dataset and seed (default: train one now)")
    p.add_argument("--tol", type=float, default=0.002)
    args = p.parse_args(argv)
    sec = json.loads(Path(args.quality).read_text())[args.dataset]
    seed = args.rep * sec["members"]
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="cotrr-train-")) / "run"
    if not args.run_dir:
        subprocess.run([sys.executable, "-m", "cotrr_core", "train", "--dataset", args.dataset, "--run-dir",
                        str(run_dir), "--set", f"train.seed={seed}"], check=True)
    test = load_benchmark(args.dataset).splits["test"]
    served = evaluate_scores(test, served_scores(run_dir, test), PRIMARY)["ndcg@10"]
    bench = sec["cotrr"]["ndcg@10_spread"]["seeds"][args.rep]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = {"dataset": args.dataset, "seed": seed, "run_dir": str(run_dir),
              "train_served_test_ndcg@10": served, "train_metrics_test_ndcg@10": metrics["test"]["cotrr"]["ndcg@10"],
              "bench_cotrr_test_ndcg@10": bench, "difference": served - bench, "tolerance": args.tol,
              "blend_weight": metrics.get("blend", {}).get("weight"), "best_epoch": metrics.get("best_epoch")}
    print(json.dumps(report, indent=1))
    return 0 if abs(served - bench) <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
