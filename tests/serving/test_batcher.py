"""The dynamic batcher alone (a fake forward) and through the Reranker: batching, per-job results, a full queue,
callers that left, a hung forward, health that keeps the callers' bad input apart."""
from __future__ import annotations

import threading
import time

import numpy as np

from cotrr_core.serving.batcher import Batcher, Job
from cotrr_core.serving.policy import Policy
from cotrr_core.serving.reranker import Reranker
from tests.serving.conftest import lists_of


def job(rows: int, mc: int = 0, budget_s: float = 5.0, value: float = 0.0) -> Job:
    return Job({"x": np.full((rows, 1), value)}, np.array([0, rows]), mc, time.perf_counter() + budget_s)


class Forward:
    """Scores = the x feature; records each call's jobs; can be held until released."""

    def __init__(self) -> None:
        self.calls: list[list[Job]] = []
        self.hold = threading.Event()
        self.hold.set()

    def __call__(self, jobs: list[Job]) -> list[tuple]:
        self.calls.append(jobs)
        self.hold.wait(10)
        return [(j.features["x"][:, 0].copy(), None) for j in jobs]


def test_plain_jobs_and_one_mc_count_share_one_forward_and_get_their_own_rows():
    fwd = Forward()
    b = Batcher(fwd, workers=1, max_wait_ms=0.0)
    fwd.hold.clear()
    first = job(2, value=9.0)
    assert b.submit(first)
    while not fwd.calls:  # the worker holds the first job's forward
        time.sleep(0.001)
    jobs = [job(3, value=1.0), job(4, mc=5, value=5.0), job(1, mc=3, value=3.0), job(2, value=2.0)]
    for j in jobs:
        assert b.submit(j)
    fwd.hold.set()
    got = [b.wait(j) for j in [first, *jobs]]
    b.close(wait_s=5)
    # plain jobs ride with the first MC count's; another MC count waits for the next forward
    assert [[(len(j.features["x"]), j.mc) for j in call] for call in fwd.calls] == [[(2, 0)], [(3, 0), (4, 5), (2, 0)],
                                                                                 [(1, 3)]]
    assert [g[0].tolist() for g in got] == [[9.0] * 2, [1.0] * 3, [5.0] * 4, [3.0], [2.0] * 2]


def test_a_full_queue_refuses_at_once_and_a_caller_that_left_is_never_scored():
    fwd = Forward()
    b = Batcher(fwd, workers=1, max_wait_ms=0.0, max_queue=2)
    fwd.hold.clear()
    b.submit(job(1))
    while not fwd.calls:
        time.sleep(0.001)
    late, other = job(1, budget_s=0.05), job(1)
    assert b.submit(late) and b.submit(other)
    assert not b.submit(job(1))  # full
    assert b.wait(late) is None  # its caller gives up after 50 ms, while the worker is still held
    fwd.hold.set()
    assert b.wait(other) is not None
    b.close(wait_s=5)
    scored = [j for call in fwd.calls for j in call]
    assert late not in scored and b.stats()["dropped_gone"] == 1 and b.stats()["refused_full"] == 1


def test_a_hung_forward_is_replaced_and_later_jobs_are_served():
    release = threading.Event()

    def forward(jobs):
        if jobs[0].features["x"][0, 0] < 0:
            release.wait(10)
        return [(j.features["x"][:, 0].copy(), None) for j in jobs]

    b = Batcher(forward, workers=1, max_wait_ms=0.0, stuck_after_s=0.05)
    hung = job(1, budget_s=0.05, value=-1.0)
    b.submit(hung)
    assert b.wait(hung) is None
    time.sleep(0.1)  # past its deadline + stuck_after_s
    later = job(2, value=3.0)
    b.submit(later)
    got = b.wait(later)
    stats = b.stats()
    release.set()
    b.close(wait_s=5)
    assert got[0].tolist() == [3.0, 3.0] and stats["stuck_replaced"] == 1 and stats["stuck"] == 1


def test_a_full_queue_is_an_overloaded_fallback_and_health_keeps_bad_input_apart(loaded, monkeypatch):
    rr = Reranker(loaded.run, Policy("full"), max_queue=0)
    query, cands = lists_of()[0]
    res = rr.rerank(query, cands)
    assert res.fallback_reason == "overloaded" and res.detail
    ok = Reranker(loaded.run, Policy("full"))
    for _ in range(10):
        ok.rerank(query, [{"candidate_id": "x"}, {"candidate_id": "y"}])  # the caller's bad input
    health = ok.health()
    assert health["status"] == "ok" and health["recent"]["invalid_input_rate"] == 1.0
    assert health["recent"]["service_fallback_rate"] == 0.0
    for _ in range(10):
        rr.rerank(query, cands)
    assert rr.health()["status"] == "degraded" and rr.health()["recent"]["overload_rate"] == 1.0
    rr.close()
    ok.close()


def test_a_forward_of_plain_and_mc_jobs_gives_each_job_its_own_scores_and_spread(reranker):
    """Reranker._score_jobs on jobs [plain, MC, plain, MC] in one forward: every job's raw scores are those it
    gets alone; only the MC jobs get a spread, one value per row, like an MC job scored alone."""
    lists = [c for _, c in lists_of(n_queries=4)]
    feats = [reranker.featurizer.lists([c], check_finite=False)[:2] for c in lists]
    mcs = [0, 5, 0, 5]
    jobs = [Job(reranker.inputs.compact(f, o), o, mc, time.perf_counter() + 60) for (f, o), mc in zip(feats, mcs)]
    together = reranker._score_jobs(jobs)
    for job, (raw, std), mc in zip(jobs, together, mcs):
        alone_raw, alone_std = reranker._score_jobs([job])[0]
        np.testing.assert_allclose(raw, alone_raw, rtol=1e-5, atol=1e-5)
        assert (std is None) == (mc == 0) == (alone_std is None)
        if mc:
            assert std.shape == raw.shape and np.isfinite(std).all() and std.max() > 0
