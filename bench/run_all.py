"""Regenerate every file in bench/results/ with one command, each stamped with machine, commit,
load average and seconds.

    nice -n 10 python bench/run_all.py [--only quality,calibration,serve,search,data]

Runs each bench as its own process, in order, then adds to each results JSON the keys it lacks of
"machine", "commit", "load_average" (at start), "load_average_end" and "run_all_seconds", and writes
bench/results/run_all.json (one row per bench: command, exit code, seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS, machine, stamp, write_json  # noqa: E402

PER_DATASET = {"quality": ("demo", "mq2008", "mslr-tiny", "flickr8k-dev"), "calibration": ("demo", "mq2008")}
# name -> (command, results JSON it writes)
BENCHES = {
    # one process per dataset, all at once, each merging its section into the results file
    "quality": ([sys.executable, "bench/quality.py", "--merge", "--datasets"], "quality.json"),
    "calibration": ([sys.executable, "bench/calibration.py", "--merge", "--datasets"], "calibration.json"),
    "serve": ([sys.executable, "bench/serve.py", "--json", str(RESULTS / "serve.json")], "serve.json"),
    "search": ([sys.executable, "bench/search.py", "--datasets", "mq2008"], "search.json"),
    "data": ([sys.executable, "bench/data.py", "--json", str(RESULTS / "data.json")], "data.json"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(BENCHES))
    args = p.parse_args(argv)
    rows, worst = [], 0
    for name in [n for n in args.only.split(",") if n]:
        cmd, out = BENCHES[name]
        start = stamp()
        t0 = time.perf_counter()
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        if name in PER_DATASET:
            procs = [subprocess.Popen(cmd + [ds], cwd=REPO) for ds in PER_DATASET[name]]
            rc = max(p.wait() for p in procs)
        else:
            rc = subprocess.run(cmd, cwd=REPO).returncode
        seconds = round(time.perf_counter() - t0, 1)
        worst = max(worst, rc)
        args_shown = cmd[1:] + (["{" + ",".join(PER_DATASET[name]) + "} (one process each)"] if name in PER_DATASET else [])
        rows.append({"bench": name, "command": " ".join(["python"] + args_shown), "rc": rc, "seconds": seconds, **start})
        path = RESULTS / out
        if rc == 0 and path.exists():
            result = json.loads(path.read_text())
            for key, value in {"machine": machine(), **start,
                               "load_average_end": [round(x, 2) for x in os.getloadavg()]}.items():
                result.setdefault(key, value)
            result["run_all_seconds"] = seconds
            write_json(path, result)
    # merge by bench name, so `--only` runs (e.g. two halves at once) keep each other's rows
    log = RESULTS / "run_all.json"
    old = json.loads(log.read_text()).get("benches", []) if log.exists() else []
    done = {r["bench"] for r in rows}
    write_json(log, {"machine": machine(), "benches": [r for r in old if r["bench"] not in done] + rows})
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
