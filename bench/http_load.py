"""HTTP load test (not bench/http.py: run as a script, that name would shadow the standard library's http
for every script in bench/): `cotrr_core serve` on 127.0.0.1 against the in-process Reranker in the same run, then faults.

    python bench/http_load.py [--run RUN_DIR] [--calls 960] [--rounds 4] [--workers 2] [--json OUT]

Throughput and client p50 / p99 of one top-20 list (plain, the default budget) at concurrency 1, 8 and 32: the
in-process API (threads calling Reranker.rerank on one Reranker) and the server (`serve --workers N`, one worker
process per core by default: a worker's interpreter lock serialises its JSON parsing, HTTP handling and scoring,
so one worker uses about one core; threads on keep-alive connections, bodies encoded once beforehand). At each
level the two take turns, round by round (--rounds), on the same run, lists and budget; their rounds are pooled,
and the level records the load average after it.
Faults: bad JSON, oversized bodies, slow clients (body timeout), a killed worker (2 workers); then the decision
logs are checked: no request id twice, every answered request logged.
Writes OUT (default bench/results/http.json: regenerate that on a quiet machine only).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, stamp  # noqa: E402
from bench.serve import pick_run  # noqa: E402
from cotrr_core.data.benchmarks import load_benchmark  # noqa: E402
from cotrr_core.io import write_json  # noqa: E402
from cotrr_core.serving.decision_log import read_decisions  # noqa: E402
from cotrr_core.serving.features import request_records  # noqa: E402
from cotrr_core.serving.reranker import Reranker  # noqa: E402

LEVELS = (1, 8, 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, logs: Path, workers: int = 1, extra: tuple = ()) -> tuple[subprocess.Popen, int]:
    """`serve` on a free port, once /readyz answers 200 (bounded: 90 s)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cotrr_core", "serve", str(run), "--port", str(port), "--workers",
                             str(workers), "--log-dir", str(logs), *extra], cwd=ROOT)
    for _ in range(900):  # bounded: 90 s to load and warm
        try:
            if request(port, "GET", "/readyz")[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not become ready")


def request(port: int, method: str, path: str, body: bytes | None = None, conn=None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    if own:
        conn.close()
    return out


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def take_turns(sides: dict, n_threads: int, calls: int, rounds: int) -> dict:
    """Each side's `calls` split into `rounds` rounds, the sides alternating round by round (so both see the
    same machine when its load moves), then pooled: {side: summary}."""
    runs: dict = {name: [] for name in sides}
    for r in range(rounds):
        share = calls // rounds + (r < calls % rounds)
        for name, call in sides.items():
            runs[name].append(_round(call, n_threads, share))
    return {name: summary(n_threads, parts) for name, parts in runs.items()}


def _round(call, n_threads: int, calls: int) -> tuple[list, float, dict]:
    """(waits in s, wall s, outcome counts) of `calls` calls on `n_threads` client threads."""
    waits, outcomes, lock = [], {}, threading.Lock()

    def client(t: int) -> None:
        mine, seen = [], {}
        state = {}
        for i in range(calls // n_threads):
            a = time.perf_counter()
            out = call(t, i, state)
            mine.append(time.perf_counter() - a)
            seen[out] = seen.get(out, 0) + 1
        with lock:
            waits.extend(mine)
            for k, v in seen.items():
                outcomes[k] = outcomes.get(k, 0) + v

    threads = [threading.Thread(target=client, args=(t,)) for t in range(n_threads)]
    a = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return waits, time.perf_counter() - a, outcomes


def summary(n_threads: int, parts: list[tuple[list, float, dict]]) -> dict:
    """Pooled rounds: lists/s (calls over the rounds' summed wall time), client p50 / p99 ms, outcome counts."""
    w = 1e3 * np.concatenate([np.asarray(p[0]) for p in parts])
    outcomes: dict = {}
    for _, _, seen in parts:
        for k, v in seen.items():
            outcomes[k] = outcomes.get(k, 0) + v
    return {"concurrency": n_threads, "calls": len(w), "rounds": len(parts),
            "lists_per_s": len(w) / sum(p[1] for p in parts), "p50_ms": float(np.percentile(w, 50)),
            "p99_ms": float(np.percentile(w, 99)), "outcomes": outcomes}


def http_call(port: int, bodies: list[bytes]):
    def call(t: int, i: int, state: dict) -> str:
        if "conn" not in state:
            state["conn"] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            status, body = request(port, "POST", "/v1/rerank", bodies[(t * 997 + i) % len(bodies)], state["conn"])
        except OSError as exc:
            state.pop("conn").close()
            return f"connection:{type(exc).__name__}"
        return str(status) if status != 200 else (json.loads(body)["fallback_reason"] or "reranked")
    return call


def faults(run: Path, logs: Path, bodies: list[bytes]) -> dict:
    """Bad JSON, oversized bodies, slow clients and a killed worker against 2 workers; then the logs."""
    proc, port = start_server(run, logs, workers=2, extra=("--max-body-bytes", "2000000", "--body-timeout-s", "1"))
    out: dict = {}
    out["bad_json"] = [request(port, "POST", "/v1/rerank", b"{nope")[0] for _ in range(10)]
    out["oversized"] = [request(port, "POST", "/v1/rerank", b" " * 3_000_000)[0] for _ in range(5)]
    out["body_bytes_mean"] = float(np.mean([len(b) for b in bodies]))
    out["slow_clients"] = _slow_clients(port, 4)
    answered: list[str] = []
    out["killed_worker"] = _kill_a_worker(proc, port, bodies, answered)
    stop(proc)
    recs = read_decisions(logs)
    ids = [r["request_id"] for r in recs]
    logged = set(ids)
    out["log"] = {"records": len(ids), "duplicates": len(ids) - len(logged),
                  "answered_200": len(answered), "answered_but_missing": sum(r not in logged for r in answered),
                  "note": "a killed worker loses the records still queued in its memory (decision_log.py)"}
    return out


def _slow_clients(port: int, n: int) -> dict:
    """`n` clients that promise 1000 bytes and send 10 per 0.5 s, while 50 normal requests go through."""
    def slow(res: list) -> None:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        try:
            for _ in range(8):
                s.sendall(b" " * 10)
                time.sleep(0.5)
            res.append(s.recv(200).split(b" ")[1].decode())
        except OSError as exc:
            res.append(type(exc).__name__)
        s.close()

    results: list = []
    threads = [threading.Thread(target=slow, args=(results,)) for _ in range(n)]
    for t in threads:
        t.start()
    normal = [request(port, "GET", "/healthz")[0] for _ in range(50)]
    for t in threads:
        t.join()
    return {"slow_statuses": results, "normal_during": {str(s): normal.count(s) for s in set(normal)}}


def _kill_a_worker(proc: subprocess.Popen, port: int, bodies: list[bytes], answered: list[str]) -> dict:
    """8 clients for 6 s; after 2 s one worker process is killed (SIGKILL): outcomes, and whether serving goes on."""
    stop_at, killed = time.perf_counter() + 6.0, {}
    outcomes: dict = {}
    lock = threading.Lock()

    def client(t: int) -> None:
        conn, i = None, 0
        while time.perf_counter() < stop_at:
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status, body = request(port, "POST", "/v1/rerank", bodies[(t * 31 + i) % len(bodies)], conn)
                key = str(status)
                if status == 200:
                    with lock:
                        answered.append(json.loads(body)["request_id"])
            except OSError as exc:
                key, conn = f"connection:{type(exc).__name__}", None
            with lock:
                outcomes[key] = outcomes.get(key, 0) + 1
            i += 1

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    workers = [int(c) for c in children if "multiprocessing" in Path(f"/proc/{c}/cmdline").read_text()]
    if workers:
        os.kill(workers[0], signal.SIGKILL)
        killed["pid"] = workers[0]
    for t in threads:
        t.join()
    after = request(port, "GET", "/readyz")[0]
    return {"outcomes": outcomes, "killed": bool(killed), "readyz_after": after}


def _stack(workers: int) -> dict:
    """What serves: worker processes, and the HTTP parser / event loop / JSON codec uvicorn and http.py use."""
    import importlib.util
    from importlib.metadata import version

    have = {m: importlib.util.find_spec(m) is not None for m in ("httptools", "uvloop")}
    return {"workers": workers, "http": f"httptools {version('httptools')}" if have["httptools"] else "h11",
            "loop": f"uvloop {version('uvloop')}" if have["uvloop"] else "asyncio",
            "json": f"msgspec {version('msgspec')}", "uvicorn": version("uvicorn"), "starlette": version("starlette")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run")
    p.add_argument("--calls", type=int, default=960, help="calls per side and level")
    p.add_argument("--rounds", type=int, default=4, help="turns per level: the sides alternate round by round")
    p.add_argument("--workers", type=int, default=min(2, len(os.sched_getaffinity(0))),
                   help="server worker processes for the load levels (default: one per core, at most 2)")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "http.json"))
    args = p.parse_args()
    t0 = time.perf_counter()
    run = pick_run(args.run)
    out: dict = {"run": str(run), "machine": machine(), **stamp(), "server": _stack(args.workers)}
    torch.set_num_threads(1)
    rr = Reranker.load(run, device="cpu")
    test = load_benchmark(rr.run.meta["dataset"]).splits["test"]
    top20 = [(str(test.queries[q]), request_records(test, q)[:20]) for q in range(test.num_queries)]
    bodies = [json.dumps({"query": q, "candidates": c, "unit_id": f"u{k}", "return_features": False},
                         default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)).encode()
              for k, (q, c) in enumerate(top20)]
    kb = np.mean([len(b) for b in bodies]) / 1e3
    out["body"] = (f"JSON {{query, {len(top20[0][1])} candidates of the {rr.run.meta['dataset']} test split (all fields, "
                   f"vectors as JSON numbers), unit_id, return_features: false}}: mean {kb:.0f} KB")

    def inproc(t: int, i: int, state: dict) -> str:
        return rr.rerank(*top20[(t * 997 + i) % len(top20)]).fallback_reason or "reranked"

    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"cotrr-http-bench-{os.getpid()}"
    proc, port = start_server(run, logs / "load", workers=args.workers)
    levels = {}
    for c in LEVELS:  # the two take turns at each level, so both see the same machine
        levels[str(c)] = {**take_turns({"in_process": inproc, "http": http_call(port, bodies)}, c, args.calls,
                                       args.rounds), "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    stop(proc)
    out["levels"] = levels
    out["p99_ratio_at_8"] = levels["8"]["http"]["p99_ms"] / levels["8"]["in_process"]["p99_ms"]
    out["faults"] = faults(run, logs / "faults", bodies)
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out["seconds"] = time.perf_counter() - t0
    write_json(args.json, out)
    for c, v in levels.items():
        print(f"c={c:>2}: in-process {v['in_process']['lists_per_s']:7.0f}/s p50 {v['in_process']['p50_ms']:6.2f} "
              f"p99 {v['in_process']['p99_ms']:6.2f} | http {v['http']['lists_per_s']:7.0f}/s p50 "
              f"{v['http']['p50_ms']:6.2f} p99 {v['http']['p99_ms']:6.2f}")
    print(json.dumps(out["faults"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
