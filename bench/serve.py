"""Serving benchmark: Reranker latency / throughput vs the model alone, a naive PyTorch loop and LightGBM,
plus the serving guarantees under stress (concurrent MC dropout, a hung model), on this CPU.

    python bench/serve.py [--run RUN_DIR] [--blended-run RUN_DIR] --json OUT [--calls 500]

Without --run: the newest finished network-only run trained on "demo", else a fast demo run is trained (the
serving path and its guarantees). The `blended` section times the run `train` builds by default (the network
blended with a LightGBM + ridge committee: --blended-run, else the newest such demo run, else one is trained).
Writes OUT and bench/results/serve.json, and prints a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402
from cotrr_core.data.benchmarks import load_benchmark  # noqa: E402
from cotrr_core.evaluation.compare import evaluate_scores  # noqa: E402
from cotrr_core.io import write_json  # noqa: E402
from cotrr_core.model import count_parameters  # noqa: E402
from cotrr_core.serving.features import request_records  # noqa: E402
from cotrr_core.serving.reranker import Reranker  # noqa: E402
from cotrr_core.training.runs import list_runs, new_run_dir  # noqa: E402

BIG = 1e9  # no time budget while measuring


# ---------------------------------------------------------------------------- setup
def pick_run(run: str | None) -> Path:
    if run:
        return Path(run)
    from cotrr_core.serving.blended import load_blend

    for info in list_runs():
        if info.state == "done" and info.config.get("dataset") == "demo" and (info.path / "calibrator.json").exists() \
                and load_blend(info.path) is None:
            return info.path
    from cotrr_core.training.recipe import fast_config
    from cotrr_core.training.trainer import fit

    cfg = fast_config()
    cfg.train.epochs = 3
    out = new_run_dir("bench-demo")
    fit(load_benchmark("demo"), cfg, out)
    return out


def pick_blended_run(run: str | None) -> Path:
    """A run that serves a blend (blend.json with w > 0): the given one, else the newest finished demo run that
    does, else a demo run trained as `python -m cotrr_core train --dataset demo` trains it (auto recipe, blend
    auto). When train's validation keeps the network alone, that run is measured and the section says so."""
    from cotrr_core.serving.blended import load_blend

    if run:
        return Path(run)
    for info in list_runs():
        if info.state == "done" and info.config.get("dataset") == "demo" and load_blend(info.path) is not None:
            return info.path
    from cotrr_core.training.recipe import auto_config
    from cotrr_core.training.trainer import fit

    bench = load_benchmark("demo")
    cfg, _ = auto_config(bench.splits["train"])
    out = new_run_dir("bench-demo-blend")
    fit(bench, cfg, out)
    return out


def blended_section(run_dir: Path, top20: list[tuple], batch: list[tuple], sub, calls: int) -> dict:
    """A run that serves a blend (network + LightGBM + ridge committee, as `train` builds by default) beside the
    same run's network alone, taking turns: single top-20 latency (plain, 5 MC), rerank_batch vs the served
    model's own batch predict, the weight it serves, and the 8-thread load of concurrency_load on the blend.
    `sub`: the RankingData of `batch`'s lists."""
    rr = Reranker.load(run_dir, device="cpu")
    alone = Reranker(dataclasses.replace(rr.run, blend=None), rr.policy)
    alone.warm_up()
    cycle = iter(range(10**9))

    def single(r: Reranker, mc: int) -> Callable[[], object]:
        return lambda: r.rerank(*top20[next(cycle) % len(top20)], mc_samples=mc, time_budget_ms=BIG)

    th = torch.get_num_threads()
    lat = interleaved_latency({f"{k}_mc{mc}": (th, single(r, mc)) for k, r in (("blend", rr), ("network", alone))
                               for mc in (0, 5)}, calls)
    thr = interleaved_throughput({"rerank_batch": lambda: rr.rerank_batch(batch, top_m=64),
                                  "model_predict": lambda: rr.predict(sub.features, sub.offsets)}, sub.num_candidates)
    blend = rr.run.blend
    rr.warm_up()
    under_load = concurrent_load(rr, top20)
    for r in (rr, alone):
        r.close()
    return {"run": str(run_dir), "weight": None if blend is None else blend.weight,
            "committee": None if blend is None else list(blend.committee),
            "p50_ms": lat["blend_mc0"]["p50"], "p99_ms": lat["blend_mc0"]["p99"],
            "p50_ms_mc5": lat["blend_mc5"]["p50"], "p99_ms_mc5": lat["blend_mc5"]["p99"],
            "network_alone_p50_ms": lat["network_mc0"]["p50"], "network_alone_p50_ms_mc5": lat["network_mc5"]["p50"],
            "throughput_cps": thr["rerank_batch"], "model_predict_cps": thr["model_predict"],
            "throughput_vs_model": thr["rerank_batch"] / thr["model_predict"], "under_load": under_load}


