"""What one HTTP request may ask for, and the error that refuses it naming the field."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "RequestError"]


@dataclass
class Limits:
    """What one request may ask for; each over-limit request is refused naming the field."""

    max_body_bytes: int = 16 * 2**20
    max_candidates: int = 2000  # per list
    max_lists: int = 256  # per batch request
    max_budget_ms: float = 2000.0
    max_mc_samples: int = 32
    body_timeout_s: float = 10.0  # a client that sends its body slower than this is cut off (408)


class RequestError(Exception):
    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message
