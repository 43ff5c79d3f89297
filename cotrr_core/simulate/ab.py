"""Simulated A/B test and staged ramp of the reranker over measured inputs.

Units ("u0", "u1", ...) are assigned with cotrr_core.serving.policy.buckets, the same
hash serving uses. Each unit issues Poisson(queries_per_unit_per_day) queries a
day, drawn uniformly from the Q test queries; the served list is that arm's
label row and clicks come from a click model.

Unit of analysis: the user is the randomisation unit, and the Q test queries recur in
both arms (a sample of the query population that more users never enlarge), so every
lift is tested with a two-way (users x queries) cluster bootstrap (stats.clustered_diff),
never as if each simulated query were independent. Latency is not a lift: it is the
run's stored measurement (simulate.latency), resampled per query for the totals.

nDCG@10 is cotrr_core.evaluation.metrics.ndcg_at_k of the served order (gain 2**label - 1,
IDCG over the whole row); queries without a relevant candidate are NaN there
and are left out of nDCG means and tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from cotrr_core.evaluation.metrics import ndcg_at_k
from cotrr_core.serving.policy import buckets
from cotrr_core.simulate.clicks import ClickModel
from cotrr_core.simulate.stats import clustered_diff, srm_check

__all__ = ["ABResult", "RampResult", "simulate_ab", "simulate_ramp", "served_ndcg"]

GuardrailMetric = Literal["ctr", "success", "ndcg@10"]
_RATE_COLUMN = {"ctr": "clicked", "success": "success"}
_ARMS = ["control", "treatment"]
DEFAULT_CLICKS = ClickModel()  # frozen: one shared default is safe


@dataclass
class ABResult:
    """daily: one row per (day, arm); totals: one row per arm; lifts: metric -> clustered_diff dict
    (ctr, success, ndcg@10); mde: relative MDE of ctr and success at this size (nan without both
    arms); log: one row per query."""

    share: float
    daily: pd.DataFrame
    totals: pd.DataFrame
    lifts: dict[str, dict[str, float]]
    srm: dict[str, Any]
    mde: dict[str, float]  # relative MDE (alpha, power 0.8) at the simulated size, from the clustered SE
    log: pd.DataFrame
    notes: list[str] = field(default_factory=list)


@dataclass
class RampResult:
    """table: one row per step run; stopped_at: share of the failing step (None if all passed)."""

    table: pd.DataFrame
    stopped_at: float | None
    reason: str
    rolled_back: bool
    final_share: float
    results: list[ABResult]


def served_ndcg(labels: np.ndarray, mask: np.ndarray, relevance_threshold: float,
                k: int = 10) -> np.ndarray:
    """nDCG@k [Q] of rows already in served order (labels, mask: [Q, L])."""
    served = np.broadcast_to(-np.arange(labels.shape[1], dtype=np.float64), labels.shape)
    return ndcg_at_k(labels, served, mask, k, relevance_threshold)


def _check_inputs(control: np.ndarray, treatment: np.ndarray, mask: np.ndarray, share: float,
                  lat_c: np.ndarray, lat_t: np.ndarray, n_units: int, days: int, qpu: float) -> None:
    if n_units < 1 or days < 1 or not qpu > 0:
        raise ValueError(f"n_units, days, queries_per_unit_per_day: must be >= 1, >= 1, > 0, got "
                         f"{n_units}, {days}, {qpu}")
    if control.ndim != 2 or control.shape != treatment.shape or control.shape != mask.shape:
        raise ValueError(f"control_labels, treatment_labels, mask: need equal [Q, L] shapes, got "
                         f"{control.shape}, {treatment.shape}, {mask.shape}")
    if control.shape[0] == 0:
        raise ValueError("control_labels: need at least one query")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share: must be in [0, 1], got {share}")
    if lat_c.size == 0 or lat_t.size == 0:
        raise ValueError("latency_control_ms / latency_treatment_ms: need measured values")


def _simulate_day(day: int, treated: np.ndarray, rows: dict[str, np.ndarray], mask: np.ndarray,
                  qpu: float, click_model: ClickModel, threshold: float, k: int,
                  latency: dict[str, np.ndarray], rng: np.random.Generator) -> pd.DataFrame:
    """One day of traffic -> per-query log rows."""
    counts = rng.poisson(qpu, size=treated.size)
    unit = np.repeat(np.arange(treated.size), counts)
    query = rng.integers(0, mask.shape[0], size=unit.size)
    arm_t = treated[unit]
    labels = np.where(arm_t[:, None], rows["treatment"][query], rows["control"][query])
    m = mask[query]
    clicks = click_model.clicks(labels, m, rng)
    good = (labels[:, :k] >= threshold) & m[:, :k]
    ndcg = np.where(arm_t, rows["ndcg_t"][query], rows["ndcg_c"][query])
    lat = np.empty(unit.size)
    lat[arm_t] = rng.choice(latency["treatment"], size=int(arm_t.sum()))
    lat[~arm_t] = rng.choice(latency["control"], size=int((~arm_t).sum()))
    return pd.DataFrame({
        "day": day, "unit": unit, "arm": pd.Categorical.from_codes(arm_t.astype(np.int8), _ARMS),
        "query": query, "clicks": clicks.sum(axis=1), "clicked": clicks.any(axis=1),
        "success": (clicks[:, :k] & good).any(axis=1), "ndcg@10": ndcg, "latency_ms": lat,
    })


def _aggregate(log: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per-group units, queries, clicks, ctr, success_rate, ndcg@10, latency mean/p50/p95."""
    g = log.groupby(by, sort=True, observed=True)
    means = g[["clicked", "success", "ndcg@10", "latency_ms"]].mean()
    lat = g["latency_ms"]
    out = pd.DataFrame({"units": g["unit"].nunique(), "queries": g.size(), "clicks": g["clicks"].sum(),
                        "ctr": means["clicked"], "success_rate": means["success"],
                        "ndcg@10": means["ndcg@10"], "latency_mean_ms": means["latency_ms"],
                        "latency_p50_ms": lat.quantile(0.5), "latency_p95_ms": lat.quantile(0.95)})
    return out.reset_index()


