"""Online reranking: calibrated CoTRR scores for candidate lists, behind a traffic policy, never failing.

    reranker = Reranker.load("artifacts/runs/<id>", policy=Policy("rollout", 0.1))
    result = reranker.rerank("a pisco sour", candidates, unit_id="user-42")
    result.served  # every candidate, in the order to show, annotated with ranks and probabilities

Only the first M candidates of the original (first-stage) order are scored and reordered; the
rest keep their order below them. Any problem (bad input, an internal error, a NaN score, the
time budget) serves the original order and says why in `fallback_reason`.

Two entry points share one columnar core (`_score_heads`: gather, standardise, one forward over
the lists' rows end to end, no padding): `rerank_arrays` takes token arrays [N, d] plus list offsets and never touches a
candidate in Python; `rerank` / `rerank_batch` take candidate dicts, convert every list in one
go and annotate copies of the dicts. The model runs on a worker thread when a time budget is
given, so a hung model costs the caller the budget, not the hang.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cotrr_core.data.errors import DataError
from cotrr_core.model import Ragged, count_parameters, mc_scores
from cotrr_core.serving.allocator import retain_freed_memory
from cotrr_core.serving.deadline import PARALLEL_MIN_ROWS, FutureTimeout, call_with_deadline
from cotrr_core.serving.features import Featurizer, in_original_order, invalid_lists, request_items
from cotrr_core.serving.inputs import PRECISIONS, ModelInputs
from cotrr_core.serving.policy import Decision, Policy, decide, unit_key
from cotrr_core.serving.results import ArrayResult, RerankResult, annotate, empty_array_result
from cotrr_core.serving.stats import ServeStats
from cotrr_core.training.runs import LoadedRun, load_run

__all__ = ["Reranker", "RerankResult", "ArrayResult", "PRECISIONS", "PARALLEL_MIN_ROWS"]

logger = logging.getLogger(__name__)
INVALID = "invalid_input"


@dataclass
class _Heads:
    """The lists to score: their top-M rows as token arrays {name: [n, d]} with offsets [K + 1]
    (from the Featurizer, list-constant tokens are [K, d]: one row per list; see ModelInputs)."""

    features: dict[str, np.ndarray]
    offsets: np.ndarray
    scores: np.ndarray | None = None  # [n] raw
    std: np.ndarray | None = None  # [n] MC std of the calibrated probability
    reason: list[str | None] = field(default_factory=list)  # [K]
    detail: list[str | None] = field(default_factory=list)  # [K]


class Reranker:
    """A loaded run ready to serve; thread-safe: inference never changes shared state (MC dropout
    is requested per call), and the stats take a lock."""

    def __init__(self, run: LoadedRun, policy: Policy | None = None, precision: str = "fp32", *,
                 workers: int = 4) -> None:
        self.run, self.precision = run, precision
        self.policy = policy or Policy(mode="full")
        self.inputs = ModelInputs(run, precision)  # checks the precision
        self.model = self.inputs.model
        self.featurizer = Featurizer(run.spec, run.meta["token_dims"])
        self.token_names = [t.name for t in run.spec.tokens]
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cotrr-score")
        self._stats = ServeStats()

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", policy: Policy | None = None, *,
             precision: str = "fp32", threads: int | None = None, retain_memory: bool = True) -> "Reranker":
        """Rebuild from the run directory alone and warm up. Process-wide settings for a serving
        process: `threads` sets torch's intra-op pool; `retain_memory` lets malloc keep freed blocks
        for reuse (allocator.retain_freed_memory)."""
        if threads is not None:
            torch.set_num_threads(threads)
        if retain_memory and not retain_freed_memory():
            logger.info("malloc tuning is not available here (not glibc); serving with the default allocator")
        reranker = cls(load_run(run_dir, device), policy, precision)
        reranker.warm_up()
        return reranker

    # ------------------------------------------------------------------ public API
    def rerank(self, query: str | None, candidates: Any, *, top_m: int | None = None,
               mc_samples: int | None = None, unit_id: str | None = None,
               time_budget_ms: float | None = None) -> RerankResult:
        """Rerank one list. Never raises for bad candidates: they are served in the original order.

        Args:
            query: the query text (also the rollout unit when no unit_id is given).
            candidates: Step5 candidate dicts (or a DataFrame) with the run's feature fields.
            top_m: rerank only the first M of the original order (default: the run's serve config).
            mc_samples: MC-dropout samples for `uncertainty` (0: none).
            unit_id: the user/session that the rollout policy buckets.
            time_budget_ms: fall back to the original order past this (default: the serve config).
        Returns:
            RerankResult: `served` (every candidate, annotated with original_rank, new_rank,
            raw_score, probability, uncertainty), the would-be order, arm and fallback reason.
        """
        budget = self.config.time_budget_ms if time_budget_ms is None else time_budget_ms
        return self.rerank_batch([(query, candidates)], top_m=top_m, mc_samples=mc_samples,
                                 unit_ids=[unit_id], time_budget_ms=budget)[0]

    def rerank_batch(self, lists: Sequence[tuple[str | None, Any]], *, top_m: int | None = None,
                     mc_samples: int | None = None, unit_ids: Sequence[str | None] | None = None,
                     time_budget_ms: float | None = None) -> list[RerankResult]:
        """Rerank many (query, candidates) lists with ONE padded forward; see `rerank` for the arguments.

        The time budget is off unless given and covers the whole call. Returns one RerankResult per list.
        """
        t0 = time.perf_counter()
        try:
            return self._rerank_batch(lists, top_m, mc_samples, unit_ids, time_budget_ms, t0)
        except Exception as exc:  # noqa: BLE001 - last resort: a bug here must still serve every list as given
            logger.exception("rerank_batch failed")
            self._stats.note_error(exc, f"error:{type(exc).__name__}")
            latency = 1e3 * (time.perf_counter() - t0)
            out = []
            for query, candidates in lists:
                rows = request_items(candidates) or []
                self._stats.record(n_candidates=len(rows), latency_ms=latency, reranked=False, shadowed=False,
                                   scored=False, fallback_reason=f"error:{type(exc).__name__}")
                out.append(RerankResult(served=list(rows), wouldbe=None, reranked=False, mode=self.policy.mode,
                                        arm="control", fallback_reason=f"error:{type(exc).__name__}",
                                        latency_ms=latency, detail=f"{type(exc).__name__}: {exc}"))
            return out

    def _rerank_batch(self, lists, top_m, mc_samples, unit_ids, time_budget_ms, t0) -> list[RerankResult]:
        m, mc = self._top_m(top_m), self._mc(mc_samples)
        units = list(unit_ids) if unit_ids is not None else [None] * len(lists)
        items, reasons, details = [], [None] * len(lists), [None] * len(lists)
        for i, (_, candidates) in enumerate(lists):
            items.append(request_items(candidates))
            if items[i] is None:
                items[i], reasons[i], details[i] = [], INVALID, "candidates must be a list of dicts or a DataFrame"
        decisions = [self._decide(q, u) for (q, _), u in zip(lists, units)]
        notes = [note for _, note in decisions]
        decisions = [d for d, _ in decisions]
        valid = [i for i in range(len(lists)) if reasons[i] is None]
        for i, ordered in zip(valid, in_original_order([items[i] for i in valid], self.run.spec)):
            if isinstance(ordered, DataError):  # served as given
                reasons[i], details[i] = INVALID, str(ordered)
            else:
                items[i] = ordered
        todo = [i for i, d in enumerate(decisions) if d.score and reasons[i] is None]
        for i in todo:
            if len(items[i]) < 2:
                reasons[i], details[i] = INVALID, f"{len(items[i])} candidate(s): nothing to rerank, returned as is"
        todo = [i for i in todo if reasons[i] is None]
        head_rows = [items[i][:m] for i in todo]
        heads = self._featurize(head_rows)
        self._score_heads(heads, mc, t0, time_budget_ms)
        self._blame_inputs(heads, head_rows)
        probs = self._probabilities(heads)
        latency = 1e3 * (time.perf_counter() - t0)
        results = []
        k_of = {i: k for k, i in enumerate(todo)}
        for i, rows in enumerate(items):
            k = k_of.get(i)
            if k is not None:
                reasons[i], details[i] = heads.reason[k], heads.detail[k]
            scored = k is not None and reasons[i] is None
            sl = slice(heads.offsets[k], heads.offsets[k + 1]) if scored else slice(0, 0)
            results.append(self._finish(rows, decisions[i], scored, heads.scores, probs, heads.std, sl, reasons[i],
                                        details[i] or notes[i], latency, lists[i][0]))
        return results

    def rerank_arrays(self, features: dict[str, np.ndarray], offsets: np.ndarray, *,
                      queries: Sequence[str | None] | None = None, unit_ids: Sequence[str | None] | None = None,
                      top_m: int | None = None, mc_samples: int | None = None,
                      time_budget_ms: float | None = None) -> ArrayResult:
        """Columnar fast path: rerank Q lists given as token arrays, with no per-candidate Python.

        Args:
            features: token name -> [N, d] array (raw, as in the Step5 fields), rows of each list in
                the original (first-stage) order.
            offsets: [Q + 1] row offsets: list q is rows offsets[q]:offsets[q + 1].
            queries, unit_ids: per list, for the rollout policy (unit_ids first, then the query).
            top_m, mc_samples, time_budget_ms: as in `rerank`.
        Returns:
            ArrayResult (orders and scores [N], outcomes per list [Q]).
        """
        t0 = time.perf_counter()
        m, mc = self._top_m(top_m), self._mc(mc_samples)
        offsets = np.asarray(offsets, dtype=np.int64)
        n_lists, n = len(offsets) - 1, int(offsets[-1]) if len(offsets) else 0
        queries = list(queries) if queries is not None else [None] * n_lists
        units = list(unit_ids) if unit_ids is not None else [None] * n_lists
        decided = [self._decide(q, u) for q, u in zip(queries, units)]
        decisions, notes = [d for d, _ in decided], [note for _, note in decided]
        reasons: list[str | None] = [None] * n_lists
        details: list[str | None] = list(notes)
        lengths = np.diff(offsets)
        bad = invalid_lists(features, offsets, self.run.meta["token_dims"])
        todo = []
        for q in range(n_lists):
            if not decisions[q].score:
                continue
            if lengths[q] < 2:
                reasons[q], details[q] = INVALID, f"{lengths[q]} candidate(s): nothing to rerank, returned as is"
            elif bad[q]:
                reasons[q], details[q] = INVALID, bad[q]
            else:
                todo.append(q)
        todo = np.asarray(todo, dtype=np.int64)
        heads_len = np.minimum(lengths[todo], m)
        heads = _Heads({k: np.asarray(features[k]) for k in self.token_names},
                       np.concatenate([[0], np.cumsum(heads_len)]).astype(np.int64),
                       reason=[None] * len(todo), detail=[None] * len(todo))
        self._score_heads(heads, mc, t0, time_budget_ms, starts=offsets[todo])
        probs = self._probabilities(heads)
        out = empty_array_result(n, n_lists, offsets)
        for k, q in enumerate(todo.tolist()):
            reasons[q], details[q] = heads.reason[k] or reasons[q], heads.detail[k] or details[q]
            if heads.reason[k] is None:
                a, h, rows = int(offsets[q]), int(heads_len[k]), slice(heads.offsets[k], heads.offsets[k + 1])
                s = heads.scores[rows]
                out.raw_score[a:a + h], out.probability[a:a + h] = s, probs[rows]
                if heads.std is not None:
                    out.uncertainty[a:a + h] = heads.std[rows]
                out.wouldbe[a:a + h] = a + np.argsort(-s, kind="stable")
                out.scored[q] = True
                out.reranked[q] = decisions[q].serve_treatment
                if out.reranked[q]:
                    out.order[a:a + h] = out.wouldbe[a:a + h]
        out.latency_ms = 1e3 * (time.perf_counter() - t0)
        mode = self.policy.mode
        for q in range(n_lists):
            out.arm[q], out.bucket[q] = decisions[q].arm, decisions[q].bucket
            self._stats.record(n_candidates=int(lengths[q]), latency_ms=out.latency_ms, reranked=bool(out.reranked[q]),
                               shadowed=bool(out.scored[q]) and mode == "shadow", scored=bool(out.scored[q]),
                               fallback_reason=reasons[q])
        out.fallback_reason, out.detail = reasons, details
        return out

    def stats(self) -> dict:
        """Counters, fallbacks by reason, late results, recent rates, latency p50/p95/p99 (ms), list sizes."""
        return self._stats.snapshot()

    def health(self, max_error_rate: float = 0.01, max_fallback_rate: float = 0.2) -> dict:
        """What is loaded and how it is doing: status "degraded" when the recent internal-error rate or
        fallback rate passes its threshold (rates over the stats' recent window)."""
        snap = self._stats.snapshot()
        recent = snap["recent"]
        problems = []
        if recent["error_rate"] > max_error_rate:
            problems.append(f"internal error rate {recent['error_rate']:.3f} > {max_error_rate}")
        if recent["fallback_rate"] > max_fallback_rate:
            problems.append(f"fallback rate {recent['fallback_rate']:.3f} > {max_fallback_rate}")
        cal = self.run.calibrator
        return {
            "status": "degraded" if problems else "ok", "problems": problems, "recent": recent,
            "run_id": self.run.run_dir.name, "run_dir": str(self.run.run_dir),
            "dataset": self.run.meta.get("dataset"), "params": count_parameters(self.run.model),
            "model": self.run.config.model.to_dict(), "device": str(self.run.device), "precision": self.precision,
            "threads": torch.get_num_threads(),
            "calibrator": getattr(cal, "method", None) or "none: sigmoid(score / temperature)",
            "policy": {"mode": self.policy.mode, "share": self.policy.share, "salt": self.policy.salt},
            "serve": self.config.to_dict(), "last_error": snap["last_error"], "late_results": snap["late_results"],
        }

    @property
    def config(self):
        return self.run.config.serve

    def warm_up(self, list_len: int = 20) -> None:
        """Run a dummy list through the whole path (with MC) so no request pays first-call costs."""
        dummy = {f: (0.0 if len(t.fields) > 1 or t.dim == 1 else [0.0] * t.dim)
                 for t in self.featurizer.layout for f in t.fields}
        self.rerank_batch([(None, [dict(dummy) for _ in range(list_len)])], mc_samples=2, time_budget_ms=1e6)
        self._stats = ServeStats()  # the warm-up is not traffic

    def close(self) -> None:
        """Stop the scoring workers (a hung model's thread is left to finish on its own)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ steps
    def _top_m(self, top_m: int | None) -> int:
        return max(1, self.config.top_m if top_m is None else int(top_m))

    def _mc(self, mc_samples: int | None) -> int:
        return max(0, self.config.mc_samples if mc_samples is None else int(mc_samples))

    def _decide(self, query: str | None, unit_id: str | None) -> tuple[Decision, str | None]:
        unit, note = unit_key(unit_id, query, self.policy.mode)
        return decide(self.policy, unit), note

    def _featurize(self, heads: list[list[dict]]) -> _Heads:
        """Top-M dicts of K lists -> _Heads; a list whose input fails gets its reason (Featurizer.lists).

        Values are not checked for NaN / inf here (two passes over every vector, ~1% of a batch's time):
        such a value makes its candidate's score NaN (IEEE arithmetic propagates it through every layer),
        so its list falls back as nan_score and `_blame_inputs` then names the bad field."""
        features, offsets, errors = self.featurizer.lists(heads, check_finite=False)
        out = _Heads(features, offsets, reason=[None] * len(heads), detail=[None] * len(heads))
        for k, exc in enumerate(errors):
            if isinstance(exc, DataError):
                out.reason[k], out.detail[k] = INVALID, str(exc)
            elif exc is not None:
                logger.error("featurising a list failed", exc_info=exc)
                self._stats.note_error(exc, f"error:{type(exc).__name__}")
                out.reason[k], out.detail[k] = f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}"
        return out

    def _blame_inputs(self, heads: _Heads, rows: list[list[dict]]) -> None:
        """A list that scored NaN because of its input is the caller's invalid_input, with the data layer's message."""
        for k, reason in enumerate(heads.reason):
            if reason == "nan_score":
                try:
                    self.featurizer(rows[k])
                except DataError as exc:
                    heads.reason[k], heads.detail[k] = INVALID, str(exc)

    def _score_heads(self, heads: _Heads, mc: int, t0: float, budget_ms: float | None,
                     starts: np.ndarray | None = None) -> None:
        """Score every list of `heads` in one padded forward (on a worker when there is a budget);
        fill heads.scores [n], heads.std [n] and each list's fallback reason. `starts`: where each
        list's rows begin in heads.features (default: heads.offsets)."""
        todo = [k for k, r in enumerate(heads.reason) if r is None]
        if not todo:
            return
        try:
            batch = self.inputs(heads.features, heads.offsets, starts)
            if budget_ms is None:
                scores, std = self._forward(batch, mc)
            else:
                remaining = budget_ms / 1e3 - (time.perf_counter() - t0)
                scores, std = call_with_deadline(self._pool, self._forward, (batch, mc), len(batch.positions),
                                                 remaining, self._stats.count_late)
        except FutureTimeout:
            return _fail(heads, todo, "timeout", f"over the {budget_ms:g} ms budget")
        except Exception as exc:  # noqa: BLE001 - serving degrades to the original order, and says why
            logger.exception("scoring %d list(s) failed", len(todo))
            self._stats.note_error(exc, f"error:{type(exc).__name__}")
            return _fail(heads, todo, f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}")
        lengths = np.diff(heads.offsets)
        mask_np = np.arange(scores.shape[1])[None, :] < lengths[:, None]
        heads.scores = scores[mask_np]
        heads.std = None if std is None else std[mask_np]
        nonfinite = np.concatenate([[0], np.cumsum(~np.isfinite(heads.scores))])[heads.offsets]
        for k in np.flatnonzero(np.diff(nonfinite)).tolist():  # lists with a NaN or infinite score
            if heads.reason[k] is None:
                heads.reason[k], heads.detail[k] = "nan_score", "the model returned a NaN or infinite score"

    def _probabilities(self, heads: _Heads) -> np.ndarray | None:
        """Calibrated probabilities [n] of all scored rows in one call; a list with a non-finite score falls
        back (nan_score) and never reads its own: those rows go in as 0 (the calibrator refuses NaN)."""
        if heads.scores is None:
            return None
        return self.run.probabilities(np.where(np.isfinite(heads.scores), heads.scores, 0.0))

    def _forward(self, batch: Ragged, mc_samples: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw scores [K, L] and the MC-dropout std [K, L] of the CALIBRATED probability (None without
        samples): the probability is what callers act on."""
        with torch.inference_mode():
            if mc_samples <= 0:
                return self.model.score(batch).float().cpu().numpy().astype(np.float64), None
            scores, mc = mc_scores(self.model, batch, mc_samples, self.run.config.calibration.mc_scope)
            mc = mc.float().cpu().numpy()
            probs = self.run.probabilities(np.where(np.isfinite(mc), mc, 0.0))  # NaN lists fall back anyway
            return scores.float().cpu().numpy().astype(np.float64), probs.std(axis=0)

    def _finish(self, rows: list, decision: Decision, scored: bool, scores: np.ndarray | None,
                probabilities: np.ndarray | None, std: np.ndarray | None, sl: slice, reason: str | None,
                detail: str | None, latency_ms: float, query: str | None) -> RerankResult:
        """Build the annotated served / would-be lists and count the call; scores, probabilities, std: [n]
        over all lists, this list's rows at `sl`."""
        n = len(rows)
        raw = scores[sl] if scored else None
        probs = probabilities[sl] if scored else None
        unc = std[sl] if scored and std is not None else None
        model_order = np.concatenate([np.argsort(-raw, kind="stable"), np.arange(len(raw), n)]) if scored else None
        treat = scored and decision.serve_treatment
        ident = np.arange(n)
        served = annotate(rows, model_order if treat else ident, raw, probs, unc)
        wouldbe = (served if treat else annotate(rows, model_order, raw, probs, unc)) if scored else None
        if scored and not treat:
            logger.debug("shadow %r: would-be order %s", query, [c.get("candidate_id") for c in wouldbe])
        mode = self.policy.mode
        self._stats.record(n_candidates=n, latency_ms=latency_ms, reranked=treat, shadowed=scored and mode == "shadow",
                           scored=scored, fallback_reason=reason)
        return RerankResult(served=served, wouldbe=wouldbe, reranked=treat, mode=mode, arm=decision.arm,
                            fallback_reason=reason, latency_ms=latency_ms, detail=detail, bucket=decision.bucket)


def _fail(heads: _Heads, todo: list[int], reason: str, detail: str) -> None:
    for k in todo:
        heads.reason[k], heads.detail[k] = reason, detail
