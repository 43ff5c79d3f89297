"""Bounds on what one input may cost to validate: every reader checks them before it materialises data.

Raise them (or pass `max_features=` to load_dataset) for larger real data; they exist so a tiny file
cannot make a load hang or exhaust memory.
"""
from __future__ import annotations

import numpy as np

__all__ = ["F32_MAX", "MAX_FEATURE_INDEX", "MAX_SPARSE_EXPANSION", "MAX_ROWS", "MAX_VALUES", "MAX_STREAM_VALUES", "MAX_COLUMNS",
           "MAX_JSON_DEPTH", "MAX_CSV_CELL", "MAX_GRADE"]

F32_MAX = float(np.finfo(np.float32).max)  # the model computes in float32: larger values become inf
# LETOR feature indices: MSLR has 136, Yahoo 700; a higher index is almost surely a typo
MAX_FEATURE_INDEX = 1024
# dense LETOR values per value written in the file (a sparse line "1 qid:1 1000:1" expands 1000x);
# only enforced above SPARSE_FLOOR dense values, which are cheap whatever the ratio
MAX_SPARSE_EXPANSION = 64
SPARSE_FLOOR = 1_000_000
MAX_ROWS = 5_000_000  # candidates per file (Parquet: checked from the footer before reading)
MAX_VALUES = 400_000_000  # numbers per file after decoding (1.6 GB as float32)
# a streamed load (data/stream.py) holds one chunk in memory and writes the rest to the disk cache
MAX_STREAM_VALUES = 8_000_000_000  # at most 32 GB of float32 on disk
MAX_COLUMNS = 4096  # distinct fields per file (a Step5 file has ~25; each costs a pandas column)
MAX_JSON_DEPTH = 32  # a Step5 line is an object holding vectors: depth 2; extras get room, not 5000
MAX_CSV_CELL = 64 * 2**20  # characters in one CSV cell (a 1024-d vector as text is ~20 kB)
MAX_GRADE = 24  # LETOR grades without a spec: gain 2**g - 1 stays an exact float32 integer
