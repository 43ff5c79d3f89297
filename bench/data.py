"""Data at scale: load time and peak RSS (streamed into the memory-mapped cache, reopened, and the
whole-file `load_dataset`) against pyarrow's bare reader of the same file, measured in the same run
(`ratios`: seconds and peak RSS as multiples of pyarrow's); rows: demo-small JSONL, a clip-only JSONL
(flickr8k-dev's 20,000 candidates with 512-d CLIP vectors, spec inferred; when the shared dataset is there), 10^4 / 10^5
candidates as JSONL and Parquet, 10^6 as Parquet. Optionally training's peak RSS for one epoch at 1x, 4x,
16x the default demo, and scoring every candidate of the largest file with a trained run. Each
measurement runs in its own interpreter (peak RSS = its VmHWM: ru_maxrss would keep the parent's peak).

    nice -n 10 python bench/data.py --json OUT [--sizes 10000,100000,1000000] [--train-scales 1,4,16]
    (issue 28's run: --sizes 10000,100000,1000000 --train-scales "")
    one row only, e.g. the 10^6 Parquet build, 3 times:
    python bench/data.py --json /tmp/d.json --sizes 1000000 --formats parquet --train-scales "" --repeat 3

Files are the demo's lists tiled with fresh ids (`make-demo-data --queries N`). Writes OUT, and
bench/results/data.json when every format was measured (the default). Each probe also reports its CPU
seconds (user + system, all threads): on a shared machine `cpu_x_pyarrow` moves less than wall time.
--repeat N measures pyarrow and the cold build N times, alternating, and adds the median of the paired
ratios (`seconds_x_pyarrow_median`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402
from cotrr_core.io import write_json  # noqa: E402

DEMO_QUERIES, DEMO_CANDIDATES = 600, 23_913  # the default demo (bench/results/quality.json)
FORMATS = ("parquet", "jsonl")

# Each probe runs in a fresh interpreter and prints {"seconds", "peak_rss_mb", ...} as its last line.
_PROBE = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
kind, path = sys.argv[1], sys.argv[2]
extra = {{}}
# every branch starts the clock after its imports: a serving or app process has the library loaded already
if kind == "cached":  # streamed into the cache (cold) or reopened from it (warm)
    from cotrr_core.data.spec import builtin_spec
    from cotrr_core.data.stream import cached_splits
    t = time.perf_counter()
    n = sum(d.num_candidates for d in cached_splits(path, builtin_spec("step5")).values())
elif kind == "inferred":  # as `cached`, the spec inferred from the file first (what load_benchmark(path) does)
    from pathlib import Path
    from cotrr_core.data.infer import resolve_spec
    from cotrr_core.data.stream import cached_splits
    t = time.perf_counter()
    n = sum(d.num_candidates for d in cached_splits(path, resolve_spec(Path(path), "jsonl", path)).values())
elif kind == "whole":
    from cotrr_core.data import load_dataset
    t = time.perf_counter()
    n = load_dataset(path).num_candidates
elif kind == "pyarrow":
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        t = time.perf_counter()
        n = pq.read_table(path).num_rows
    else:
        import pyarrow.json as pj
        t = time.perf_counter()
        n = pj.read_json(path, pj.ReadOptions(block_size=1 << 26)).num_rows
elif kind == "score":  # every candidate of every split, through the run's model, batch by batch
    from cotrr_core.data.spec import builtin_spec
    from cotrr_core.data.stream import cached_splits
    from cotrr_core.scoring import score_padded
    from cotrr_core.artifacts import load_run
    t = time.perf_counter()
    run = load_run(sys.argv[3], device="cpu")
    n = 0
    for d in cached_splits(path, builtin_spec("step5")).values():
        p = d.padded()
        n += int(score_padded(run.model, p, run.device, batch_lists=128)[p.mask].size)
else:  # train one epoch (the cache was built by an earlier probe)
    from cotrr_core.data.benchmarks import load_benchmark
    from cotrr_core.training.recipe import fast_config
    from cotrr_core.training.trainer import fit
    import pathlib
    t = time.perf_counter()
    cfg = fast_config(); cfg.train.epochs = 1
    pathlib.Path(sys.argv[3]).mkdir(parents=True, exist_ok=True)
    bench = load_benchmark(path)
    n = bench.splits["train"].num_candidates
    extra["test_ndcg@10"] = fit(bench, cfg, sys.argv[3], calibrate=False)["test"]["cotrr"]["ndcg@10"]
use = resource.getrusage(resource.RUSAGE_SELF)
# this process's own peak (VmHWM): ru_maxrss keeps the parent's peak across fork + exec
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
peak_kib = int(hwm[0].split()[1]) if hwm else use.ru_maxrss
print(json.dumps({{"seconds": time.perf_counter() - t, "cpu_seconds": use.ru_utime + use.ru_stime,
                  "peak_rss_mb": peak_kib / 1024, "rows": n, **extra}}))
"""


