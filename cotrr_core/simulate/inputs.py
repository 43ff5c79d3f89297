"""Inputs for the rollout simulators (cotrr_core.simulate), computed from a run's real outputs.

Served label rows come from the run's scores on the test split; latencies are measured by
timing the real scoring path (standardise, model forward, sort) one list at a time.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from cotrr_core.data.dataset import RankingData
from cotrr_core.evaluation.compare import evaluate_scores, original_scores, pad_flat
from cotrr_core.scoring import score_data
from cotrr_core.serving.features import request_records
from cotrr_core.training.runs import LoadedRun

__all__ = ["RolloutInputs", "rollout_inputs", "measure_list_latency", "topm_scores", "topm_inputs",
           "default_m_values", "serving_threads",
           "serving_latency"]

ProgressFn = Callable[[float, str], None]


@dataclass
class RolloutInputs:
    """[Q, L] label rows in each arm's served order, the mask, both orders, and measured latencies."""

    control_labels: np.ndarray
    treatment_labels: np.ndarray
    mask: np.ndarray
    original_order: np.ndarray  # [Q, L] candidate index shown at each rank (identity)
    wouldbe_order: np.ndarray  # [Q, L] the reranker's order
    latency_control_ms: np.ndarray  # [Q] time to return the first-stage order (no model)
    latency_treatment_ms: np.ndarray  # [Q] time to rerank the list with the model
    relevance_threshold: float


def _orders(data: RankingData, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wouldbe order [Q, L], mask [Q, L]); padding slots keep their own index."""
    n = data.list_lengths
    L = int(n.max())
    mask = np.arange(L)[None, :] < n[:, None]
    s = np.where(mask, pad_flat(data, scores), -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")
    return np.where(mask, order, np.arange(L)[None, :]), mask


def _n_timed(data: RankingData, max_queries: int | None) -> int:
    """Lists to time: all for None, else at most max_queries (0: none, quality only)."""
    return data.num_queries if max_queries is None else max(0, min(int(max_queries), data.num_queries))


@contextmanager
def serving_threads(n: int = 1):
    """Time like a serving worker: one request at a time on `n` intra-op threads (restored after).
    With more threads than free cores, spin-waiting makes per-list timings meaningless."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.inference_mode()
def measure_list_latency(run: LoadedRun, data: RankingData, top_m: int | None = None, repeats: int = 3,
                         max_queries: int | None = None) -> np.ndarray:
    """Per-query ms [Q'] to rerank the first `top_m` candidates (all when None) of each list, one list
    per call on one intra-op thread: standardise, forward, argsort. The best of `repeats` timings."""
    run.model.eval()
    qs = range(_n_timed(data, max_queries))
    out = []
    with serving_threads(1):
        _time_lists(run, data, qs, top_m, repeats, out)
    return np.asarray(out)


def serving_latency(reranker, data: RankingData, top_m: int | None = None, repeats: int = 3,
                    max_queries: int | None = None) -> np.ndarray:
    """Per-query ms [Q'] of the serving path (cotrr_core.serving.reranker Reranker.rerank_batch of one list, no time
    budget: featurise, standardise, forward, calibrate, annotate) on each list, one request at a time on
    one thread; best of `repeats`."""
    qs = range(_n_timed(data, max_queries))
    out = []
    with serving_threads(1):
        for q in qs:
            records = request_records(data, q)
            m = len(records) if top_m is None else top_m
            # rerank_batch without a time budget: measure the full reranking cost, never a fallback
            best = min(reranker.rerank_batch([(str(data.queries[q]), records)], top_m=m, mc_samples=0)[0].latency_ms
                       for _ in range(max(1, repeats)))
            out.append(best)
    return np.asarray(out)


