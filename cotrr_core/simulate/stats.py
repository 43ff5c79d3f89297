"""A/B statistics: two-proportion and Welch tests, SRM, sample size and MDE.

(Paired bootstrap CIs live in cotrr_core.evaluation.metrics.paired_bootstrap_ci.)

Convention: arm "a" is control, arm "b" is treatment; lifts are b - a.
`alternative="less"` tests H1: treatment < control (used by ramp guardrails).
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import optimize, stats

__all__ = ["two_proportion_test", "welch_ttest_mean", "srm_check", "clustered_diff",
           "required_sample_size", "minimum_detectable_effect", "kendall_tau_ranks", "latency_percentiles"]

Alternative = Literal["two-sided", "less", "greater"]


def _p_from_z(z: float, alternative: Alternative) -> float:
    if alternative == "less":
        return float(stats.norm.cdf(z))
    if alternative == "greater":
        return float(stats.norm.sf(z))
    return float(2.0 * stats.norm.sf(abs(z)))


def _p_from_t(t: float, df: float, alternative: Alternative) -> float:
    if alternative == "less":
        return float(stats.t.cdf(t, df))
    if alternative == "greater":
        return float(stats.t.sf(t, df))
    return float(2.0 * stats.t.sf(abs(t), df))


def two_proportion_test(x_a: int, n_a: int, x_b: int, n_b: int, *, alpha: float = 0.05,
                        alternative: Alternative = "two-sided") -> dict[str, float]:
    """Compare rates x/n. Returns lift_abs, lift_rel, ci_low/ci_high (absolute, Wald),
    rel_ci_low/rel_ci_high (relative, delta method), p_value (pooled z-test), rate_a, rate_b.

    Delta method: Var(p_b / p_a) ~= (p_b/p_a)**2 * (v_a/p_a**2 + v_b/p_b**2), v = p(1-p)/n.
    """
    if n_a <= 0 or n_b <= 0:
        raise ValueError(f"two_proportion_test: n_a and n_b must be > 0, got {n_a}, {n_b}")
    p_a, p_b = x_a / n_a, x_b / n_b
    v_a, v_b = p_a * (1 - p_a) / n_a, p_b * (1 - p_b) / n_b
    z_crit = float(stats.norm.ppf(1 - alpha / 2))
    diff = p_b - p_a
    se = math.sqrt(v_a + v_b)
    pooled = (x_a + x_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se0 > 0:
        p_value = _p_from_z(diff / se0, alternative)
    else:  # both arms all-0 or all-1: no evidence of a difference
        p_value = 1.0
    if p_a > 0:
        ratio = p_b / p_a
        se_rel = ratio * math.sqrt(v_a / p_a**2 + (v_b / p_b**2 if p_b > 0 else 0.0))
        lift_rel, rel_lo, rel_hi = ratio - 1, ratio - 1 - z_crit * se_rel, ratio - 1 + z_crit * se_rel
    else:
        lift_rel = rel_lo = rel_hi = math.nan
    return {"rate_a": p_a, "rate_b": p_b, "lift_abs": diff, "lift_rel": lift_rel,
            "ci_low": diff - z_crit * se, "ci_high": diff + z_crit * se,
            "rel_ci_low": rel_lo, "rel_ci_high": rel_hi, "p_value": p_value}


def welch_ttest_mean(a: np.ndarray, b: np.ndarray, *, alpha: float = 0.05,
                     alternative: Alternative = "two-sided") -> dict[str, float]:
    """Welch t-test on per-query values a [n_a] (control), b [n_b] (treatment).

    Returns mean_a, mean_b, diff (b - a), diff_rel, ci_low/ci_high (Welch-Satterthwaite df), p_value.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"welch_ttest_mean: need >= 2 values per arm, got {a.size}, {b.size}")
    m_a, m_b = float(a.mean()), float(b.mean())
    v_a, v_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff, se = m_b - m_a, math.sqrt(v_a + v_b)
    if se > 0:
        df = (v_a + v_b) ** 2 / (v_a**2 / (a.size - 1) + v_b**2 / (b.size - 1))
        half = float(stats.t.ppf(1 - alpha / 2, df)) * se
        p_value = _p_from_t(diff / se, df, alternative)
    else:  # both arms constant: the difference is known exactly
        half = 0.0
        p_value = 1.0 if diff == 0 else _p_from_z(math.copysign(math.inf, diff), alternative)
    return {"mean_a": m_a, "mean_b": m_b, "diff": diff,
            "diff_rel": diff / m_a if m_a != 0 else math.nan,
            "ci_low": diff - half, "ci_high": diff + half, "p_value": p_value}


