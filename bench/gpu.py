"""GPU benchmark, to run on a machine with CUDA: train, torchrun, serve, bf16 vs fp32.

    python bench/gpu.py --json OUT [--calls 300]

Trains the default (full-size) demo model on CUDA, runs `torchrun` with one process per GPU on
NCCL, scores the test split through `Reranker.rerank_batch` and through the bare model on the same
padded batch, times single top-20 lists with 5 MC samples, and compares bf16 with fp32 nDCG@10.
Writes OUT and bench/results/gpu.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402
from bench.serve import BIG, padded_batch, timed  # noqa: E402
from cotrr_core.config import RunConfig  # noqa: E402
from cotrr_core.data.benchmarks import load_benchmark  # noqa: E402
from cotrr_core.evaluation.compare import evaluate_scores  # noqa: E402
from cotrr_core.io import read_json, write_json  # noqa: E402
from cotrr_core.serving.features import request_records  # noqa: E402
from cotrr_core.serving.reranker import Reranker  # noqa: E402
from cotrr_core.training.runs import new_run_dir  # noqa: E402
from cotrr_core.training.trainer import fit  # noqa: E402


def cuda_throughput(fn, n_candidates: int, repeats: int = 5) -> float:
    """Candidates per second of fn() (best of `repeats`), synchronising the GPU around each call."""
    fn()
    torch.cuda.synchronize()
    best = np.inf
    for _ in range(repeats):
        a = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - a)
    return n_candidates / best


def run_torchrun(nproc: int) -> dict:
    """`torchrun` on the demo with one process per GPU; ok when it exits 0 and records its world size."""
    run_dir = new_run_dir("gpu-ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "cotrr_core", "train", "--dataset", "demo", "--fast", "--run-dir", str(run_dir),
           "--set", 'train.device="cuda"']
    a = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    meta = read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
    return {"nproc": nproc, "returncode": proc.returncode, "seconds": time.perf_counter() - a,
            "world_size": meta.get("world_size"), "test_ndcg@10": metrics.get("test", {}).get("cotrr", {}).get("ndcg@10"),
            "ok": proc.returncode == 0 and meta.get("world_size") == nproc, "stderr_tail": proc.stderr[-2000:]}


def ndcg(reranker: Reranker, test) -> float:
    res = reranker.rerank_arrays(test.features, test.offsets, top_m=10_000)
    return evaluate_scores(test, res.raw_score)["ndcg@10"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", required=True)
    p.add_argument("--calls", type=int, default=300)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("error: bench/gpu.py needs CUDA", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    bench = load_benchmark("demo")
    cfg = RunConfig()
    cfg.train.device = "cuda"
    run_dir = new_run_dir("gpu-default")
    a = time.perf_counter()
    metrics = fit(bench, cfg, run_dir)
    out = {"device": torch.cuda.get_device_name(0), "machine": machine(), "train_device": metrics["device"],
           "train_seconds": metrics["train_seconds"], "wall_seconds": time.perf_counter() - a,
           "test_ndcg@10": metrics["test"]["cotrr"]["ndcg@10"], "run": str(run_dir)}

    out["torchrun"] = run_torchrun(max(1, torch.cuda.device_count()))
    out["ddp_ok"] = out["torchrun"]["ok"]

    rr = Reranker.load(run_dir, device="cuda")
    test = bench.splits["test"]
    lists = [(str(test.queries[q]), request_records(test, q)) for q in range(test.num_queries)]
    n = sum(len(c) for _, c in lists)
    out["rerank_batch_cps"] = cuda_throughput(lambda: rr.rerank_batch(lists, top_m=10_000), n)
    out["rerank_arrays_cps"] = cuda_throughput(lambda: rr.rerank_arrays(test.features, test.offsets, top_m=10_000), n)
    tokens, mask = padded_batch(rr, lists)
    with torch.inference_mode():
        out["model_cps"] = cuda_throughput(lambda: rr.model(tokens, mask), n)
    out["batch_vs_model"] = out["rerank_batch_cps"] / out["model_cps"]
    top20 = [(q, c[:20]) for q, c in lists]
    cycle = iter(range(10**9))
    lat = timed(lambda: rr.rerank(*top20[next(cycle) % len(top20)], mc_samples=5, time_budget_ms=BIG), args.calls)
    out.update(p50_ms_mc5=lat["p50"], p99_ms_mc5=lat["p99"])

    fp32 = ndcg(rr, test)
    bf16 = ndcg(Reranker(rr.run, rr.policy, precision="bf16"), test)
    out.update(fp32_ndcg=fp32, bf16_ndcg=bf16, bf16_delta_ndcg=bf16 - fp32)
    out["seconds"] = time.perf_counter() - t0
    for path in (Path(args.json), ROOT / "bench" / "results" / "gpu.json"):
        write_json(path, out)
    print(json.dumps({k: v for k, v in out.items() if k != "torchrun"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
