"""Scoring on a worker thread under a deadline: a hung model costs the caller the budget, not the hang."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import torch

__all__ = ["PARALLEL_MIN_ROWS", "FutureTimeout", "call_with_deadline"]

# A budgeted request with fewer candidate rows is scored on ONE intra-op thread: on the 2-core bench VM
# a second thread made a 20-50-row forward up to 1.5x faster when the VM was quiet, but at other times
# doubled it and gave p99 13-15 ms vs 1.9 ms; it pays reliably from ~300 rows (bench/serve.py:
# steps.forward_threads_by_rows). One thread per request also leaves the other cores to other requests.
PARALLEL_MIN_ROWS = 256


def call_with_deadline(pool: Executor, fn: Callable[..., Any], args: tuple, rows: int, timeout_s: float,
                       on_late: Callable[[], None]) -> Any:
    """fn(*args) on a `pool` worker, its result within `timeout_s`, else FutureTimeout: the caller moves on,
    the late result is discarded and `on_late` is called when it arrives. `rows`: the request's candidate
    rows, which pick the worker's intra-op threads (PARALLEL_MIN_ROWS)."""
    if timeout_s <= 0:
        raise FutureTimeout()
    threads = torch.get_num_threads() if rows >= PARALLEL_MIN_ROWS else 1
    future = pool.submit(_with_threads, threads, fn, *args)
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout:
        future.add_done_callback(lambda _: on_late())
        raise


def _with_threads(threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) with `threads` intra-op threads on this worker (the caller's count, or 1 for a small
    request). OpenMP keeps one count per thread, fixed when the thread first ran torch: without this, a
    torch.set_num_threads after load never reached the workers (measured: a top-20 forward 2.6 ms on a
    2-thread worker vs 1.0 ms on 1 thread)."""
    if torch.get_num_threads() != threads:  # this thread's count; the process-wide one is `threads`
        torch.set_num_threads(threads)
    return fn(*args)