def _compare(metric: str, control: pd.DataFrame, treatment: pd.DataFrame, alpha: float,
             alternative: str = "two-sided", seed: int = 0) -> dict[str, float]:
    """Treatment vs control on one metric of two per-query logs, clustered by unit and query
    (queries without a relevant candidate have NaN nDCG and are left out)."""
    col = _RATE_COLUMN.get(metric, metric)
    both = pd.concat([control, treatment], ignore_index=True)
    treated = np.r_[np.zeros(len(control), bool), np.ones(len(treatment), bool)]
    return clustered_diff(both[col].to_numpy(np.float64), treated, both["unit"].to_numpy(),
                          both["query"].to_numpy(), alpha=alpha, alternative=alternative, seed=seed)


def simulate_ab(control_labels: np.ndarray, treatment_labels: np.ndarray, mask: np.ndarray, *,
                n_units: int, days: int, queries_per_unit_per_day: float, share: float,
                relevance_threshold: float, latency_control_ms: np.ndarray,
                latency_treatment_ms: np.ndarray, salt: str = "cotrr",
                click_model: ClickModel = DEFAULT_CLICKS, k: int = 10, seed: int = 0,
                alpha: float = 0.05) -> ABResult:
    """Simulate `days` of traffic with `share` of units on the treatment lists.

    control_labels, treatment_labels: [Q, L] graded labels of each arm's served list in
    served order; mask: [Q, L] bool (same real candidates in both arms);
    latency_*_ms: measured per-query latencies, resampled with replacement.
    """
    control = np.asarray(control_labels, dtype=np.float64)
    treatment = np.asarray(treatment_labels, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    latency = {"control": np.asarray(latency_control_ms, dtype=np.float64).ravel(),
               "treatment": np.asarray(latency_treatment_ms, dtype=np.float64).ravel()}
    _check_inputs(control, treatment, mask, share, latency["control"], latency["treatment"],
                  n_units, days, queries_per_unit_per_day)
    rng = np.random.default_rng(seed)
    treated = buckets([f"u{i}" for i in range(n_units)], salt) < share
    rows = {"control": control, "treatment": treatment,
            "ndcg_c": served_ndcg(control, mask, relevance_threshold),
            "ndcg_t": served_ndcg(treatment, mask, relevance_threshold)}
    log = pd.concat([_simulate_day(d, treated, rows, mask, queries_per_unit_per_day, click_model,
                                   relevance_threshold, k, latency, rng) for d in range(days)],
                    ignore_index=True)
    arms = {arm: log[log["arm"] == arm] for arm in _ARMS}
    lifts: dict[str, dict[str, float]] = {}
    mde: dict[str, float] = {}
    notes: list[str] = []
    if min(len(arms["control"]), len(arms["treatment"])) >= 2:
        for metric in ("ctr", "success", "ndcg@10"):
            lifts[metric] = _compare(metric, arms["control"], arms["treatment"], alpha, seed=seed)
        for metric in _RATE_COLUMN:
            t = lifts[metric]
            mde[metric] = t["mde_abs"] / t["mean_a"] if t["mean_a"] and np.isfinite(t["mde_abs"]) else float("nan")
    else:
        notes.append(f"share={share}: one arm has < 2 queries, no lift tests and no MDE")
        mde = dict.fromkeys(_RATE_COLUMN, float("nan"))
    active = log.groupby("arm", observed=True)["unit"].nunique()
    srm = srm_check(int(active.get("control", 0)), int(active.get("treatment", 0)), share)
    return ABResult(share=share, daily=_aggregate(log, ["day", "arm"]),
                    totals=_aggregate(log, ["arm"]).set_index("arm"), lifts=lifts, srm=srm,
                    mde=mde, log=log, notes=notes)


def _step_row(i: int, res: ABResult, metric: str, control: pd.DataFrame | None, compared_with: str,
              alpha: float, latency_guardrail_ms: float | None) -> dict[str, Any]:
    """Guardrail verdict for one ramp step: one-sided 'treatment worse' test + p95 latency."""
    treatment = res.log[res.log["arm"] == "treatment"]
    p95 = float(treatment["latency_ms"].quantile(0.95)) if len(treatment) else float("nan")
    row: dict[str, Any] = {"step": i, "share": res.share, "queries_control": int(len(res.log) - len(treatment)),
                           "queries_treatment": int(len(treatment)), "metric": metric,
                           "compared_with": compared_with, "p95_treatment_ms": p95, "srm": res.srm["srm"]}
    reasons = []
    if control is not None and len(control) >= 2 and len(treatment) >= 2:
        t = _compare(metric, control, treatment, alpha, alternative="less", seed=i)
        row.update(control=t["mean_a"], treatment=t["mean_b"], lift_abs=t["diff"], ci_low=t["ci_low"],
                   ci_high=t["ci_high"], p_worse=t["p_value"])
        if t["p_value"] < alpha:
            reasons.append(f"{metric} significantly worse (one-sided p={t['p_value']:.2g} < {alpha})")
    else:
        row["compared_with"] = "none (no control traffic; guardrail test skipped)"
    if latency_guardrail_ms is not None and p95 > latency_guardrail_ms:
        reasons.append(f"treatment p95 latency {p95:.1f} ms > guardrail {latency_guardrail_ms} ms")
    row["passed"] = not reasons
    row["reason"] = "; ".join(reasons) or "ok"
    return row


def simulate_ramp(control_labels: np.ndarray, treatment_labels: np.ndarray, mask: np.ndarray, *,
                  steps: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 1.0), days_per_step: int = 1,
                  guardrail_metric: GuardrailMetric = "success", guardrail_alpha: float = 0.05,
                  latency_guardrail_ms: float | None = None, seed: int = 0,
                  **ab_kwargs: Any) -> RampResult:
    """Run `simulate_ab` at each share in `steps` (ab_kwargs: everything simulate_ab needs
    except share/days/seed); stop and roll back at the first step whose treatment is
    significantly worse on `guardrail_metric` (one-sided) or whose p95 latency exceeds
    `latency_guardrail_ms`. A step with no control (share 1.0) is compared with the
    previous step's control (not concurrent traffic), or skipped if there is none.
    """
    if guardrail_metric not in ("ctr", "success", "ndcg@10"):
        raise ValueError(f"guardrail_metric: {guardrail_metric!r} is not one of ['ctr', 'success', 'ndcg@10']")
    if list(steps) != sorted(steps) or not all(0 < s <= 1 for s in steps):
        raise ValueError(f"steps: must be increasing shares in (0, 1], got {steps}")
    seeds = np.random.SeedSequence(seed).generate_state(len(steps))
    results: list[ABResult] = []
    rows: list[dict[str, Any]] = []
    last_control: pd.DataFrame | None = None
    for i, share in enumerate(steps):
        res = simulate_ab(control_labels, treatment_labels, mask, share=share, days=days_per_step,
                          seed=int(seeds[i]), **ab_kwargs)
        results.append(res)
        control = res.log[res.log["arm"] == "control"]
        compared_with = "concurrent control"
        if len(control) < 2:
            control, compared_with = last_control, "previous step's control (not concurrent)"
        else:
            last_control = control
        rows.append(_step_row(i, res, guardrail_metric, control, compared_with,
                              guardrail_alpha, latency_guardrail_ms))
        if not rows[-1]["passed"]:
            return RampResult(table=pd.DataFrame(rows), stopped_at=share,
                              reason=f"step {i} (share {share}): {rows[-1]['reason']}; rolled back to control",
                              rolled_back=True, final_share=0.0, results=results)
    return RampResult(table=pd.DataFrame(rows), stopped_at=None, reason="all steps passed",
                      rolled_back=False, final_share=float(steps[-1]), results=results)
