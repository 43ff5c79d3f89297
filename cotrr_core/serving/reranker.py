"""Online reranking: calibrated CoTRR scores for candidate lists, behind a traffic policy, never failing.

    reranker = Reranker.load("artifacts/runs/<id>", policy=Policy("rollout", 0.1))
    result = reranker.rerank("a pisco sour", candidates, unit_id="user-42")
    result.served  # every candidate, in the order to show, annotated with ranks and probabilities

Only the first M candidates of the original (first-stage) order are scored and reordered; the
rest keep their order below them. Any problem (bad input, an exception, a NaN score, the time
budget) serves the original order and says why in `fallback_reason`. All lists of a
`rerank_batch` call share ONE padded forward pass; `rerank` is a batch of one.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cotrr_core.data.errors import DataError
from cotrr_core.data.scaling import standardise
from cotrr_core.model import count_parameters, mc_scores
from cotrr_core.serving.policy import Decision, Policy, decide
from cotrr_core.training.runs import LoadedRun, load_run
from cotrr_core.serving.features import Featurizer, as_records, original_order
from cotrr_core.serving.stats import ServeStats

__all__ = ["Reranker", "RerankResult", "PRECISIONS"]

logger = logging.getLogger(__name__)
# int8 dynamic quantisation is measured in bench/serve.py but not offered: on the full-size model it
# moved demo nDCG@10 by -0.0025 (> the 0.002 gate); on the fast model it passes (-0.0012) but is
# slower per list than fp32, so it only pays for batch throughput.
PRECISIONS = ("fp32", "bf16")


@dataclass
class RerankResult:
    """One list's outcome. `served` and `wouldbe` hold annotated copies of the input dicts."""

    served: list[dict]
    wouldbe: list[dict] | None  # the model's order (also in shadow mode); None when not scored
    reranked: bool  # served order is the model's
    mode: str
    arm: str
    fallback_reason: str | None  # invalid_input | nan_score | timeout | error:<Type>
    latency_ms: float
    detail: str | None = None  # the fallback's message, or how the unit was bucketed
    bucket: float | None = None


@dataclass
class _Job:
    """One list on its way through rerank_batch."""

    query: str | None
    records: list[dict]  # original order once prepared
    decision: Decision | None = None
    features: dict[str, np.ndarray] | None = None  # top-M rows, [m, d]; None: nothing to score
    scores: np.ndarray | None = None  # [m] raw
    probs: np.ndarray | None = None
    std: np.ndarray | None = None
    reason: str | None = None
    detail: str | None = None
    error: BaseException | None = None

    def fail(self, reason: str, exc: BaseException | str) -> None:
        if self.reason is None:
            self.reason, self.detail = reason, str(exc)
            self.error = exc if isinstance(exc, BaseException) else None
            self.scores = self.probs = self.std = None


