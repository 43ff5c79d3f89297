"""Thread-safe serving counters: totals, fallbacks by reason, late results, a bounded window of recent
latencies, list sizes and outcomes (for the recent error and fallback rates behind `health()`)."""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np

__all__ = ["ServeCounters", "CLIENT_REASONS"]


class ServeCounters:
    """Counters for a Reranker. Every method takes the lock, so threads may share one instance.

    Latencies and list sizes keep only the last `window` calls (a ring), so memory stays bounded
    and the percentiles describe recent traffic.
    """

    def __init__(self, window: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._sizes: deque[int] = deque(maxlen=window)
        self._outcomes: deque[str | None] = deque(maxlen=window)  # fallback reason or None, per call
        self.total = self.reranked = self.shadowed = self.scored = self.late_results = 0
        self.fallback: Counter[str] = Counter()
        self.last_error: dict | None = None

    def record(self, *, n_candidates: int, latency_ms: float, reranked: bool, shadowed: bool, scored: bool,
               fallback_reason: str | None) -> None:
        """Count one served list."""
        with self._lock:
            self.total += 1
            self.reranked += reranked
            self.shadowed += shadowed
            self.scored += scored
            if fallback_reason:
                self.fallback[fallback_reason] += 1
            self._latency_ms.append(latency_ms)
            self._sizes.append(n_candidates)
            self._outcomes.append(fallback_reason)

    def note_error(self, error: BaseException, reason: str) -> None:
        """Remember the last internal error (its type and message; the traceback goes to the log)."""
        with self._lock:
            self.last_error = {"type": type(error).__name__, "message": str(error)[:500], "reason": reason,
                               "time": time.time()}

    def count_late(self) -> None:
        """A model result that arrived after its caller had been served the fallback (discarded)."""
        with self._lock:
            self.late_results += 1

    def snapshot(self) -> dict:
        """Counters plus latency percentiles (ms) and list-size summary over the recent window."""
        with self._lock:
            lat = np.fromiter(self._latency_ms, float, len(self._latency_ms))
            sizes = np.fromiter(self._sizes, float, len(self._sizes))
            outcomes = list(self._outcomes)
            out = {"total": self.total, "reranked": self.reranked, "shadowed": self.shadowed,
                   "scored": self.scored, "fallback": dict(self.fallback), "late_results": self.late_results,
                   "fallback_total": sum(self.fallback.values()), "last_error": self.last_error}
        n = len(outcomes)
        out["recent"] = {"n": n, **_rates(outcomes)}
        out["latency_ms"] = _summary(lat, ("p50", 50), ("p95", 95), ("p99", 99))
        out["candidates_per_query"] = _summary(sizes, ("p50", 50))
        return out


# the caller's own fault: counted, never a sign that the service is unwell
CLIENT_REASONS = frozenset({"invalid_input"})


def _rates(outcomes: list[str | None]) -> dict[str, float]:
    """Recent rates: fallback_rate (every fallback), service_fallback_rate (the service's own: not the caller's
    bad input), invalid_input_rate, error_rate (internal errors), overload_rate."""
    n = len(outcomes) or 1
    fell = [r for r in outcomes if r is not None]
    return {"fallback_rate": len(fell) / n,
            "service_fallback_rate": sum(r not in CLIENT_REASONS for r in fell) / n,
            "invalid_input_rate": sum(r in CLIENT_REASONS for r in fell) / n,
            "error_rate": sum(r.startswith("error:") for r in fell) / n,
            "overload_rate": sum(r == "overloaded" for r in fell) / n}


def _summary(values: np.ndarray, *percentiles: tuple[str, float]) -> dict:
    if len(values) == 0:
        return {"n": 0}
    out = {"n": int(len(values)), "mean": float(values.mean()), "max": float(values.max())}
    out.update({name: float(np.percentile(values, q)) for name, q in percentiles})
    return out
