"""Query-level splits by a seeded hash of query_id: a query never straddles two splits."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["split_queries", "DEFAULT_FRACTIONS"]

DEFAULT_FRACTIONS = {"train": 0.6, "val": 0.15, "cal": 0.1, "test": 0.15}


def _unit_hash(text: str) -> float:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_queries(query_ids: Sequence[str], fractions: dict[str, float] | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Assign each query to a split by hashing f"{seed}:{query_id}" into [0, 1).

    Returns split name -> sorted query indices. Deterministic, independent of the
    order or number of other queries, so adding data never moves a query.
    """
    fractions = fractions or DEFAULT_FRACTIONS
    total = sum(fractions.values())
    if total <= 0 or any(v < 0 for v in fractions.values()):
        raise ValueError(f"split fractions must be >= 0 with a positive sum, got {fractions}")
    u = np.array([_unit_hash(f"{seed}:{q}") for q in query_ids])
    edges = np.cumsum([v / total for v in fractions.values()])
    which = np.minimum(np.searchsorted(edges, u, side="right"), len(edges) - 1)
    return {name: np.flatnonzero(which == i) for i, name in enumerate(fractions)}
