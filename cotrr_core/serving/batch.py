"""Offline reranking of a whole file (`python -m cotrr_core rerank`): batched, written atomically."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pandas as pd

from cotrr_core.data import load_dataset
from cotrr_core.io import atomic_write, write_jsonl
from cotrr_core.serving.policy import Policy
from cotrr_core.serving.reranker import Reranker
from cotrr_core.serving.features import request_records

__all__ = ["rerank_file", "OUTPUT_COLUMNS"]

OUTPUT_COLUMNS = ("query_id", "candidate_id", "original_rank", "new_rank", "raw_score", "probability", "uncertainty")


def rerank_file(run_dir: str | Path, file: str | Path, out: str | Path | None = None, *, top_m: int | None = None,
                mc_samples: int | None = None, fmt: str | None = None, chunk: int = 128) -> dict:
    """Rerank every list of `file`; write one row per candidate (.jsonl or .csv). Returns a summary."""
    t0 = time.perf_counter()
    reranker = Reranker.load(run_dir, device="auto", policy=Policy(mode="full"))
    # min_candidates=1: one-candidate lists are kept (served as is) so every input row gets an output row
    data = load_dataset(file, fmt, reranker.run.spec, min_candidates=1, require_labels=False)
    out = Path(out) if out else Path(file).with_suffix(".reranked.jsonl")
    rows, fallbacks, reranked = [], Counter(), 0
    for a in range(0, data.num_queries, chunk):
        qs = range(a, min(a + chunk, data.num_queries))
        lists = [(str(data.queries[q]) or None, request_records(data, q)) for q in qs]
        for q, res in zip(qs, reranker.rerank_batch(lists, top_m=top_m, mc_samples=mc_samples)):
            reranked += res.reranked
            if res.fallback_reason:
                fallbacks[res.fallback_reason] += 1
            rows.extend({"query_id": data.query_ids[q], **{k: c[k] for k in OUTPUT_COLUMNS[1:]}} for c in res.served)
    _write(out, rows)
    return {"lists": data.num_queries, "candidates": len(rows), "reranked": reranked, "fallbacks": dict(fallbacks),
            "out": str(out), "seconds": time.perf_counter() - t0}


def _write(out: Path, rows: list[dict]) -> None:
    if out.suffix.lower() == ".csv":
        frame = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
        atomic_write(out, lambda p: frame.to_csv(p, index=False))
    else:
        write_jsonl(out, rows)
