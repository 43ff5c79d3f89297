"""The serving time budget: how many intra-op threads a request's forward gets, and the measured cost of
building an answer, reserved from the budget so that the budget bounds the caller's whole wait."""
from __future__ import annotations

import threading

__all__ = ["PARALLEL_MIN_ROWS", "AnswerCost"]

# A budgeted request with fewer candidate rows is scored on ONE intra-op thread: a second thread helps a
# small forward only on a quiet machine and hurts its tail otherwise; it pays reliably from a few hundred
# rows (bench/serve.py: steps.forward_threads_by_rows). One thread per request also leaves the other
# cores to other requests.
# OpenMP keeps one count per OS thread, fixed when the thread first ran torch, so the batcher sets it on
# its worker for every batch (a torch.set_num_threads after load never reached the workers otherwise).
PARALLEL_MIN_ROWS = 256


class AnswerCost:
    """Seconds per unit of building an answer after the forward, as an exponentially weighted mean over recent
    calls, with a safety factor: the part of a caller's budget kept back from the model so the answer is still
    ready in time. A unit is what the answer's cost grows with: for dict answers a scored row or a list (rows
    past the top M are annotated only when read: results.AnnotatedList), for array answers a row."""

    def __init__(self, alpha: float = 0.1, safety: float = 1.5) -> None:
        self._lock = threading.Lock()
        self.alpha, self.safety = alpha, safety
        self.per_unit_s = 0.0

    def observe(self, units: int, seconds: float) -> None:
        if units <= 0:
            return
        with self._lock:
            x = seconds / units
            self.per_unit_s = x if self.per_unit_s == 0.0 else \
                (1 - self.alpha) * self.per_unit_s + self.alpha * x

    def reserve_s(self, units: int) -> float:
        return self.safety * self.per_unit_s * units