PROBE_TIMEOUT_S = 1800.0


def probe(cache: Path, *args: str) -> dict:
    env = {**os.environ, "COTRR_CACHE": str(cache)}
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE.format(root=str(ROOT)), *args], capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {PROBE_TIMEOUT_S:.0f} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        return {"error": tail or f"exit {proc.returncode} (killed: out of memory?)"}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "loadavg": os.getloadavg()[0]}


def ratios(row: dict) -> dict:
    """Seconds, CPU seconds and peak RSS of each load against pyarrow's bare read of the same file, in the
    same run (with repeats: the median of the paired seconds ratios too)."""
    ref = row.get("pyarrow", {})
    out = {}
    for k in ("cached_cold", "whole"):
        got = row.get(k, {})
        if "seconds" in got and "seconds" in ref:
            out[k] = {"seconds_x_pyarrow": round(got["seconds"] / ref["seconds"], 3),
                      "peak_rss_x_pyarrow": round(got["peak_rss_mb"] / ref["peak_rss_mb"], 3)}
            if "cpu_seconds" in got and "cpu_seconds" in ref:
                out[k]["cpu_x_pyarrow"] = round(got["cpu_seconds"] / ref["cpu_seconds"], 3)
    paired = [r["cached_cold"]["seconds"] / r["pyarrow"]["seconds"] for r in row.get("repeats", [])
              if "seconds" in r["cached_cold"] and "seconds" in r["pyarrow"]]
    if paired and "cached_cold" in out:
        out["cached_cold"]["seconds_x_pyarrow_median"] = round(float(statistics.median(paired)), 3)
        out["cached_cold"]["seconds_x_pyarrow_each"] = [round(x, 3) for x in paired]
    return out


def load_row(path: Path, out_dir: Path, whole: bool, repeat: int = 1, cached: str = "cached") -> dict:
    """One file: streamed into a cold cache, reopened warm, pyarrow's bare read, optionally load_dataset;
    repeat > 1: pyarrow and the cold build again, alternating (each build into an emptied cache).
    cached="inferred": the cache probes infer the file's spec first."""
    cache = cold_cache(out_dir, path)
    row = {"file_mb": path.stat().st_size / 2**20, "pyarrow": probe(cache, "pyarrow", str(path)),
           "cached_cold": probe(cache, cached, str(path)), "cached_warm": probe(cache, cached, str(path))}
    if whole:
        row["whole"] = probe(cache, "whole", str(path))
    if repeat > 1:
        row["repeats"] = [{"pyarrow": row["pyarrow"], "cached_cold": row["cached_cold"]}]
        for _ in range(repeat - 1):
            ref = probe(cache, "pyarrow", str(path))
            row["repeats"].append({"pyarrow": ref, "cached_cold": probe(cold_cache(out_dir, path), cached, str(path))})
    row["ratios"] = ratios(row)
    return row


def demo_small_jsonl(out: Path) -> Path:
    path = out / "demo_small_scored.jsonl"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "cotrr_core", "make-demo-data", "--small", "--format", "jsonl",
                        "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    return path


def clip_jsonl(out: Path) -> Path | None:
    """flickr8k-dev as the clip-only Step5 JSONL a user of this task hands to `train` (20,000 candidates, 512-d
    CLIP vectors: spec inferred from the file), written from the shared dataset; None without it."""
    from cotrr_core.data.benchmarks import shared_datasets_dir
    from cotrr_core.data.flickr8k import FLICKR8K_DIR, write_flickr8k_jsonl

    path, root = out / "flickr8k_clip.jsonl", shared_datasets_dir() / FLICKR8K_DIR
    if not path.exists() and root.exists():
        write_flickr8k_jsonl(root, path)
    return path if path.exists() else None


def demo_file(n_queries: int, fmt: str, out: Path) -> Path:
    path = out / f"demo_{n_queries}q_scored.{fmt}"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "cotrr_core", "make-demo-data", "--queries", str(n_queries),
                        "--format", fmt, "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    return path