def srm_check(n_control: int, n_treatment: int, expected_share_treatment: float,
              threshold: float = 0.001) -> dict[str, float | bool]:
    """Sample-ratio mismatch: chi-square goodness of fit of the arm counts; srm if p < threshold."""
    s = float(expected_share_treatment)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"srm_check: expected_share_treatment must be in [0, 1], got {s}")
    n = n_control + n_treatment
    if n == 0:
        return {"chi2": 0.0, "p_value": 1.0, "srm": False}
    if s in (0.0, 1.0):  # one arm must be empty; any unit in it is a mismatch
        wrong = n_treatment if s == 0.0 else n_control
        return {"chi2": math.inf if wrong else 0.0, "p_value": 0.0 if wrong else 1.0, "srm": bool(wrong)}
    res = stats.chisquare([n_control, n_treatment], f_exp=[n * (1 - s), n * s])
    p = float(res.pvalue)
    return {"chi2": float(res.statistic), "p_value": p, "srm": p < threshold}


def _z(alpha: float, power: float) -> tuple[float, float]:
    return float(stats.norm.ppf(1 - alpha / 2)), float(stats.norm.ppf(power))


def _total_n(p1: float, p2: float, z_a: float, z_b: float, share: float) -> float:
    """Total N for a two-sided two-proportion z-test, treatment fraction `share`:
    N = (z_{1-a/2} sqrt(pbar qbar (1/s_c + 1/s_t)) + z_{power} sqrt(p1 q1/s_c + p2 q2/s_t))**2 / (p2 - p1)**2
    with pbar = s_c p1 + s_t p2 (for s = 0.5 this is the textbook per-arm formula times 2)."""
    s_t, s_c = share, 1.0 - share
    pbar = s_c * p1 + s_t * p2
    num = z_a * math.sqrt(pbar * (1 - pbar) * (1 / s_c + 1 / s_t)) \
        + z_b * math.sqrt(p1 * (1 - p1) / s_c + p2 * (1 - p2) / s_t)
    return num**2 / (p2 - p1) ** 2


def _check_design(baseline_rate: float, alpha: float, power: float, share: float) -> None:
    if not 0.0 < baseline_rate < 1.0:
        raise ValueError(f"baseline_rate: must be in (0, 1), got {baseline_rate}")
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"alpha/power: must be in (0, 1), got {alpha}, {power}")
    if not 0.0 < share < 1.0:
        raise ValueError(f"share: must be in (0, 1), got {share}")


def required_sample_size(baseline_rate: float, mde_rel: float, alpha: float = 0.05,
                         power: float = 0.8, share: float = 0.5) -> dict[str, int]:
    """Units needed to detect a relative lift `mde_rel` on `baseline_rate` (see `_total_n`).

    Returns n_control, n_treatment (each rounded up) and n_total.
    """
    _check_design(baseline_rate, alpha, power, share)
    p2 = baseline_rate * (1 + mde_rel)
    if mde_rel == 0 or not 0.0 < p2 < 1.0:
        raise ValueError(f"mde_rel: must be non-zero with baseline*(1+mde) in (0, 1), got {mde_rel}")
    n = _total_n(baseline_rate, p2, *_z(alpha, power), share)
    n_c, n_t = math.ceil(n * (1 - share) - 1e-9), math.ceil(n * share - 1e-9)
    return {"n_control": n_c, "n_treatment": n_t, "n_total": n_c + n_t}


def minimum_detectable_effect(baseline_rate: float, n_total: int, alpha: float = 0.05,
                              power: float = 0.8, share: float = 0.5) -> float:
    """Smallest positive relative lift detectable with n_total units: the inverse of
    `required_sample_size` (solved numerically). nan if even p2 -> 1 is not detectable."""
    _check_design(baseline_rate, alpha, power, share)
    p1, (z_a, z_b) = baseline_rate, _z(alpha, power)
    hi = (1.0 - 1e-9) / p1 - 1.0

    def gap(mde: float) -> float:
        return _total_n(p1, p1 * (1 + mde), z_a, z_b, share) - n_total

    if n_total <= 0 or gap(hi) > 0:
        return math.nan
    return float(optimize.brentq(gap, 1e-9, hi, xtol=1e-10))



