"""Offline reranking of a whole file (`python -m cotrr_core rerank`): batched, written atomically."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from cotrr_core.data.dataset import RankingData
from cotrr_core.data.loaders import infer_format, load_dataset
from cotrr_core.data.spec import FeatureSpec, conform_spec
from cotrr_core.data.stream import STREAM_FORMATS, cached_dataset
from cotrr_core.io import atomic_write, write_jsonl
from cotrr_core.serving.policy import Policy
from cotrr_core.serving.reranker import Reranker

__all__ = ["rerank_file", "OUTPUT_COLUMNS"]

OUTPUT_COLUMNS = ("query_id", "candidate_id", "original_rank", "new_rank", "raw_score", "probability", "uncertainty")


def rerank_file(run_dir: str | Path, file: str | Path, out: str | Path | None = None, *, top_m: int | None = None,
                mc_samples: int | None = None, fmt: str | None = None, chunk: int = 256,
                spec: FeatureSpec | None = None) -> dict:
    """Rerank every list of `file` through the columnar path; write one row per candidate (.jsonl or
    .csv), atomically. `spec`: how this file names the run's tokens (default: the run's own spec).
    Returns a summary (lists, candidates, reranked, fallbacks by reason, seconds)."""
    t0 = time.perf_counter()
    reranker = Reranker.load(run_dir, device="auto", policy=Policy(mode="full"))
    # min_candidates=1: one-candidate lists are kept (served as is) so every input row gets an output row
    # streamed into the memory-mapped dataset cache: a file of any size is read chunk by chunk
    run = reranker.run
    spec = run.spec if spec is None else conform_spec(spec, run.spec, run.meta.get("token_dims", {}), "--spec")
    data = _read(file, fmt, spec)
    out = Path(out) if out else Path(file).with_suffix(".reranked.jsonl")
    frames, fallbacks, reranked = [], Counter(), 0
    for a in range(0, data.num_queries, chunk):
        sub = data.subset(range(a, min(a + chunk, data.num_queries)))
        res = reranker.rerank_arrays(sub.features, sub.offsets, queries=[str(q) or None for q in sub.queries],
                                     top_m=top_m, mc_samples=mc_samples)
        reranked += int(res.reranked.sum())
        fallbacks.update(r for r in res.fallback_reason if r)
        frames.append(_rows(sub, res))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(OUTPUT_COLUMNS))
    _write(out, frame)
    return {"lists": data.num_queries, "candidates": len(frame), "reranked": reranked, "fallbacks": dict(fallbacks),
            "out": str(out), "seconds": time.perf_counter() - t0}


def _read(file: str | Path, fmt: str | None, spec: FeatureSpec) -> RankingData:
    """Every row of a scoring-only file: Step5 JSONL / Parquet streamed through the dataset cache, CSV and
    LETOR loaded whole (the same checks and errors as `validate`)."""
    fmt = fmt or infer_format(file)
    if fmt in STREAM_FORMATS:
        return cached_dataset(file, spec, fmt=fmt, min_candidates=1, require_labels=False)
    return load_dataset(file, fmt, spec, min_candidates=1, require_labels=False)


def _rows(data, res) -> pd.DataFrame:
    """One row per candidate in served order: ids, original and new rank (1-based), scores."""
    starts = np.repeat(data.offsets[:-1], data.list_lengths)
    order = res.order
    nan_to_none = lambda x: pd.Series(x).astype(object).where(np.isfinite(x), None)  # noqa: E731
    return pd.DataFrame({
        "query_id": np.repeat(data.query_ids, data.list_lengths), "candidate_id": data.candidate_ids[order],
        "original_rank": order - starts + 1, "new_rank": np.arange(len(order)) - starts + 1,
        "raw_score": nan_to_none(res.raw_score[order]), "probability": nan_to_none(res.probability[order]),
        "uncertainty": nan_to_none(res.uncertainty[order])})


def _write(out: Path, frame: pd.DataFrame) -> None:
    if out.suffix.lower() == ".csv":
        atomic_write(out, lambda p: frame.to_csv(p, index=False))
    else:
        write_jsonl(out, frame.to_dict("records"))
