"""Dynamic batching (the pattern of Triton's and TorchServe's dynamic batchers): concurrent requests wait in
one bounded queue and a few scoring workers each take every waiting request that fits (plain ones, and those
sampling the batch's one MC count), up to a row cap, and score them in ONE forward.

Each request keeps its own deadline: a request whose caller has left (timed out) is dropped before it runs;
a full queue is refused at once (the caller serves `overloaded`); a forward that outlives every deadline
in its batch no longer counts as a worker, so a replacement starts (up to `max_stuck` stuck threads: a
Python thread cannot be killed, only left to finish; its result is discarded).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from cotrr_core.serving.deadline import PARALLEL_MIN_ROWS

__all__ = ["Job", "Batcher", "concat_jobs"]


@dataclass(eq=False)
class Job:
    """One caller's lists: features {token: rows laid end to end, [n, d]; list-constant tokens one row per
    list, [K, d]}, offsets [K + 1], its MC samples and the perf_counter time its caller gives up."""

    features: dict[str, np.ndarray]
    offsets: np.ndarray
    mc: int
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple | None = None  # (raw [n], std [n] or None)
    error: BaseException | None = None
    threads: int = 1  # the caller's torch intra-op threads (a large batch is scored on as many)
    gone: bool = False  # the caller has left: never run, result discarded
    running: bool = False

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])


def concat_jobs(jobs: list[Job]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The jobs' lists as one request: (features laid end to end, offsets [sum K + 1])."""
    names = jobs[0].features.keys()
    features = {k: np.concatenate([j.features[k] for j in jobs]) if len(jobs) > 1 else jobs[0].features[k]
                for k in names}
    lengths = np.concatenate([np.diff(j.offsets) for j in jobs])
    return features, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


class _Worker:
    def __init__(self) -> None:
        self.busy_until: float | None = None  # the latest deadline in the batch it is scoring