def _cell_means(w: np.ndarray, x: np.ndarray, t: np.ndarray, q: np.ndarray, n_q: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted control and treatment means per query, [B, Q] each (NaN where a cell has no weight).
    w [B, n] event weights, x [n] values, t [n] treated, q [n] query index in [0, n_q)."""
    b = w.shape[0]
    idx = (np.arange(b)[:, None] * n_q + q[None, :]).ravel()
    out = []
    for arm in (~t, t):
        wa = (w * arm).ravel()
        num = np.bincount(idx, weights=wa * np.tile(x, b), minlength=b * n_q).reshape(b, n_q)
        den = np.bincount(idx, weights=wa, minlength=b * n_q).reshape(b, n_q)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(num / den)
    return out[0], out[1]


def _stratified(c: np.ndarray, t: np.ndarray, wq: np.ndarray | None = None) -> np.ndarray:
    """[B] query-weighted mean of (treatment - control) over queries seen in both arms."""
    d = t - c
    ok = np.isfinite(d)
    wq = np.ones_like(d) if wq is None else wq
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, d, 0.0).__mul__(wq).sum(1) / (wq * ok).sum(1)


def clustered_diff(values: np.ndarray, treated: np.ndarray, unit: np.ndarray, query: np.ndarray, *,
                   alpha: float = 0.05, power: float = 0.8, n_boot: int = 200, seed: int = 0,
                   alternative: Alternative = "two-sided") -> dict[str, float]:
    """Treatment minus control on per-event `values` [n], stratified by query, two-way clustered.

    Events are not independent: one unit (user, the randomisation unit) issues many, and the same
    few test queries recur in both arms (a sample of the query population that more users never
    enlarge). The estimate compares the arms within each query and averages over the queries seen
    in both arms (so the arms' different query mixes add no noise). Its variance is the two-way
    cluster-robust one (Cameron, Gelbach & Miller 2011): V_users + V_queries - V_user*query, each
    from a Poisson(1) bootstrap that reweights whole users, whole queries or user-query cells.
    treated [n] bool, unit [n] and query [n] ids. Returns mean_a (control), mean_b, diff, diff_rel,
    ci_low/ci_high (Student t, df = fewer clusters - 1), se, p_value, mde_abs (alpha, power), units,
    queries (compared in both arms), df.
    """
    x = np.asarray(values, dtype=np.float64)
    t = np.asarray(treated, dtype=bool)
    keep = np.isfinite(x)
    x, t = x[keep], t[keep]
    u = np.unique(np.asarray(unit)[keep], return_inverse=True)[1]
    q = np.unique(np.asarray(query)[keep], return_inverse=True)[1]
    out = dict.fromkeys(("mean_a", "mean_b", "diff", "diff_rel", "ci_low", "ci_high", "se", "p_value",
                         "mde_abs"), math.nan)
    out["units"] = float(len(np.unique(u)))
    if t.sum() < 2 or (~t).sum() < 2:
        return {**out, "queries": 0.0}
    n_q = int(q.max()) + 1
    c0, t0 = _cell_means(np.ones((1, x.size)), x, t, q, n_q)
    both = np.isfinite(c0[0]) & np.isfinite(t0[0])
    if not both.any():
        return {**out, "queries": 0.0}
    diff = float(_stratified(c0, t0)[0])
    m_a = float(c0[0, both].mean())
    cell = np.unique(u * n_q + q, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    var = {}
    for name, ids in (("units", u), ("queries", None), ("cells", cell)):
        reps = []
        for _ in range(max(1, n_boot // 100)):  # chunks of 100 replicates bound the [B, n] weights
            if ids is None:  # whole queries reweighted: the cell means stay, their average moves
                reps.append(_stratified(c0, t0, rng.poisson(1.0, (100, n_q)).astype(float)))
            else:
                w = rng.poisson(1.0, (100, int(ids.max()) + 1))[:, ids].astype(float)
                reps.append(_stratified(*_cell_means(w, x, t, q, n_q)))
        boot = np.concatenate(reps)
        var[name] = float(np.var(boot[np.isfinite(boot)], ddof=1))
    # a negative two-way sum (sampling noise) falls back to the larger one-way variance, as CGM advise
    v = var["units"] + var["queries"] - var["cells"]
    se = math.sqrt(max(v, var["units"], var["queries"]) if v <= 0 else v)
    tiny = 1e-12 * (1.0 + abs(m_a))  # e.g. nDCG of identical arms: equal per query, up to rounding
    diff, se = (0.0 if abs(diff) < tiny else diff), (0.0 if se < tiny else se)
    # few clusters: Student t with (smaller cluster count - 1) df, as CGM advise
    df = max(1.0, min(out["units"], float(both.sum())) - 1.0)
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    p_value = _p_from_t(diff / se, df, alternative) if se > 0 else (1.0 if diff == 0 else 0.0)
    return {"mean_a": m_a, "mean_b": m_a + diff, "diff": diff, "diff_rel": diff / m_a if m_a != 0 else math.nan,
            "ci_low": diff - crit * se, "ci_high": diff + crit * se, "se": se, "p_value": p_value,
            "mde_abs": (crit + float(stats.norm.ppf(power))) * se, "units": out["units"],
            "queries": float(both.sum()), "df": df}


def kendall_tau_ranks(rank_a: np.ndarray, rank_b: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Kendall tau [Q] between two rankings of each query's first n[q] candidates (rank_a, rank_b [Q, L]: the
    rank of candidate i); 1.0 when n < 2 (only one order exists). Shadow analysis, simulated or observed."""
    tau = np.ones(len(n))
    for q in np.flatnonzero(np.asarray(n) >= 2):
        tau[q] = stats.kendalltau(rank_a[q, :n[q]], rank_b[q, :n[q]]).statistic
    return tau


def latency_percentiles(latency_ms: np.ndarray, quantiles: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """n, mean and the p<q> percentiles (ms) of a latency sample; NaN for an empty one."""
    x = np.asarray(latency_ms, dtype=np.float64)
    x = x[np.isfinite(x)]
    out = {"n": float(x.size), "mean": float(x.mean()) if x.size else math.nan}
    out.update({f"p{q:g}": float(np.percentile(x, q)) if x.size else math.nan for q in quantiles})
    return out