def cold_cache(out: Path, path: Path) -> Path:
    """A cache folder of this file's own, emptied: the next `cached` probe streams the file into it."""
    cache = out / "cache" / path.name
    shutil.rmtree(cache, ignore_errors=True)
    return cache


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", required=True)
    p.add_argument("--sizes", default="10000,100000,1000000", help="candidates per load test")
    p.add_argument("--jsonl-max", type=int, default=100_000, help="largest size also written as JSONL")
    p.add_argument("--whole-max", type=int, default=100_000, help="largest size loaded whole (load_dataset)")
    p.add_argument("--train-scales", default="1,4,16", help="multiples of the demo for the training test ('' skips it)")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "datasets" / "scale"))
    p.add_argument("--formats", default=",".join(FORMATS),
                   help="load-test formats (jsonl also runs the demo-small row); only a run of all of them "
                        "writes bench/results/data.json")
    p.add_argument("--repeat", type=int, default=1, help="pyarrow and cold-build measurements per file")
    args = p.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    if not formats or set(formats) - set(FORMATS):
        p.error(f"--formats: a comma-separated subset of {','.join(FORMATS)}")
    t0 = time.perf_counter()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"command": " ".join(["python", "bench/data.py", *sys.argv[1:]]), "machine": machine(),
                    "loadavg_before": os.getloadavg(), "load": {}, "train_peak_rss_mb": {},
                    "train": {}, "score": {},
                    "notes": f"JSONL only up to {args.jsonl_max} candidates (10^6 as JSONL is ~21 GB); the whole-file "
                             f"load_dataset only up to {args.whole_max} (beyond, it does not fit in memory). "
                             "cached_cold = streamed into the cache; cached_warm = reopened (memmap)."}
    if "jsonl" in formats:
        row = load_row(demo_small_jsonl(out_dir), out_dir, whole=True, repeat=args.repeat)
        result["load"]["jsonl_demo_small"] = row
        print(f"load jsonl demo-small: {json.dumps(row)}", flush=True)
        clip = clip_jsonl(out_dir)
        if clip is not None:
            result["load"]["jsonl_clip_flickr8k"] = row = load_row(clip, out_dir, whole=True, repeat=args.repeat,
                                                                   cached="inferred")
            print(f"load jsonl clip (flickr8k-dev, spec inferred): {json.dumps(row)}", flush=True)
    for scale in (int(s) for s in args.train_scales.split(",") if s):
        path = demo_file(DEMO_QUERIES * scale, "parquet", out_dir)
        cache = cold_cache(out_dir, path)
        build = probe(cache, "cached", str(path))
        run = probe(cache, "train", str(path), str(out_dir / f"run_{scale}x"))
        result["train"][f"{scale}x"] = {**run, "cache_build": build}
        result["train_peak_rss_mb"][f"{scale}x"] = run.get("peak_rss_mb")
        print(f"train {scale}x: {json.dumps(result['train'][f'{scale}x'])}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        n_queries = max(1, round(size * DEMO_QUERIES / DEMO_CANDIDATES))
        for fmt in (f for f in FORMATS if f in formats):
            if fmt == "jsonl" and size > args.jsonl_max:
                continue
            path = demo_file(n_queries, fmt, out_dir)
            cache = cold_cache(out_dir, path)
            row = load_row(path, out_dir, whole=size <= args.whole_max, repeat=args.repeat)
            if size == max(sizes) and fmt == "parquet" and (out_dir / "run_1x" / "model.pt").exists():
                result["score"][f"{fmt}_{size}"] = probe(cache, "score", str(path), str(out_dir / "run_1x"))
                print(f"score {fmt} {size}: {json.dumps(result['score'][f'{fmt}_{size}'])}", flush=True)
            result["load"][f"{fmt}_{size}"] = row
            print(f"load {fmt} {size}: {json.dumps(row)}", flush=True)
            if size > args.jsonl_max:
                shutil.rmtree(cache, ignore_errors=True)  # gigabytes: not kept
    result["loadavg_after"] = os.getloadavg()
    result["seconds"] = time.perf_counter() - t0
    full = set(formats) == set(FORMATS)  # a partial run never replaces the results file
    for path in (Path(args.json), *([ROOT / "bench" / "results" / "data.json"] if full else [])):
        write_json(path, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