class Batcher:
    """A bounded queue and `workers` scoring threads; `score(jobs)` returns one (raw, std) per job."""

    def __init__(self, score: Callable[[list[Job]], list[tuple]], *, workers: int = 2, max_wait_ms: float = 1.0,
                 max_rows: int = 4096, max_queue: int = 128, max_stuck: int = 8, max_jobs: int | None = None,
                 stuck_after_s: float = 0.25,
                 on_late: Callable[[], None] | None = None) -> None:
        """`max_jobs=1`: no batching, one forward per request (the reference the benchmark compares with)."""
        self._score, self.workers, self.max_wait_s = score, workers, max_wait_ms / 1e3
        self.max_rows, self.max_queue, self.max_stuck, self.max_jobs = max_rows, max_queue, max_stuck, max_jobs
        self._on_late = on_late or (lambda: None)
        self.stuck_after_s = stuck_after_s  # past the batch's last deadline: a slow forward on a busy machine is not hung
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._threads: dict[threading.Thread, _Worker] = {}
        self._closed = False
        self._arriving = 0  # callers converting a request they will submit: worth waiting for
        self._local = threading.local()
        self.counts = {"batches": 0, "jobs": 0, "dropped_gone": 0, "refused_full": 0, "stuck_replaced": 0}

    # ---------------------------------------------------------------- caller side
    def arrive(self) -> None:
        """This thread has started a request: a worker holding a smaller batch waits (up to max_wait) for it."""
        with self._cond:
            if not getattr(self._local, "arrived", False):
                self._local.arrived = True
                self._arriving += 1

    def depart(self) -> None:
        """This thread's request is queued or needs no forward: nobody waits for it any more."""
        with self._cond:
            self._depart()

    def _depart(self) -> None:
        if getattr(self._local, "arrived", False):
            self._local.arrived = False
            self._arriving -= 1
            self._cond.notify_all()

    def submit(self, job: Job) -> bool:
        """Queue `job`; False when the queue is full or the batcher is closed (nothing is queued)."""
        with self._cond:
            self._depart()
            if self._closed or len(self._queue) >= self.max_queue:
                self.counts["refused_full"] += 1
                return False
            self._queue.append(job)
            self._ensure_workers()
            self._cond.notify()
        return True

    def wait(self, job: Job) -> tuple | None:
        """The job's (raw, std), or None when its deadline passed first (it is then dropped or discarded)."""
        if job.done.wait(max(0.0, job.deadline - time.perf_counter())):
            if job.error is not None:
                raise job.error
            return job.result
        with self._cond:
            if job.done.is_set():  # finished while we took the lock
                return self.wait(job)
            job.gone = True
            self._ensure_workers()
        return None

    def close(self, wait_s: float = 0.0) -> None:
        """Stop taking work; queued jobs are failed at once; forwards already running finish (waited for up
        to `wait_s`)."""
        with self._cond:
            self._closed = True
            while self._queue:
                job = self._queue.popleft()
                job.error = RuntimeError("the scoring queue was closed")
                job.done.set()
            self._cond.notify_all()
            threads = list(self._threads)
        end = time.perf_counter() + wait_s
        for t in threads:
            t.join(max(0.0, end - time.perf_counter()))

    def stats(self) -> dict:
        with self._cond:
            stuck = sum(self._is_stuck(w) for w in self._threads.values())
            return {**self.counts, "queued": len(self._queue), "threads": len(self._threads), "stuck": stuck}

    # ---------------------------------------------------------------- workers
    def _is_stuck(self, w: _Worker) -> bool:
        return w.busy_until is not None and time.perf_counter() > w.busy_until + self.stuck_after_s

    def _ensure_workers(self) -> None:
        """(lock held) Start workers until `workers` are not stuck, within the stuck-thread cap."""
        healthy = sum(not self._is_stuck(w) for w in self._threads.values())
        while healthy < self.workers and len(self._threads) < self.workers + self.max_stuck and not self._closed:
            if healthy < len(self._threads):
                self.counts["stuck_replaced"] += 1
            t = threading.Thread(target=self._loop, name="cotrr-batcher", daemon=True)
            self._threads[t] = _Worker()
            t.start()
            healthy += 1

    def _loop(self) -> None:
        me = self._threads[threading.current_thread()]
        while True:
            jobs = self._take(me)
            if jobs is None:
                return
            self._run(jobs)
            with self._cond:
                was_stuck = self._is_stuck(me)
                me.busy_until = None
                healthy = sum(not self._is_stuck(w) for w in self._threads.values())
                if was_stuck and healthy > self.workers:  # a replacement took this one's place
                    del self._threads[threading.current_thread()]
                    return

    def _take(self, me: _Worker) -> list[Job] | None:
        """Wait for work; then, while other callers are converting theirs (`arrive`), up to max_wait for more;
        return the live jobs sharing the first one's MC count."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    del self._threads[threading.current_thread()]
                    return None
                self._cond.wait()
            first_seen = time.perf_counter()
            while self._queue and self._arriving and self.max_jobs != 1 and self._rows_ready() < self.max_rows \
                    and not self._closed:
                left = first_seen + self.max_wait_s - time.perf_counter()
                if left <= 0 or not self._cond.wait(left):
                    break
            jobs = self._pick()  # may be empty: another worker took them; the loop asks again
            if jobs:
                me.busy_until = max(j.deadline for j in jobs)
            return jobs

    def _rows_ready(self) -> int:
        """(lock held) Rows the next batch would take (see _pick)."""
        mc = next((j.mc for j in self._queue if j.mc > 0), 0)
        return sum(j.rows for j in self._queue if j.mc in (0, mc))

    def _pick(self) -> list[Job]:
        """(lock held) Remove from the queue the live jobs that fit one forward: plain ones and those with the
        first sampling job's MC count, up to max_rows; jobs whose caller has left are dropped here, before
        they run."""
        now, mc, rows = time.perf_counter(), 0, 0
        picked, keep = [], deque()
        for job in self._queue:
            if job.gone or now >= job.deadline:
                job.gone = True
                self.counts["dropped_gone"] += 1
                job.done.set()
            elif job.mc in (0, mc or job.mc) and (not picked or rows + job.rows <= self.max_rows) \
                    and (self.max_jobs is None or len(picked) < self.max_jobs):
                mc, rows = mc or job.mc, rows + job.rows
                job.running = True
                picked.append(job)
            else:
                keep.append(job)
        self._queue = keep
        return picked

    def _run(self, jobs: list[Job]) -> None:
        rows = sum(j.rows for j in jobs)
        threads = max(j.threads for j in jobs) if rows >= PARALLEL_MIN_ROWS else 1
        if torch.get_num_threads() != threads:  # per OS thread (see deadline.PARALLEL_MIN_ROWS)
            torch.set_num_threads(threads)
        with self._cond:
            self.counts["batches"] += 1
            self.counts["jobs"] += len(jobs)
            now = time.perf_counter()
            for j in jobs:  # callers that left, or whose deadline passed, between the pick and now
                if j.gone or now >= j.deadline:
                    j.gone = True
                    self.counts["dropped_gone"] += 1
                    j.done.set()
            jobs = [j for j in jobs if not j.gone]
        if not jobs:
            return
        try:
            results, error = self._score(jobs), None
        except Exception as exc:  # noqa: BLE001 - handed to every caller, who falls back and says why
            results, error = [None] * len(jobs), exc
        with self._cond:
            for job, res in zip(jobs, results):
                if job.gone:
                    self._on_late()
                job.result, job.error = res, error
                job.done.set()