def timed(fn: Callable[[], object], calls: int, warm: int = 20) -> dict:
    """p50 / p99 / mean in ms over `calls` calls after `warm` warm-up calls."""
    for _ in range(warm):
        fn()
    t = np.empty(calls)
    for i in range(calls):
        a = time.perf_counter()
        fn()
        t[i] = time.perf_counter() - a
    return _latency_summary(t)


def _latency_summary(seconds) -> dict:
    t = 1e3 * np.asarray(seconds)
    return {"p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99)), "mean": float(t.mean())}


def interleaved_latency(fns: dict[str, tuple[int, Callable[[], object]]], calls: int, chunk: int = 25,
                        warm: int = 20) -> dict[str, dict]:
    """timed() for several (torch threads, fn) at once: `calls` calls each, run in chunks that take
    turns, so a slow phase of this shared VM (seconds long, up to 2x) hits every fn alike."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for th, fn in fns.values():
        torch.set_num_threads(th)
        for _ in range(warm):
            fn()
    while any(len(v) < calls for v in samples.values()):
        for k, (th, fn) in fns.items():
            torch.set_num_threads(th)
            for _ in range(min(chunk, calls - len(samples[k]))):
                a = time.perf_counter()
                fn()
                samples[k].append(time.perf_counter() - a)
    return {k: _latency_summary(v) for k, v in samples.items()}


def interleaved_throughput(fns: dict[str, Callable[[], object]], n_candidates: int, rounds: int = 7) -> dict[str, float]:
    """Candidates/s of each fn, best of `rounds`; the fns take turns within each round (see
    interleaved_latency), so their ratios hold even when the machine's speed drifts."""
    best = {k: float("inf") for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            best[k] = min(best[k], _once(fn))
    return {k: n_candidates / t for k, t in best.items()}


def inferring(fn: Callable[[], object]) -> Callable[[], object]:
    """fn run under torch.inference_mode, as the Reranker runs the model."""
    def run() -> object:
        with torch.inference_mode():
            return fn()
    return run


def throughput(fn: Callable[[], object], n_candidates: int, repeats: int = 3) -> float:
    fn()
    best = min(_once(fn) for _ in range(repeats))
    return n_candidates / best


def _once(fn: Callable[[], object]) -> float:
    a = time.perf_counter()
    fn()
    return time.perf_counter() - a


# ---------------------------------------------------------------------------- baselines
class NaiveReranker:
    """The straightforward way: per-candidate dict -> tensor, one forward per list, MC in a Python loop
    (switching the model to train mode), list-constant tokens converted for every candidate; inference mode."""

    def __init__(self, reranker: Reranker) -> None:
        self.run = reranker.run
        self.model = reranker.run.model
        self.layout = reranker.featurizer.layout

    def rerank(self, candidates: list[dict], mc_samples: int = 0) -> list[dict]:
        rows = []
        for c in candidates:
            row = {}
            for t in self.layout:
                vec = [float(x) for f in t.fields for x in np.atleast_1d(c[f])]
                row[t.name] = torch.tensor(np.asarray(vec), dtype=torch.float32)  # raw: the model standardises
            rows.append(row)
        tokens = {t.name: torch.stack([r[t.name] for r in rows])[None] for t in self.layout}
        mask = torch.ones(1, len(rows), dtype=torch.bool)
        self.model.eval()
        with torch.inference_mode():
            scores = self.model(tokens, mask)[0]
            stds = None
            if mc_samples:
                self.model.train()
                samples = [self.model(tokens, mask)[0] for _ in range(mc_samples)]
                self.model.eval()
                stds = torch.stack(samples).std(0)
        probs = self.run.calibrator.predict(scores.double().numpy())
        order = np.argsort(-probs)
        return [dict(candidates[i], probability=float(probs[i]),
                     uncertainty=None if stds is None else float(stds[i])) for i in order]


def lightgbm_model(bench):
    """The quality bench's LightGBM lambdarank: same feature builder, grid and early stopping on val."""
    from cotrr_core.evaluation.baselines import LightGBMRanker

    return LightGBMRanker(n_jobs=torch.get_num_threads()).fit(bench.splits["train"], bench.splits["val"])


def int8_model(model: torch.nn.Module) -> torch.nn.Module:
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


# ---------------------------------------------------------------------------- measurements
def ragged_batch(reranker: Reranker, lists: list[tuple]):
    """The Ragged batch (raw features) the Reranker scores for these (query, candidates) lists."""
    offsets = np.cumsum([0] + [len(c) for _, c in lists])
    feats = reranker.featurizer([c for _, cands in lists for c in cands], offsets)
    return reranker.inputs(feats, offsets)


def padded_batch(reranker: Reranker, lists: list[tuple]) -> tuple[dict, torch.Tensor]:
    """The same lists as padded tensors (tokens {name: [K, L, d]}, mask [K, L]): the model's forward input."""
    return ragged_batch(reranker, lists).padded()


def flops_per_candidate(reranker: Reranker, lists: list[tuple]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    tokens, mask = padded_batch(reranker, lists[:1])
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        reranker.model(tokens, mask)
    return counter.get_total_flops() / mask.sum().item()


def matmul_peak_gflops(n: int = 2048, reps: int = 8) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_once(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def ndcg(reranker: Reranker, test) -> float:
    lists = [(None, request_records(test, q)) for q in range(test.num_queries)]
    res = reranker.rerank_batch(lists, top_m=10_000)
    scores = np.concatenate([[c["raw_score"] for c in sorted(r.served, key=lambda c: c["original_rank"])]
                             for r in res])
    return evaluate_scores(test, scores)["ndcg@10"]


SCORE_TOL = 1e-5  # |score - single-threaded score| counted as wrong above this


def concurrent_mc_stress(rr: Reranker, lists: list[tuple], plain_threads: int = 6, mc_threads: int = 2,
                         rounds: int = 10) -> dict:
    """Plain requests on `plain_threads` threads while `mc_threads` ask for 5 MC samples: how many plain
    answers' scores differ from the single-threaded ones by more than SCORE_TOL (the dynamic batcher scores
    a list beside others, so the last float bits may differ), and how many come back in another order."""
    import threading

    lists = lists[:30]
    answers = [rr.rerank(q, c, time_budget_ms=BIG).served for q, c in lists]
    expected = [np.array([np.nan if x["raw_score"] is None else x["raw_score"] for x in a]) for a in answers]
    order = [[x["candidate_id"] for x in a] for a in answers]
    wrong, reordered, total = [0], [0], [0]
    lock = threading.Lock()

    def plain():
        for _ in range(rounds):
            for k, (q, c) in enumerate(lists):
                got = rr.rerank(q, c, time_budget_ms=BIG).served
                scores = np.array([np.nan if x["raw_score"] is None else x["raw_score"] for x in got])
                with lock:
                    total[0] += 1
                    reordered[0] += [x["candidate_id"] for x in got] != order[k]
                    wrong[0] += not np.allclose(scores, expected[k], rtol=0, atol=SCORE_TOL, equal_nan=True)

    def mc():
        for _ in range(rounds):
            for q, c in lists:
                rr.rerank(q, c, mc_samples=5, time_budget_ms=BIG)

    threads = [threading.Thread(target=plain) for _ in range(plain_threads)] + \
        [threading.Thread(target=mc) for _ in range(mc_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"plain_threads": plain_threads, "mc_threads": mc_threads, "plain_answers": total[0],
            "wrong_scores": wrong[0], "reordered": reordered[0], "score_tolerance": SCORE_TOL}


def hung_model_slack(rr: Reranker, lists: list[tuple], budget_ms: float = 50.0, calls: int = 20,
                     hang_s: float = 2.0) -> dict:
    """A model that hangs `hang_s` per call, under a `budget_ms` budget: wall time the caller waits."""
    hung = Reranker(rr.run, rr.policy)

    def forward(*a, **k):
        time.sleep(hang_s)
        raise RuntimeError("hung")

    hung._forward = forward
    waits, reasons = [], set()
    for k in range(calls):
        a = time.perf_counter()
        res = hung.rerank(*lists[k % len(lists)], time_budget_ms=budget_ms)
        waits.append(1e3 * (time.perf_counter() - a))
        reasons.add(res.fallback_reason)
    hung.close()
    w = np.asarray(waits)
    return {"budget_ms": budget_ms, "hang_s": hang_s, "calls": calls, "reasons": sorted(map(str, reasons)),
            "wait_p50_ms": float(np.percentile(w, 50)), "wait_max_ms": float(w.max()),
            "slack_max_ms": float(w.max() - budget_ms)}


def concurrent_load(rr: Reranker, lists: list[tuple], threads: int = 8, calls: int = 1200, mc_every: int = 4) -> dict:
    """`threads` callers share `rr` with its default budget, `calls` top-20 lists in all, every `mc_every`-th call
    with 5 MC samples: lists/s, the client wait p50 / p99 and what fell back (reasons)."""
    import threading
    from collections import Counter

    waits, reasons, lock = [], Counter(), threading.Lock()
    per_thread = calls // threads

    def client(t: int) -> None:
        mine, seen = [], Counter()
        for i in range(per_thread):
            q, c = lists[(t * per_thread + i) % len(lists)]
            a = time.perf_counter()
            res = rr.rerank(q, c, mc_samples=5 if (t + i) % mc_every == 0 else 0)
            mine.append(time.perf_counter() - a)
            seen[res.fallback_reason or "reranked"] += 1
        with lock:
            waits.extend(mine)
            reasons.update(seen)

    pool = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    a = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - a
    n = len(waits)
    return {"threads": threads, "calls": n, "mc5_every": mc_every, "budget_ms": rr.config.time_budget_ms,
            "lists_per_s": n / wall, "outcomes": dict(reasons), "timeouts": reasons.get("timeout", 0),
            "fallback_rate": 1 - reasons.get("reranked", 0) / n, **{f"wait_{k}": v for k, v in _latency_summary(waits).items()}}


def concurrency_section(rr: Reranker, lists: list[tuple], rounds: int = 2) -> dict:
    """concurrent_load on the batched Reranker (the default) and on one forward per request on 4 workers (the
    serving core before dynamic batching), taking turns `rounds` times so both see the same machine."""
    variants = {"batched": Reranker(rr.run, rr.policy), "per_request_4_workers": Reranker(rr.run, rr.policy, workers=4,
                                                                                         batching=False)}
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    for r in variants.values():
        r.warm_up()
    for _ in range(rounds):
        for k, r in variants.items():
            runs[k].append(concurrent_load(r, lists))
    out = {k: {**v[-1], "lists_per_s_rounds": [x["lists_per_s"] for x in v],
               "timeouts_rounds": [x["timeouts"] for x in v], "batcher": variants[k].stats()["batcher"]}
           for k, v in runs.items()}
    for r in variants.values():
        r.close()
    out["throughput_ratio"] = float(np.mean(out["batched"]["lists_per_s_rounds"]) /
                                    np.mean(out["per_request_4_workers"]["lists_per_s_rounds"]))
    return out


def hang_recovery(rr: Reranker, lists: list[tuple], hang_s: float = 10.0, hung: int = 4, rate: float = 100.0,
                  after_s: float = 3.0) -> dict:
    """The first `hung` forwards sleep `hang_s`; 4 clients send top-20 lists at `rate` lists/s in all (open loop)
    until `after_s` past the hang: how soon after the hang ends every answer is reranked again, and how many
    forwards started for callers who had already left."""
    import threading

    r = Reranker(rr.run, rr.policy)
    r.warm_up()
    real, calls, ends, lock = r._forward, [0], [], threading.Lock()

    def forward(*a, **k):
        with lock:
            calls[0] += 1
            sleeping = calls[0] <= hung
        if sleeping:
            time.sleep(hang_s)
            ends.append(time.perf_counter())
        return real(*a, **k)

    r._forward = forward
    t_start, log = time.perf_counter(), []

    def client(c: int) -> None:
        k, period = 0, 4 / rate
        while (now := time.perf_counter()) < t_start + hang_s + after_s:
            res = r.rerank(*lists[(c + 4 * k) % len(lists)])
            log.append((now - t_start, res.fallback_reason))
            k += 1
            time.sleep(max(0.0, t_start + (k + c / 4) * period - time.perf_counter()))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r.close(wait_s=hang_s)
    hang_end = max(ends) - t_start if ends else float("nan")
    bad_after = [t for t, reason in log if reason is not None and t >= hang_end]
    during = [reason is None for t, reason in log if t < hang_end]
    stats = r.stats()
    return {"hang_s": hang_s, "hung_forwards": hung, "rate_lists_per_s": rate, "requests": len(log),
            "hang_end_s": hang_end, "reranked_share_during_hang": float(np.mean(during)) if during else None,
            "fallbacks_after_hang_end": len(bad_after),
            "recovered_within_s": (max(bad_after) - hang_end) if bad_after else 0.0,
            "jobs_dropped_before_their_forward": stats["batcher"]["dropped_gone"],
            "late_results": stats["late_results"], "batcher": stats["batcher"]}


def big_list(rr: Reranker, lists: list[tuple], n: int = 50_000, calls: int = 8) -> dict:
    """One `n`-candidate list with the default budget: the caller's wait against the budget."""
    base = [c for _, cands in lists for c in cands]
    big = [dict(base[i % len(base)], candidate_id=f"big{i}") for i in range(n)]
    waits, reasons = [], []
    for _ in range(calls):
        a = time.perf_counter()
        res = rr.rerank("a long list", big)
        waits.append(1e3 * (time.perf_counter() - a))
        reasons.append(res.fallback_reason)
    return {"candidates": n, "budget_ms": rr.config.time_budget_ms, "wait_p50_ms": float(np.median(waits)),
            "wait_max_ms": float(max(waits)), "over_budget_max_ms": float(max(waits) - rr.config.time_budget_ms),
            "outcomes": [str(x) for x in reasons], "stats_latency_p50_ms": rr.stats()["latency_ms"].get("p50")}


def under_load_only(run_dir: Path, json_out: str) -> int:
    """The serving-under-load sections alone, merged into bench/results/serve.json (each keeps its stamp)."""
    import json

    from bench.common import stamp

    torch.set_num_threads(1)
    rr = Reranker.load(run_dir, device="cpu")
    test = load_benchmark(rr.run.meta["dataset"]).splits["test"]
    lists = [(str(test.queries[q]), request_records(test, q)) for q in range(test.num_queries)]
    top20 = [(q, c[:20]) for q, c in lists]
    sections = {"concurrency_load": lambda: concurrency_section(rr, top20), "hang_recovery": lambda: hang_recovery(rr, top20),
                "big_list": lambda: big_list(rr, lists)}
    out = {}
    for name, fn in sections.items():
        st = {"machine": machine(), **stamp()}
        out[name] = {**fn(), "stamp": {**st, "load_average_end": [round(x, 2) for x in os.getloadavg()]}}
    path = ROOT / "bench" / "results" / "serve.json"
    merged = {**(json.loads(path.read_text()) if path.exists() else {}), **out}
    for p in (Path(json_out), path):
        write_json(p, merged)
    print(json.dumps(out, indent=1))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run")
    p.add_argument("--json", required=True)
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--blended-run", help="a run serving a blend (default: the newest demo one, else one is trained)")
    p.add_argument("--under-load-only", action="store_true",
                   help="only the serving-under-load sections (concurrency_load, hang_recovery, big_list), merged "
                        "into bench/results/serve.json with their own stamp")
    args = p.parse_args()
    t_start = time.perf_counter()
    run_dir = pick_run(args.run)
    if args.under_load_only:
        return under_load_only(run_dir, args.json)
    load_before = os.getloadavg()
    torch.set_num_threads(1)
    rr = Reranker.load(run_dir, device="cpu")
    bench = load_benchmark(rr.run.meta["dataset"])
    test = bench.splits["test"]
    lists = [(str(test.queries[q]), request_records(test, q)) for q in range(test.num_queries)]
    top20 = [(q, c[:20]) for q, c in lists]
    out: dict = {"run": str(run_dir), "machine": machine(), "loadavg_before": load_before,
                 "params": count_parameters(rr.run.model), "list_len": 20, "calls": args.calls}
    cycle = iter(range(10**9))

    def single(r: Reranker, mc: int) -> Callable[[], object]:
        return lambda: r.rerank(*top20[next(cycle) % len(top20)], mc_samples=mc, time_budget_ms=BIG)

    # single-list latency with the caller on 1 and 2 threads, interleaved (a list this small is scored on one
    # intra-op thread either way: deadline.PARALLEL_MIN_ROWS); the headline uses the faster
    lat = interleaved_latency({f"mc{mc}_t{th}": (th, single(rr, mc)) for th in (1, 2) for mc in (0, 5)}, args.calls)
    steps = {f"threads{th}": {"mc0": lat[f"mc0_t{th}"], "mc5": lat[f"mc5_t{th}"]} for th in (1, 2)}
    best_threads = min((1, 2), key=lambda th: steps[f"threads{th}"]["mc0"]["p50"])
    torch.set_num_threads(best_threads)
    out["threads"] = best_threads
    lat0, lat5 = steps[f"threads{best_threads}"]["mc0"], steps[f"threads{best_threads}"]["mc5"]
    out.update(p50_ms=lat0["p50"], p99_ms=lat0["p99"], p50_ms_mc5=lat5["p50"], p99_ms_mc5=lat5["p99"])

    # inference_mode on/off: the model call alone for one top-20 list
    tokens, mask = padded_batch(rr, top20[:1])
    with torch.inference_mode():
        on = timed(lambda: rr.model(tokens, mask), args.calls // 2)
    t2, m2 = {k: v.clone() for k, v in tokens.items()}, mask.clone()
    off = timed(lambda: rr.model(t2, m2), args.calls // 2)
    steps["inference_mode"] = {"on_p50": on["p50"], "off_p50": off["p50"]}
    steps["conversion_overhead_p50_ms"] = lat0["p50"] - on["p50"]

    # batch path: 64 lists of 20-50, one padded forward, vs a loop of single calls; on 1 and on 2
    # threads (the headline keys use the count that serves the batch fastest, side by side with the
    # model alone on the same count)
    batch = lists[:64]
    n_batch = sum(len(c) for _, c in batch)
    b_tokens, b_mask = padded_batch(rr, batch)
    b_ragged = ragged_batch(rr, batch)
    sub = test.subset(range(len(batch)))
    by_threads = {}
    for th in (1, 2):
        torch.set_num_threads(th)
        by_threads[th] = interleaved_throughput({
            "throughput_cps": lambda: rr.rerank_batch(batch, top_m=64),
            "model_only_throughput_cps": inferring(lambda: rr.model(b_tokens, b_mask)),
            "model_ragged_throughput_cps": inferring(lambda: rr.model.score(b_ragged)),
            "columnar_throughput_cps": lambda: rr.rerank_arrays(sub.features, sub.offsets, top_m=64)}, n_batch)
    batch_threads = max(by_threads, key=lambda th: by_threads[th]["throughput_cps"])
    out.update(by_threads[batch_threads], throughput_threads=batch_threads)
    steps["throughput_by_threads"] = {f"threads{th}": v for th, v in by_threads.items()}
    torch.set_num_threads(best_threads)
    out["throughput_vs_model"] = out["throughput_cps"] / out["model_only_throughput_cps"]
    out["columnar_vs_model"] = out["columnar_throughput_cps"] / out["model_only_throughput_cps"]
    # intra-op threads by request size (the evidence for deadline.PARALLEL_MIN_ROWS): the model alone on
    # 1 and 2 threads, p50 / p99 ms by candidate rows
    steps["forward_threads_by_rows"] = {}
    for k in (1, 2, 4, 8, 16):
        rows_k = ragged_batch(rr, lists[:k])
        lat_k = interleaved_latency({f"threads{th}": (th, inferring(lambda b=rows_k: rr.model.score(b)))
                                     for th in (1, 2)}, 100)
        steps["forward_threads_by_rows"][str(len(rows_k.positions))] = lat_k
    torch.set_num_threads(best_threads)
    loop_cps = throughput(lambda: [rr.rerank(q, c, top_m=64, time_budget_ms=BIG) for q, c in batch], n_batch, 2)
    steps["batch_vs_loop"] = {"batch_cps": out["throughput_cps"], "loop_cps": loop_cps}

    # precision: nDCG@10 on the test split, latency and throughput, each interleaved with fp32's
    variants = {"fp32": rr}
    for prec in ("bf16", "int8"):
        r = Reranker(rr.run, rr.policy, precision="bf16" if prec == "bf16" else "fp32")
        if prec == "int8":  # measured here only, not offered (serving/model_inputs.py says why)
            r.model = int8_model(rr.run.model)  # quantised unfolded: it standardises its inputs itself
        r.warm_up()
        variants[prec] = r
    lat_p = interleaved_latency({f"{k}_mc{mc}": (best_threads, single(r, mc)) for k, r in variants.items()
                                 for mc in (0, 5)}, args.calls // 4)
    torch.set_num_threads(out["throughput_threads"])
    thr_p = interleaved_throughput({k: (lambda r=r: r.rerank_batch(batch, top_m=64)) for k, r in variants.items()},
                                   n_batch)
    torch.set_num_threads(best_threads)
    fp32_ndcg = ndcg(rr, test)
    steps["precision"] = {}
    for k, r in variants.items():
        nd = fp32_ndcg if k == "fp32" else ndcg(r, test)
        steps["precision"][k] = {"ndcg@10": nd, "delta_ndcg": nd - fp32_ndcg, "keep": abs(nd - fp32_ndcg) <= 0.002,
                                 "p50_ms": lat_p[f"{k}_mc0"]["p50"], "p50_ms_mc5": lat_p[f"{k}_mc5"]["p50"],
                                 "throughput_cps": thr_p[k]}

    # baselines on the same 64 lists
    naive = NaiveReranker(rr)
    out["naive_throughput_cps"] = throughput(lambda: [naive.rerank(c) for _, c in batch], n_batch, 2)
    out["naive_p50_ms"] = timed(lambda: naive.rerank(top20[next(cycle) % len(top20)][1]), args.calls // 5)["p50"]
    out["naive_p50_ms_mc5"] = timed(lambda: naive.rerank(top20[next(cycle) % len(top20)][1], 5), args.calls // 10)["p50"]
    lgb = lightgbm_model(bench)
    out["lightgbm_throughput_cps"] = throughput(lambda: lgb.predict(sub), sub.num_candidates)
    out["lightgbm_ndcg@10"] = evaluate_scores(test, lgb.predict(test))["ndcg@10"]
    out["lightgbm_params"] = lgb.best_params_

    out["blended"] = blended_section(pick_blended_run(args.blended_run), top20, batch, sub, args.calls // 2)
    torch.set_num_threads(best_threads)
    out["concurrency"] = concurrent_mc_stress(rr, top20)
    out["hung_model"] = hung_model_slack(rr, top20)
    out["concurrency_load"] = concurrency_section(rr, top20)
    out["hang_recovery"] = hang_recovery(rr, top20)
    out["big_list"] = big_list(rr, lists)

    # arithmetic: FLOPs per candidate and share of the measured matmul peak
    out["flops_per_candidate"] = flops_per_candidate(rr, top20)
    torch.set_num_threads(out["throughput_threads"])  # the peak on the threads the throughput used
    out["matmul_peak_gflops"] = matmul_peak_gflops()
    torch.set_num_threads(best_threads)
    out["batch_gflops"] = out["flops_per_candidate"] * out["throughput_cps"] / 1e9
    out["batch_share_of_peak"] = out["batch_gflops"] / out["matmul_peak_gflops"]
    out["speedup_vs_naive"] = out["throughput_cps"] / out["naive_throughput_cps"]
    out["ratio_vs_lightgbm"] = out["throughput_cps"] / out["lightgbm_throughput_cps"]
    out["steps"] = steps
    out["loadavg_after"] = os.getloadavg()
    out["seconds"] = time.perf_counter() - t_start
    for path in (Path(args.json), ROOT / "bench" / "results" / "serve.json"):
        write_json(path, out)
    print_table(out)
    return 0


def print_table(o: dict) -> None:
    s = o["steps"]
    print(f"\nmachine: {o['machine']}  (load avg before {o['loadavg_before'][0]:.1f}, after {o['loadavg_after'][0]:.1f})")
    print(f"run: {o['run']}  params {o['params']:,}  threads {o['threads']}")
    print(f"{'single top-20 list (ms)':<40}{'p50':>9}{'p99':>9}")
    print(f"{'  Reranker, calibrated':<40}{o['p50_ms']:9.2f}{o['p99_ms']:9.2f}")
    print(f"{'  Reranker, calibrated + 5 MC':<40}{o['p50_ms_mc5']:9.2f}{o['p99_ms_mc5']:9.2f}")
    print(f"{'  naive / naive + 5 MC (p50)':<40}{o['naive_p50_ms']:9.2f}{o['naive_p50_ms_mc5']:9.2f}")
    for th in (1, 2):
        t = s[f"threads{th}"]
        print(f"{f'  caller on {th} thread(s): mc0 / mc5 (p50)':<40}{t['mc0']['p50']:9.2f}{t['mc5']['p50']:9.2f}")
    rows = s["forward_threads_by_rows"]
    print("  model alone, p50 / p99 ms on 1 | 2 threads, by rows: " + "; ".join(
        f"{n}: {v['threads1']['p50']:.2f}/{v['threads1']['p99']:.2f} | {v['threads2']['p50']:.2f}/{v['threads2']['p99']:.2f}"
        for n, v in rows.items()))
    im = s["inference_mode"]
    print(f"{'  model call: inference_mode on / off':<40}{im['on_p50']:9.2f}{im['off_p50']:9.2f}")
    head = f"throughput on {o['throughput_threads']} thread(s)"
    print(f"{head:<40}{'cand/s':>9}{'ratio':>9}")
    print(f"{'  rerank_batch (64 lists x 20-50)':<40}{o['throughput_cps']:9.0f}{1.0:9.2f}")
    print(f"{'  rerank_arrays (columnar, same lists)':<40}{o['columnar_throughput_cps']:9.0f}"
          f"{o['columnar_throughput_cps'] / o['throughput_cps']:9.2f}")
    print(f"{'  model forward alone (same batch)':<40}{o['model_only_throughput_cps']:9.0f}"
          f"{o['model_only_throughput_cps'] / o['throughput_cps']:9.2f}")
    print(f"{'  model on the rows alone (what the API runs)':<40}{o['model_ragged_throughput_cps']:9.0f}"
          f"{o['model_ragged_throughput_cps'] / o['throughput_cps']:9.2f}")
    print(f"{'  loop of rerank() calls':<40}{s['batch_vs_loop']['loop_cps']:9.0f}"
          f"{s['batch_vs_loop']['loop_cps'] / o['throughput_cps']:9.2f}")
    print(f"{'  naive PyTorch':<40}{o['naive_throughput_cps']:9.0f}{o['naive_throughput_cps'] / o['throughput_cps']:9.2f}")
    print(f"{'  LightGBM predict (tuned, quality bench)':<40}{o['lightgbm_throughput_cps']:9.0f}"
          f"{o['lightgbm_throughput_cps'] / o['throughput_cps']:9.2f}")
    print(f"{'precision':<12}{'nDCG@10':>9}{'delta':>9}{'p50':>8}{'p50 mc5':>9}{'cand/s':>9}")
    for name, v in s["precision"].items():
        print(f"{name:<12}{v['ndcg@10']:9.4f}{v.get('delta_ndcg', 0.0):9.4f}{v['p50_ms']:8.2f}{v['p50_ms_mc5']:9.2f}"
              f"{v.get('throughput_cps', o['throughput_cps']):9.0f}")
    print(f"FLOPs/candidate {o['flops_per_candidate'] / 1e6:.2f} M; batch path {o['batch_gflops']:.1f} GFLOP/s = "
          f"{100 * o['batch_share_of_peak']:.0f}% of measured matmul peak {o['matmul_peak_gflops']:.1f} GFLOP/s")
    print(f"LightGBM nDCG@10 {o['lightgbm_ndcg@10']:.4f}; bench took {o['seconds']:.0f} s")
    b = o["blended"]
    print(f"blended run (w = {b['weight']}, {b['committee']}): top-20 p50 {b['p50_ms']:.2f} ms / p99 {b['p99_ms']:.2f}, "
          f"+5 MC p50 {b['p50_ms_mc5']:.2f} / p99 {b['p99_ms_mc5']:.2f} (its network alone p50 {b['network_alone_p50_ms']:.2f}, "
          f"+5 MC {b['network_alone_p50_ms_mc5']:.2f}); rerank_batch {b['throughput_vs_model']:.2f}x its model's predict")
    u = b["under_load"]
    print(f"blended run under {u['threads']} threads (MC5 every {u['mc5_every']}th call): {u['lists_per_s']:.0f} lists/s, "
          f"{u['timeouts']} of {u['calls']} timed out (fallback rate {u['fallback_rate']:.1%})")
    c, h = o["concurrency"], o["hung_model"]
    print(f"concurrency: {c['plain_answers']} plain answers on {c['plain_threads']} threads beside {c['mc_threads']} MC "
          f"threads: {c['wrong_scores']} wrong scores, {c['reordered']} reordered")
    print(f"hung model ({h['hang_s']} s) under a {h['budget_ms']:g} ms budget: caller waited p50 "
          f"{h['wait_p50_ms']:.1f} ms, max {h['wait_max_ms']:.1f} ms ({h['reasons']})")


if __name__ == "__main__":
    raise SystemExit(main())
