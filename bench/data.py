"""Data at scale: load time and peak RSS of `load_dataset` against pyarrow's bare reader on the same
files, and training's peak RSS for one epoch as the demo grows (each measured in its own process).

    python bench/data.py --json OUT [--sizes 10000,100000] [--train-scales 1,4]

Files are the demo's lists tiled with fresh ids (`make-demo-data --queries N`). Writes OUT and
bench/results/data.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402
from cotrr_core.io import write_json  # noqa: E402

DEMO_QUERIES, DEMO_CANDIDATES = 600, 23_913  # the default demo (bench/results/quality.json)

# Each probe runs in a fresh interpreter and prints {"seconds", "peak_rss_mb"} as its last line.
_PROBE = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
kind, path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if kind == "cotrr":
    from cotrr_core.data import load_dataset
    n = load_dataset(path).num_candidates
elif kind == "pyarrow":
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        n = pq.read_table(path).num_rows
    else:
        import pyarrow.json as pj
        n = pj.read_json(path, pj.ReadOptions(block_size=1 << 26)).num_rows
else:  # train one epoch
    from cotrr_core.data.benchmarks import load_benchmark
    from cotrr_core.training.recipe import fast_config
    from cotrr_core.training.trainer import fit
    import pathlib
    cfg = fast_config(); cfg.train.epochs = 1
    pathlib.Path(sys.argv[3]).mkdir(parents=True, exist_ok=True)
    bench = load_benchmark(path)
    n = bench.splits["train"].num_candidates
    fit(bench, cfg, sys.argv[3], calibrate=False)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": time.perf_counter() - t, "peak_rss_mb": rss, "rows": n}}))
"""


def probe(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(root=str(ROOT)), *args], capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def demo_file(n_queries: int, fmt: str, out: Path) -> Path:
    path = out / f"demo_{n_queries}q_scored.{fmt}"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "cotrr_core", "make-demo-data", "--queries", str(n_queries),
                        "--format", fmt, "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", required=True)
    p.add_argument("--sizes", default="10000,100000", help="candidates per load test")
    p.add_argument("--jsonl-max", type=int, default=10_000, help="largest size also written as JSONL")
    p.add_argument("--train-scales", default="1,4", help="multiples of the demo for the training test")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "datasets" / "scale"))
    args = p.parse_args()
    t0 = time.perf_counter()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": machine(), "loadavg_before": os.getloadavg(), "load": {}, "train_peak_rss_mb": {},
                    "train": {}}
    for size in (int(s) for s in args.sizes.split(",")):
        n_queries = max(1, round(size * DEMO_QUERIES / DEMO_CANDIDATES))
        for fmt in ("parquet", "jsonl"):
            if fmt == "jsonl" and size > args.jsonl_max:
                continue
            path = demo_file(n_queries, fmt, out_dir)
            row = {"file_mb": path.stat().st_size / 2**20, "cotrr": probe("cotrr", str(path)),
                   "pyarrow": probe("pyarrow", str(path))}
            if "seconds" in row["cotrr"] and "seconds" in row["pyarrow"]:
                row["time_ratio"] = row["cotrr"]["seconds"] / row["pyarrow"]["seconds"]
            result["load"][f"{fmt}_{size}"] = row
            print(f"load {fmt} {size}: {json.dumps(row)}", flush=True)
    for scale in (int(s) for s in args.train_scales.split(",")):
        path = demo_file(DEMO_QUERIES * scale, "parquet", out_dir)
        run = probe("train", str(path), str(out_dir / f"run_{scale}x"))
        result["train"][f"{scale}x"] = run
        result["train_peak_rss_mb"][f"{scale}x"] = run.get("peak_rss_mb")
        print(f"train {scale}x: {json.dumps(run)}", flush=True)
    result["loadavg_after"] = os.getloadavg()
    result["seconds"] = time.perf_counter() - t0
    for path in (Path(args.json), ROOT / "bench" / "results" / "data.json"):
        write_json(path, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