class Reranker:
    """A loaded run ready to serve; thread-safe (inference is stateless, stats take a lock)."""

    def __init__(self, run: LoadedRun, policy: Policy | None = None, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.run, self.precision = run, precision
        self.policy = policy or Policy(mode="full")
        self.model = _prepare_model(run.model, precision, run.device)
        self.featurizer = Featurizer(run.spec, run.meta["token_dims"])
        self.token_names = [t.name for t in run.spec.tokens]
        self._dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self._scale = run.scaler.tensors(run.device)  # token -> (mean, std)
        self._stats = ServeStats()

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", policy: Policy | None = None, *,
             precision: str = "fp32", threads: int | None = None) -> "Reranker":
        """Rebuild from the run directory alone and warm up. `threads` sets torch's (process-wide) pool."""
        if threads is not None:
            torch.set_num_threads(threads)
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
        m = self.config.top_m if top_m is None else int(top_m)
        mc = self.config.mc_samples if mc_samples is None else int(mc_samples)
        units = list(unit_ids) if unit_ids is not None else [None] * len(lists)
        jobs = [self._prepare(q, c, u, m) for (q, c), u in zip(lists, units)]
        self._score_jobs([j for j in jobs if j.features is not None], mc, t0, time_budget_ms)
        latency = 1e3 * (time.perf_counter() - t0)
        return [self._finish(j, latency) for j in jobs]

    def stats(self) -> dict:
        """Counters, fallbacks by reason, recent latency p50/p95/p99 (ms) and list sizes."""
        return self._stats.snapshot()

    def health(self) -> dict:
        """What is loaded and how it is doing."""
        last_error = self._stats.snapshot()["last_error"]
        cal = self.run.calibrator
        return {
            "status": "ok", "run_id": self.run.run_dir.name, "run_dir": str(self.run.run_dir),
            "dataset": self.run.meta.get("dataset"), "params": count_parameters(self.run.model),
            "model": self.run.config.model.to_dict(), "device": str(self.run.device), "precision": self.precision,
            "threads": torch.get_num_threads(),
            "calibrator": getattr(cal, "method", None) or "none: sigmoid(score / temperature)",
            "policy": {"mode": self.policy.mode, "share": self.policy.share, "salt": self.policy.salt},
            "serve": self.config.to_dict(), "last_error": last_error,
        }

    @property
    def config(self):
        return self.run.config.serve

    def warm_up(self, list_len: int = 20) -> None:
        """Run a dummy list through the whole path (with MC) so no request pays first-call costs."""
        dummy = {f: (0.0 if len(t.fields) > 1 or t.dim == 1 else [0.0] * t.dim)
                 for t in self.featurizer.layout for f in t.fields}
        self.rerank_batch([(None, [dict(dummy) for _ in range(list_len)])], mc_samples=2)
        self._stats = ServeStats()  # the warm-up is not traffic

    # ------------------------------------------------------------------ steps
    def _prepare(self, query: str | None, candidates: Any, unit_id: str | None, top_m: int) -> _Job:
        """Validate, put into original order, apply the policy, featurize the top M."""
        job = _Job(query, [])
        try:
            job.records = as_records(candidates)
            unit, note = _unit_key(unit_id, query, self.policy.mode)
            job.decision, job.detail = decide(self.policy, unit), note
            if job.records:
                job.records = [job.records[i] for i in original_order(job.records, self.run.spec)]
            if not job.decision.score:
                return job
            if len(job.records) < 2:
                job.fail("invalid_input", f"{len(job.records)} candidate(s): nothing to rerank, returned as is")
                return job
            job.features = self.featurizer(job.records[:top_m])
        except DataError as exc:
            job.fail("invalid_input", exc)
        except Exception as exc:  # noqa: BLE001 - serving must degrade, not raise
            job.fail(f"error:{type(exc).__name__}", exc)
        return job

    def _score_jobs(self, jobs: list[_Job], mc: int, t0: float, budget_ms: float | None) -> None:
        """Score every job in one padded batch; attach raw scores, probabilities, MC std."""
        if not jobs:
            return
        try:
            tokens, mask = self._tensors([j.features for j in jobs])
            scores, std = self._forward(tokens, mask, mc, t0, budget_ms)
            for i, job in enumerate(jobs):
                n = len(next(iter(job.features.values())))
                job.scores = scores[i, :n]
                job.std = None if std is None else std[i, :n]
                if not np.isfinite(job.scores).all():
                    job.fail("nan_score", "the model returned a NaN or infinite score")
                else:
                    job.probs = self.run.probabilities(job.scores)
        except Exception as exc:  # noqa: BLE001
            for job in jobs:
                job.fail(f"error:{type(exc).__name__}", exc)
        if budget_ms is not None and 1e3 * (time.perf_counter() - t0) > budget_ms:
            for job in jobs:
                job.fail("timeout", f"over the {budget_ms:g} ms budget")

    def _tensors(self, features: list[dict[str, np.ndarray]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Pad B lists to the longest and standardise: tokens {name: [B, L, d]}, mask [B, L]."""
        lengths = [len(f[self.token_names[0]]) for f in features]
        B, L = len(features), max(lengths)
        mask = np.arange(L)[None, :] < np.asarray(lengths)[:, None]
        tokens = {}
        for name in self.token_names:
            buf = np.zeros((B, L, features[0][name].shape[1]), dtype=np.float32)
            for i, f in enumerate(features):
                buf[i, :lengths[i]] = f[name]
            x = torch.from_numpy(buf).to(self.run.device)
            tokens[name] = standardise(x, *self._scale[name], self.run.scaler.log_transform).to(self._dtype)
        return tokens, torch.from_numpy(mask).to(self.run.device)

    def _forward(self, tokens: dict[str, torch.Tensor], mask: torch.Tensor, mc_samples: int = 0,
                 t0: float | None = None, budget_ms: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw scores [B, L] (eval mode) and MC-dropout std [B, L] of the CALIBRATED probability
        (None without samples or over budget): the probability is what callers act on."""
        with torch.inference_mode():
            over = budget_ms is not None and t0 is not None and 1e3 * (time.perf_counter() - t0) > budget_ms
            if mc_samples <= 0 or over:  # no point spending MC time on a result that will be dropped
                return self.model(tokens, mask).float().cpu().numpy().astype(np.float64), None
            scores, mc = mc_scores(self.model, tokens, mask, mc_samples, self.run.config.calibration.mc_scope)
            probs = self.run.probabilities(mc.float().cpu().numpy())
            return scores.float().cpu().numpy().astype(np.float64), probs.std(axis=0)

    def _finish(self, job: _Job, latency_ms: float) -> RerankResult:
        """Build the annotated served / would-be lists and count the call."""
        n = len(job.records)
        d = job.decision
        scored = job.probs is not None
        model_order = np.concatenate([np.argsort(-job.scores, kind="stable"), np.arange(len(job.scores), n)]) \
            if scored else None
        treat = scored and d is not None and d.serve_treatment
        ident = np.arange(n)
        served = _annotate(job, model_order if treat else ident)
        wouldbe = (served if treat else _annotate(job, model_order)) if scored else None
        if scored and not treat:
            logger.debug("shadow %r: would-be order %s", job.query, [c.get("candidate_id") for c in wouldbe])
        mode = self.policy.mode
        self._stats.record(n_candidates=n, latency_ms=latency_ms, reranked=treat,
                           shadowed=scored and mode == "shadow", scored=scored, fallback_reason=job.reason,
                           error=job.error if job.reason and job.reason.startswith("error:") else None)
        return RerankResult(served=served, wouldbe=wouldbe, reranked=treat, mode=mode,
                            arm=d.arm if d is not None else "control", fallback_reason=job.reason,
                            latency_ms=latency_ms, detail=job.detail, bucket=d.bucket if d is not None else None)


def _annotate(job: _Job, order: np.ndarray) -> list[dict]:
    """Copies of job.records in `order` with original_rank, new_rank, raw_score, probability, uncertainty."""
    m = 0 if job.probs is None else len(job.probs)
    raw = job.scores.tolist() if m else []
    prob = job.probs.tolist() if m else []
    unc = job.std.tolist() if m and job.std is not None else [None] * m
    out = []
    for new, i in enumerate(order.tolist(), start=1):
        scored = i < m
        out.append({**job.records[i], "original_rank": i + 1, "new_rank": new,
                    "raw_score": raw[i] if scored else None, "probability": prob[i] if scored else None,
                    "uncertainty": unc[i] if scored else None})
    return out


def _unit_key(unit_id: str | None, query: str | None, mode: str) -> tuple[str, str | None]:
    """The policy's unit: unit_id, else (rollout needs one) the query text, said in the note."""
    if unit_id is not None:
        return str(unit_id), None
    if mode != "rollout":
        return "", None
    return (query or ""), "no unit_id: bucketed by the query text" if query else \
        "no unit_id and no query: every such request shares one bucket"


def _prepare_model(model: torch.nn.Module, precision: str, device: torch.device) -> torch.nn.Module:
    """fp32: the model as is; bf16: a bfloat16 copy (inputs are cast to bfloat16, scores back to fp32)."""
    if precision == "fp32":
        return model
    return copy.deepcopy(model).to(torch.bfloat16).eval()