def _time_lists(run, data, qs, top_m, repeats, out) -> None:
    for q in qs:
        r = data.rows(q)
        stop = r.stop if top_m is None else min(r.stop, r.start + top_m)
        feats = {k: v[r.start:stop] for k, v in data.features.items()}
        best = np.inf
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            scaled = run.scaler.transform(feats)
            tokens = {k: torch.from_numpy(v[None]).to(run.device) for k, v in scaled.items()}
            mask = torch.ones((1, stop - r.start), dtype=torch.bool, device=run.device)
            s = run.model(tokens, mask)[0].float().cpu().numpy()
            np.argsort(-s, kind="stable")
            best = min(best, time.perf_counter() - t0)
        out.append(1000 * best)


def _original_latency(data: RankingData, repeats: int = 3) -> np.ndarray:
    """Per-query ms to return the first-stage order (the control path has no model)."""
    orig = original_scores(data)
    out = []
    for q in range(data.num_queries):
        r = data.rows(q)
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.argsort(-orig[r], kind="stable")
            best = min(best, time.perf_counter() - t0)
        out.append(1000 * best)
    return np.asarray(out)


def rollout_inputs(run: LoadedRun, data: RankingData, scores: np.ndarray | None = None,
                   reranker=None) -> RolloutInputs:
    """A/B and shadow inputs from the run's scores on `data` (scored here when not given). Treatment
    latency: Reranker.rerank per list when a reranker is given, else the model path timed here."""
    if scores is None:
        scores = score_data(run, data)
    wouldbe, mask = _orders(data, scores)
    labels = pad_flat(data, data.labels.astype(np.float64))
    L = mask.shape[1]
    identity = np.broadcast_to(np.arange(L), mask.shape).copy()
    treatment = np.where(mask, np.take_along_axis(labels, wouldbe, axis=1), 0.0)
    return RolloutInputs(control_labels=np.where(mask, labels, 0.0), treatment_labels=treatment, mask=mask,
                         original_order=identity, wouldbe_order=wouldbe,
                         latency_control_ms=_original_latency(data),
                         latency_treatment_ms=(serving_latency(reranker, data) if reranker is not None
                                               else measure_list_latency(run, data)),
                         relevance_threshold=float(data.spec.relevance_threshold))


def topm_scores(data: RankingData, scores: np.ndarray, m: int) -> np.ndarray:
    """[N] scores that rerank only each list's first M candidates (original order), the rest after them
    in original order."""
    pos = np.arange(data.num_candidates) - np.repeat(data.offsets[:-1], data.list_lengths)
    top = pos < m
    out = np.empty(data.num_candidates, dtype=np.float64)
    # reranked head above every tail candidate: shift the head's scores over the tail's
    span = float(np.ptp(scores)) + 1.0 if len(scores) else 1.0
    out[top] = scores[top] - float(np.min(scores)) + 1.0 + data.num_candidates + span
    out[~top] = -pos[~top].astype(np.float64)
    return out


def default_m_values(data: RankingData) -> list[int]:
    longest = int(data.list_lengths.max())
    ms = [m for m in (1, 3, 5, 10, 15, 20, 30, 40, 50, 75, 100) if m < longest]
    return ms + [longest]


def topm_inputs(run: LoadedRun, data: RankingData, m_values: Sequence[int] | None = None,
                scores: np.ndarray | None = None, repeats: int = 3, max_queries: int | None = None,
                on_progress: ProgressFn | None = None,
                reranker=None) -> tuple[dict[int, dict[str, float]], dict[int, np.ndarray]]:
    """quality_by_m (test nDCG@10, C@1 of reranking the top M) and latency_by_m (measured ms per query)."""
    if scores is None:
        scores = score_data(run, data)
    ms = list(m_values or default_m_values(data))
    quality, latency = {}, {}
    for i, m in enumerate(ms):
        ev = evaluate_scores(data, topm_scores(data, scores, m))
        quality[m] = {"ndcg@10": ev["ndcg@10"], "c@1": ev["c@1"], "mrr": ev["mrr"]}
        latency[m] = (serving_latency(reranker, data, m, repeats, max_queries) if reranker is not None
                      else measure_list_latency(run, data, top_m=m, repeats=repeats, max_queries=max_queries))
        if on_progress:
            on_progress((i + 1) / len(ms), f"M = {m}: {len(latency[m])} lists timed")
    return quality, latency
