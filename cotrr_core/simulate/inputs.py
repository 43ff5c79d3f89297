"""Inputs for the rollout simulators (cotrr_core.simulate), computed from a run's real outputs.

Served label rows come from the run's scores on the test split; latencies time the serving path
(cotrr_core.serving.reranker.Reranker) one list at a time, once per run (simulate.latency).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from cotrr_core.artifacts import LoadedRun
from cotrr_core.data.dataset import RankingData
from cotrr_core.evaluation.compare import evaluate_scores, pad_flat
from cotrr_core.scoring import score_data
from cotrr_core.serving.blended import BlendedModel
from cotrr_core.serving.features import request_records

__all__ = ["RolloutInputs", "rollout_inputs", "measure_list_latency", "topm_scores", "topm_inputs",
           "default_m_values", "serving_threads", "serving_latency", "served_topm_scores", "stored_serving_latency"]

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
    query_ids: np.ndarray | None = None  # [Q] ids of the test queries, for display


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
    per call on one intra-op thread: forward (standardising inside), argsort. The best of `repeats` timings."""
    run.model.eval()
    model = run.model if run.blend is None else BlendedModel(run.model, run.blend)  # what the run serves
    qs = range(_n_timed(data, max_queries))
    out = []
    with serving_threads(1):
        _time_lists(run, model, data, qs, top_m, repeats, out)
    return np.asarray(out)


def serving_latency(reranker, data: RankingData, top_m: int | None = None, repeats: int = 3,
                    max_queries: int | None = None) -> np.ndarray:
    """Per-query ms [Q'] of the serving path (cotrr_core.serving.reranker Reranker.rerank_batch of one list, no time
    budget: featurise, forward, calibrate, annotate) on each list, one request at a time on
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


def _time_lists(run, model, data, qs, top_m, repeats, out) -> None:
    for q in qs:
        r = data.rows(q)
        stop = r.stop if top_m is None else min(r.stop, r.start + top_m)
        feats = {k: v[r.start:stop] for k, v in data.features.items()}
        best = np.inf
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            tokens = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)[None]).to(run.device)
                      for k, v in feats.items()}
            mask = torch.ones((1, stop - r.start), dtype=torch.bool, device=run.device)
            s = model(tokens, mask)[0].float().cpu().numpy()
            np.argsort(-s, kind="stable")
            best = min(best, time.perf_counter() - t0)
        out.append(1000 * best)


def _served_latency(reranker, data: RankingData, what: str, dataset_key: str | None, repeats: int,
                    measure: Callable[[], np.ndarray]) -> np.ndarray:
    """Stored in the run's latency.json under (dataset, what) when dataset_key is given: measured once."""
    if dataset_key is None:
        return measure()
    return stored_serving_latency(reranker, data, dataset_key, what, repeats, measure).ms


def stored_serving_latency(reranker, data: RankingData, dataset_key: str, what: str = "serve:all",
                           repeats: int = 3, measure: Callable[[], np.ndarray] | None = None):
    """simulate.latency.Latency of the serving path on every list of `data` (default: whole lists,
    one request at a time), measured once per run and dataset and reused by every page and command."""
    from cotrr_core.simulate.latency import latency_key, measurement_conditions, stored_latency

    path = f"Reranker.rerank_batch of one list ({what}): featurise, forward, calibrate"
    measure = measure or (lambda: serving_latency(reranker, data, None, repeats))
    return stored_latency(reranker.run.run_dir, latency_key(dataset_key, what), measure,
                          lambda: measurement_conditions(path, repeats, 1, str(reranker.run.device)))


def _control_latency(reranker, data: RankingData, repeats: int = 3) -> np.ndarray:
    """Per-query ms [Q] of the serving path with the model off (Policy 'off': the first-stage order)."""
    from cotrr_core.serving.policy import Policy
    from cotrr_core.serving.reranker import Reranker

    off = Reranker(reranker.run, Policy(mode="off"))
    try:
        return serving_latency(off, data, repeats=repeats)
    finally:
        off.close()


def _reranker_for(run: LoadedRun, reranker):
    if reranker is not None:
        return reranker
    from cotrr_core.serving.reranker import Reranker

    return Reranker(run)


