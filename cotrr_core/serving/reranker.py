"""Online reranking: calibrated CoTRR scores for candidate lists, behind a traffic policy, never failing.

    reranker = Reranker.load("artifacts/runs/<id>", policy=Policy("rollout", 0.1))
    result = reranker.rerank("a pisco sour", candidates, unit_id="user-42")
    result.served  # every candidate, in the order to show, annotated with ranks and probabilities

Only the first M candidates of the original (first-stage) order are scored and reordered; the
rest keep their order below them. Any problem (bad input, an internal error, a NaN score, the
time budget) serves the original order and says why in `fallback_reason`.

Every entry point keeps one record per list (results.ListRecord: the policy's decision, then its scored
rows or why it falls back) and shares one columnar core (`_score`: one forward over the lists' top-M rows
end to end, no padding, then calibration and MC uncertainty): `rerank_arrays` takes token arrays [N, d]
plus list offsets and never touches a candidate in Python; `rerank_batch` (and `rerank`) featurise the
candidate dicts, run the core and annotate copies of the dicts. `predict` is the model alone: raw
scores of rows as given.

With a time budget, the forward is queued to the dynamic batcher (serving/batcher.py): concurrent callers'
lists with the same MC count are scored together in one forward; each keeps its own deadline, which covers
its whole wait (conversion, queue, forward and building the answer, whose cost is reserved from the budget
as measured on recent calls); a full queue answers `overloaded` at once; a hung model costs the caller the
budget, not the hang.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cotrr_core.artifacts import LoadedRun, load_run
from cotrr_core.data.errors import DataError
from cotrr_core.model import Ragged, count_parameters
from cotrr_core.serving.allocator import retain_freed_memory
from cotrr_core.serving.batcher import Batcher, Job, concat_jobs
from cotrr_core.serving.blended import sampled_scores as mc_scores  # MC of a blend: the network part
from cotrr_core.serving.blended import served_model
from cotrr_core.serving.counters import ServeCounters
from cotrr_core.serving.deadline import PARALLEL_MIN_ROWS, AnswerCost
from cotrr_core.serving.features import Featurizer, in_original_order, invalid_lists, request_items
from cotrr_core.serving.model_inputs import PRECISIONS, ModelInputs
from cotrr_core.serving.policy import Policy, decide, unit_key
from cotrr_core.serving.results import ArrayResult, ListRecord, RerankResult, Scores, array_result, list_result

__all__ = ["Reranker", "RerankResult", "ArrayResult", "PRECISIONS", "PARALLEL_MIN_ROWS"]

logger = logging.getLogger(__name__)
INVALID = "invalid_input"


class Reranker:
    """A loaded run ready to serve; thread-safe: inference never changes shared state (MC dropout
    is requested per call), and the stats take a lock."""

    def __init__(self, run: LoadedRun, policy: Policy | None = None, precision: str = "fp32", *,
                 workers: int = 2, fold: bool = True, max_queue: int = 128, max_wait_ms: float = 2.0,
                 batching: bool = True) -> None:
        """`fold` (fp32): serve a copy with the standardisation folded into the token projections (faster,
        same scores to float32 rounding: serving/fold.py). `workers`, `max_queue`, `max_wait_ms`: the dynamic
        batcher's scoring threads, queued requests before `overloaded`, and how long a forward waits for more;
        `batching=False`: one forward per request (for comparison)."""
        self.run, self.precision = run, precision
        self.policy = policy or Policy(mode="full")
        self.inputs = ModelInputs(run, precision, fold)  # checks the precision
        self.model = self.inputs.model
        self.featurizer = Featurizer(run.spec, run.meta["token_dims"])
        self.token_names = [t.name for t in run.spec.tokens]
        self._counters = ServeCounters()
        self._batcher = Batcher(self._score_jobs, workers=workers, max_queue=max_queue, max_wait_ms=max_wait_ms,
                                max_jobs=None if batching else 1, on_late=lambda: self._counters.count_late())
        self._answer_cost = AnswerCost()

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", policy: Policy | None = None, *,
             precision: str = "fp32", threads: int | None = None, retain_memory: bool = True,
             switch_interval_s: float | None = 0.001) -> Reranker:
        """Rebuild from the run directory alone and warm up. Process-wide settings for a serving
        process: `threads` sets torch's intra-op pool; `retain_memory` lets malloc keep freed blocks
        for reuse (allocator.retain_freed_memory); `switch_interval_s` sets the interpreter's thread switch
        interval (None: leave it): a forward is many small torch calls, each taking the GIL back, so with the
        default 5 ms a batcher worker waited behind callers converting their requests (bench/serve.py:
        concurrency_load measures the serving path with this setting)."""
        if threads is not None:
            torch.set_num_threads(threads)
        if switch_interval_s is not None:
            sys.setswitchinterval(switch_interval_s)
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
        """Rerank many (query, candidates) lists with ONE forward; see `rerank` for the arguments.

        The time budget is off unless given and covers the whole call. Returns one RerankResult per list.
        """
        t0 = time.perf_counter()
        if time_budget_ms is not None:
            self._batcher.arrive()
        try:
            return self._rerank_batch(lists, top_m, mc_samples, unit_ids, time_budget_ms, t0)
        except Exception as exc:  # noqa: BLE001 - last resort: a bug here must still serve every list as given
            logger.exception("rerank_batch failed")
            self._counters.note_error(exc, f"error:{type(exc).__name__}")
            latency = 1e3 * (time.perf_counter() - t0)
            out = []
            for _query, candidates in lists:
                rows = request_items(candidates) or []
                self._counters.record(n_candidates=len(rows), latency_ms=latency, reranked=False, shadowed=False,
                                      scored=False, fallback_reason=f"error:{type(exc).__name__}")
                out.append(RerankResult(served=list(rows), wouldbe=None, reranked=False, mode=self.policy.mode,
                                        arm="control", fallback_reason=f"error:{type(exc).__name__}",
                                        latency_ms=latency, detail=f"{type(exc).__name__}: {exc}"))
            return out
        finally:
            self._batcher.depart()

    def _rerank_batch(self, lists, top_m, mc_samples, unit_ids, time_budget_ms, t0) -> list[RerankResult]:
        """featurise -> the columnar core -> annotate."""
        units = list(unit_ids) if unit_ids is not None else [None] * len(lists)
        items = [request_items(candidates) for _, candidates in lists]
        records = [self._record(query, unit, len(rows or ())) for (query, _), unit, rows in zip(lists, units, items)]
        for rec, rows in zip(records, items):
            if rows is None:
                rec.fail(INVALID, "candidates must be a list of dicts or a DataFrame")
        valid = [i for i, rows in enumerate(items) if rows is not None]
        for i, ordered in zip(valid, in_original_order([items[i] for i in valid], self.run.spec)):
            if isinstance(ordered, DataError):  # served as given
                records[i].fail(INVALID, str(ordered))
            else:
                items[i] = ordered
        items = [rows or [] for rows in items]
        todo = [i for i, rec in enumerate(records) if rec.wants_score and _long_enough(rec)]
        m = self._top_m(top_m)
        features, offsets = self._featurize([items[i][:m] for i in todo], [records[i] for i in todo])
        answer_units = int(offsets[-1]) + len(items)  # the answer annotates scored rows when read: O(M) per list
        scores = self._score(features, offsets, None, [records[i] for i in todo], self._mc(mc_samples), t0,
                             time_budget_ms, answer_units)
        self._blame_inputs(features, offsets, [records[i] for i in todo])
        t_answer = time.perf_counter()
        out = [list_result(rows, rec, scores, self.policy.mode, 0.0) for rows, rec in zip(items, records)]
        end = time.perf_counter()
        self._answer_cost.observe(answer_units, end - t_answer)
        latency = 1e3 * (end - t0)  # the caller's whole wait, answer included
        for res, rec in zip(out, records):
            res.latency_ms = latency
            self._count(rec, latency)
        return out

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
        if time_budget_ms is not None:
            self._batcher.arrive()
        try:
            return self._rerank_arrays(features, offsets, queries, unit_ids, top_m, mc_samples, time_budget_ms, t0)
        finally:
            self._batcher.depart()

    def _rerank_arrays(self, features, offsets, queries, unit_ids, top_m, mc_samples, time_budget_ms, t0) -> ArrayResult:
        offsets = np.asarray(offsets, dtype=np.int64)
        lengths = np.diff(offsets)
        queries = list(queries) if queries is not None else [None] * len(lengths)
        units = list(unit_ids) if unit_ids is not None else [None] * len(lengths)
        records = [self._record(q, u, int(n)) for q, u, n in zip(queries, units, lengths)]
        for rec, bad in zip(records, invalid_lists(features, offsets, self.run.meta["token_dims"])):
            if rec.wants_score and _long_enough(rec) and bad:
                rec.fail(INVALID, bad)
        todo = [k for k, rec in enumerate(records) if rec.wants_score]
        top = np.minimum(lengths[todo], self._top_m(top_m))
        scores = self._score({k: np.asarray(features[k]) for k in self.token_names},
                             np.concatenate([[0], np.cumsum(top)]).astype(np.int64), offsets[todo],
                             [records[k] for k in todo], self._mc(mc_samples), t0, time_budget_ms, int(offsets[-1]))
        t_answer = time.perf_counter()
        out = array_result(records, offsets, scores, 0.0)
        end = time.perf_counter()
        self._answer_cost.observe(int(offsets[-1]), end - t_answer)
        out.latency_ms = 1e3 * (end - t0)
        for rec in records:
            self._count(rec, out.latency_ms)
        return out

    def predict(self, features: dict[str, np.ndarray], offsets: np.ndarray) -> np.ndarray:
        """Raw model scores [N] of K lists given as token arrays: features {name: [N, d]} (raw, every row of
        every list, in the order given), offsets [K + 1] (list k is rows offsets[k]:offsets[k + 1]).

        The model alone, as the Reranker serves it (precision, folding): no traffic policy, no top-M cut, no
        calibration, no time budget and no fallback (bad input raises). Higher ranks first.
        """
        offsets = np.asarray(offsets, dtype=np.int64)
        with torch.inference_mode():
            batch = self.inputs({k: np.asarray(features[k]) for k in self.token_names}, offsets, offsets[:-1])
            return self.model.score(batch).float().cpu().numpy().astype(np.float64)

    def stats(self) -> dict:
        """Counters, fallbacks by reason, late results, recent rates, latency p50/p95/p99 (ms: the caller's whole
        wait), list sizes, and the batcher's counts (batches, dropped, refused, stuck threads)."""
        return {**self._counters.snapshot(), "batcher": self._batcher.stats()}

    def health(self, max_error_rate: float = 0.01, max_fallback_rate: float = 0.2) -> dict:
        """What is loaded and how it is doing: status "degraded" when the recent internal-error rate or the
        service's own fallback rate (timeouts, overload, errors, NaN scores: not the callers' invalid input,
        reported apart as invalid_input_rate) passes its threshold, over the stats' recent window."""
        snap = self._counters.snapshot()
        recent = snap["recent"]
        problems = []
        if recent["error_rate"] > max_error_rate:
            problems.append(f"internal error rate {recent['error_rate']:.3f} > {max_error_rate}")
        if recent["service_fallback_rate"] > max_fallback_rate:
            problems.append(f"fallback rate (service faults) {recent['service_fallback_rate']:.3f} > {max_fallback_rate}")
        cal = self.run.calibrator
        return {
            "status": "degraded" if problems else "ok", "problems": problems, "recent": recent,
            "run_id": self.run.run_dir.name, "run_dir": str(self.run.run_dir),
            "dataset": self.run.meta.get("dataset"), "params": count_parameters(self.run.model),
            "served_model": served_model(self.run.blend),
            "model": self.run.config.model.to_dict(), "device": str(self.run.device), "precision": self.precision,
            "threads": torch.get_num_threads(),
            "calibrator": getattr(cal, "method", None) or "none: sigmoid(score / temperature)",
            "policy": {"mode": self.policy.mode, "share": self.policy.share, "salt": self.policy.salt},
            "serve": self.config.to_dict(), "last_error": snap["last_error"], "late_results": snap["late_results"],
            "batcher": self._batcher.stats(),
        }

    @property
    def config(self):
        return self.run.config.serve

    def warm_up(self, list_len: int = 20) -> None:
        """Run a dummy list through the whole path (with MC) so no request pays first-call costs."""
        dummy = {f: (0.0 if len(t.fields) > 1 or t.dim == 1 else [0.0] * t.dim)
                 for t in self.featurizer.layout for f in t.fields}
        self.rerank_batch([(None, [dict(dummy) for _ in range(list_len)])], mc_samples=2, time_budget_ms=1e6)
        self._counters = ServeCounters()  # the warm-up is not traffic

    def close(self, wait_s: float = 0.0) -> None:
        """Stop the scoring workers: queued requests fall back at once, running forwards finish (waited for
        up to `wait_s`; a hung model's thread is left to finish on its own)."""
        self._batcher.close(wait_s)

    # ------------------------------------------------------------------ steps
    def _top_m(self, top_m: int | None) -> int:
        return max(1, self.config.top_m if top_m is None else int(top_m))

    def _mc(self, mc_samples: int | None) -> int:
        return max(0, self.config.mc_samples if mc_samples is None else int(mc_samples))

    def _record(self, query: str | None, unit_id: str | None, length: int) -> ListRecord:
        """A list's record with the policy's decision for its unit."""
        unit, note = unit_key(unit_id, query, self.policy.mode)
        return ListRecord(self._decide(unit), length, note)

    def _decide(self, unit: str):
        return decide(self.policy, unit)

    def _featurize(self, tops: list[list[dict]], records: list[ListRecord]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Top-M dicts of K lists -> (token arrays, offsets [K + 1]); a list whose input fails gets its reason
        (Featurizer.lists; its rows are zeros).

        Values are not checked for NaN / inf here (two passes over every vector): such a value makes its
        candidate's score NaN (IEEE arithmetic propagates it through every layer), so its list falls back
        as nan_score and `_blame_inputs` then names the bad field from the same arrays."""
        features, offsets, errors = self.featurizer.lists(tops, check_finite=False)
        for rec, exc in zip(records, errors):
            if isinstance(exc, DataError):
                rec.fail(INVALID, str(exc))
            elif exc is not None:
                logger.error("featurising a list failed", exc_info=exc)
                self._counters.note_error(exc, f"error:{type(exc).__name__}")
                rec.fail(f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}")
        return features, offsets

    def _blame_inputs(self, features: dict[str, np.ndarray], offsets: np.ndarray, records: list[ListRecord]) -> None:
        """A list that scored NaN because of its input is the caller's invalid_input, naming the field."""
        for k, rec in enumerate(records):
            if rec.reason == "nan_score":
                error = self.featurizer.nonfinite(features, offsets, k)
                if error is not None:
                    rec.reason, rec.detail = INVALID, str(error)

    def _score(self, features: dict[str, np.ndarray], offsets: np.ndarray, starts: np.ndarray | None,
               records: list[ListRecord], mc: int, t0: float, budget_ms: float | None, n_answer: int = 0) -> Scores:
        """The columnar core: score the K lists of `records` (their rows: offsets [K + 1], beginning at
        starts[k] in `features`, default offsets[k]) in one forward: inline without a budget, else through the
        batcher, due back by t0 + budget less the measured cost of answering `n_answer` candidates.
        Sets each record's rows, or its fallback reason; returns the Scores of all n rows."""
        for k, rec in enumerate(records):
            rec.rows = slice(int(offsets[k]), int(offsets[k + 1]))
        todo = [rec for rec in records if rec.reason is None]
        if not todo:
            return Scores.empty()
        try:
            if budget_ms is None:
                raw, std = self._forward(self.inputs(features, offsets, starts), mc)
            else:
                deadline = t0 + budget_ms / 1e3 - self._answer_cost.reserve_s(n_answer)
                job = Job(self.inputs.compact(features, offsets, starts), offsets, mc, deadline,
                          threads=torch.get_num_threads())
                if not self._batcher.submit(job):
                    return _fail(todo, "overloaded", "the scoring queue is full")
                got = self._batcher.wait(job)
                if got is None:
                    return _fail(todo, "timeout", f"over the {budget_ms:g} ms budget")
                raw, std = got
        except Exception as exc:  # noqa: BLE001 - serving degrades to the original order, and says why
            logger.exception("scoring %d list(s) failed", len(todo))
            self._counters.note_error(exc, f"error:{type(exc).__name__}")
            return _fail(todo, f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}")
        finite = np.isfinite(raw)
        bad = np.concatenate([[0], np.cumsum(~finite)])[offsets]
        for k in np.flatnonzero(np.diff(bad)).tolist():  # lists with a NaN or infinite score
            records[k].fail("nan_score", "the model returned a NaN or infinite score")
        # a list with a non-finite score falls back and never reads its own: those rows go in as 0 (the
        # calibrator refuses NaN)
        return Scores(raw, self.run.probabilities(np.where(finite, raw, 0.0)), std)

    def _score_jobs(self, jobs: list[Job]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The batcher's forward: the jobs' lists as one Ragged batch, plain jobs first, then those sampling the
        batch's one MC count (Batcher._pick), which only their own lists pay for; scores split per job."""
        plain, sampled = [j for j in jobs if j.mc <= 0], [j for j in jobs if j.mc > 0]
        ordered = plain + sampled
        features, offsets = concat_jobs(ordered)
        mc = sampled[0].mc if sampled else 0
        raw, std = self._forward(self.inputs(features, offsets), mc, sum(len(j.offsets) - 1 for j in plain))
        raws = np.split(raw, np.cumsum([j.rows for j in ordered])[:-1])
        stds = [None] * len(plain) + (np.split(std, np.cumsum([j.rows for j in sampled])[:-1]) if sampled else [])
        got = {job: (r, sd) for job, r, sd in zip(ordered, raws, stds)}
        return [got[job] for job in jobs]

    def _forward(self, batch: Ragged, mc_samples: int = 0, first_sampled: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw scores [n] and the MC-dropout std [n'] of the CALIBRATED probability (the probability is what
        callers act on) of the rows of lists first_sampled.. (None without samples)."""
        with torch.inference_mode():
            if mc_samples <= 0 or first_sampled >= len(batch.mask):
                return self.model.score(batch).float().cpu().numpy().astype(np.float64), None
            scores, mc = mc_scores(self.model, batch, mc_samples, self.run.config.calibration.mc_scope,
                                   first_list=first_sampled)
            mc = mc.float().cpu().numpy()
            probs = self.run.probabilities(np.where(np.isfinite(mc), mc, 0.0))  # NaN lists fall back anyway
            return scores.float().cpu().numpy().astype(np.float64), probs.std(axis=0)

    def _count(self, rec: ListRecord, latency_ms: float) -> None:
        self._counters.record(n_candidates=rec.length, latency_ms=latency_ms, reranked=rec.reranked,
                              shadowed=rec.scored and self.policy.mode == "shadow", scored=rec.scored,
                              fallback_reason=rec.reason)


def _long_enough(rec: ListRecord) -> bool:
    """A list of fewer than 2 candidates has nothing to rerank: it falls back (and is not scored)."""
    if rec.length < 2:
        rec.fail(INVALID, f"{rec.length} candidate(s): nothing to rerank, returned as is")
    return rec.reason is None


def _fail(records: list[ListRecord], reason: str, detail: str) -> Scores:
    for rec in records:
        rec.fail(reason, detail)
    return Scores.empty()