def rollout_inputs(run: LoadedRun, data: RankingData, scores: np.ndarray | None = None,
                   reranker=None, dataset_key: str | None = None, repeats: int = 3) -> RolloutInputs:
    """A/B and shadow inputs from the run's scores on `data` (scored here when not given).

    Latencies: Reranker.rerank_batch per list, the whole list (treatment) and with the model off
    (control); stored in the run's latency.json and reused when `dataset_key` is given.
    """
    if scores is None:
        scores = score_data(run, data)
    reranker = _reranker_for(run, reranker)
    wouldbe, mask = _orders(data, scores)
    labels = pad_flat(data, data.labels.astype(np.float64))
    L = mask.shape[1]
    identity = np.broadcast_to(np.arange(L), mask.shape).copy()
    treatment = np.where(mask, np.take_along_axis(labels, wouldbe, axis=1), 0.0)
    lat_c = _served_latency(reranker, data, "serve:model-off", dataset_key, repeats,
                            lambda: _control_latency(reranker, data, repeats))
    lat_t = _served_latency(reranker, data, "serve:all", dataset_key, repeats,
                            lambda: serving_latency(reranker, data, None, repeats))
    return RolloutInputs(control_labels=np.where(mask, labels, 0.0), treatment_labels=treatment, mask=mask,
                         original_order=identity, wouldbe_order=wouldbe, latency_control_ms=lat_c,
                         latency_treatment_ms=lat_t, relevance_threshold=float(data.spec.relevance_threshold),
                         query_ids=np.asarray(data.query_ids).astype(str))


def topm_scores(data: RankingData, scores: np.ndarray, m: int) -> np.ndarray:
    """[N] scores that rerank only each list's first M candidates (original order) by `scores`, the rest
    after them in original order. With list context, pass scores of the head alone (see served_topm_scores):
    scores of the whole list would let the tail influence the head."""
    pos = np.arange(data.num_candidates) - np.repeat(data.offsets[:-1], data.list_lengths)
    top = pos < m
    out = np.empty(data.num_candidates, dtype=np.float64)
    # reranked head above every tail candidate: shift the head's scores over the tail's
    span = float(np.ptp(scores)) + 1.0 if len(scores) else 1.0
    out[top] = scores[top] - float(np.min(scores)) + 1.0 + data.num_candidates + span
    out[~top] = -pos[~top].astype(np.float64)
    return out


def _request_lists(data: RankingData) -> list[tuple[str, list[dict]]]:
    return [(str(data.queries[q]), request_records(data, q)) for q in range(data.num_queries)]


def served_topm_scores(reranker, data: RankingData, m: int, lists: list | None = None,
                       batch_lists: int = 64) -> np.ndarray:
    """[N] scores (higher first) reproducing the order serving returns with top_m=M: Reranker.rerank_batch
    scores only each list's first M candidates (no time budget, no MC), the tail keeps its order."""
    lists = lists if lists is not None else _request_lists(data)
    out = np.empty(data.num_candidates, dtype=np.float64)
    for start in range(0, len(lists), batch_lists):
        results = reranker.rerank_batch(lists[start:start + batch_lists], top_m=m, mc_samples=0)
        for q, res in enumerate(results, start):
            shown = res.wouldbe if res.wouldbe is not None else res.served  # a 1-candidate list is not scored
            r = data.rows(q)
            for new, row in enumerate(shown):
                out[r.start + row["original_rank"] - 1] = -float(new)
    return out


def default_m_values(data: RankingData) -> list[int]:
    longest = int(data.list_lengths.max())
    ms = [m for m in (1, 3, 5, 10, 15, 20, 30, 40, 50, 75, 100) if m < longest]
    return ms + [longest]


def topm_inputs(run: LoadedRun, data: RankingData, m_values: Sequence[int] | None = None,
                scores: np.ndarray | None = None, repeats: int = 3, max_queries: int | None = None,
                on_progress: ProgressFn | None = None, reranker=None,
                dataset_key: str | None = None) -> tuple[dict[int, dict[str, float]], dict[int, np.ndarray]]:
    """quality_by_m (test nDCG@10, C@1, MRR of the order serving returns with top_m=M) and latency_by_m
    (ms per list of that call; stored in the run's latency.json and reused when dataset_key is given).
    `scores` is accepted for compatibility and unused: quality comes from the serving call itself."""
    reranker = _reranker_for(run, reranker)
    ms = list(m_values or default_m_values(data))
    lists = _request_lists(data)
    quality, latency = {}, {}
    for i, m in enumerate(ms):
        ev = evaluate_scores(data, served_topm_scores(reranker, data, m, lists))
        quality[m] = {"ndcg@10": ev["ndcg@10"], "c@1": ev["c@1"], "mrr": ev["mrr"]}
        latency[m] = _served_latency(reranker, data, f"serve:top{m}", dataset_key if max_queries is None else None,
                                     repeats, lambda m=m: serving_latency(reranker, data, m, repeats, max_queries))
        if on_progress:
            on_progress((i + 1) / len(ms), f"M = {m}: {len(latency[m])} lists timed")
    return quality, latency
