"""Simulation: click models, A/B statistics, A/B and ramp simulation, shadow, top-M."""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cotrr_core.evaluation.metrics import paired_bootstrap_ci
from cotrr_core.serving.policy import buckets
from cotrr_core.simulate import (
    ClickModel,
    attractiveness,
    cascade_clicks,
    minimum_detectable_effect,
    pbm_clicks,
    recommend_m,
    required_sample_size,
    shadow_analysis,
    simulate_ab,
    simulate_ramp,
    srm_check,
    topm_tradeoff,
    two_proportion_test,
    welch_ttest_mean,
)
from cotrr_core.simulate.ab import served_ndcg
from cotrr_core.simulate.stats import clustered_diff

THRESHOLD = 0.8


def _lists(seed: int = 0, q: int = 50, length: int = 8, p_rel: float = 0.3):
    """Compliance-score labels [Q, L] with trailing padding, plus the best-first reordering."""
    rng = np.random.default_rng(seed)
    n = rng.integers(2, length + 1, size=q)
    mask = np.arange(length) < n[:, None]
    labels = np.where(mask & (rng.random((q, length)) < p_rel), rng.uniform(0.8, 1.0, (q, length)),
                      rng.uniform(0.0, 0.5, (q, length))) * mask
    best = np.where(mask, -np.sort(-np.where(mask, labels, -1.0), axis=1), 0.0)
    return labels, best, mask


def _ab_kwargs(**over):
    kw = dict(n_units=400, days=1, queries_per_unit_per_day=2.0, share=0.5, relevance_threshold=THRESHOLD,
              latency_control_ms=np.array([8.0, 10.0, 12.0]), latency_treatment_ms=np.array([9.0, 11.0, 13.0]))
    kw.update(over)
    return kw


# --- click models -------------------------------------------------------------------------

def test_attractiveness_mapping():
    assert attractiveness(np.array([0.0, 1.0]), gmax=1.0, eps=0.05).tolist() == pytest.approx([0.05, 0.95])
    graded = attractiveness(np.array([0, 1, 2, 3, 4]), gmax=4, eps=0.0)
    assert graded == pytest.approx((2.0 ** np.arange(5) - 1) / 15)


def test_cascade_rank1_click_rate_matches_attractiveness():
    rng = np.random.default_rng(0)
    n = 200_000
    probs = np.tile([0.3, 0.6, 0.2], (n, 1))
    clicks = cascade_clicks(probs, np.ones_like(probs, dtype=bool), rng)
    se = math.sqrt(0.3 * 0.7 / n)
    assert abs(clicks[:, 0].mean() - 0.3) < 4 * se
    assert abs(clicks[:, 1].mean() - 0.7 * 0.6) < 0.01  # examined only if rank 1 not clicked
    assert clicks.sum(axis=1).max() == 1  # stops after the first click


def test_cascade_ctr_is_order_invariant_without_abandonment():
    labels, best, mask = _lists()
    assert ClickModel().ctr(best, mask) == pytest.approx(ClickModel().ctr(labels, mask))
    impatient = ClickModel(patience=0.5)
    assert impatient.ctr(best, mask).mean() > impatient.ctr(labels, mask).mean()


def test_cascade_patience_stops_scanning():
    probs = np.tile([0.0, 1.0], (100_000, 1))
    clicks = cascade_clicks(probs, np.ones_like(probs, dtype=bool), np.random.default_rng(0), patience=0.3)
    assert abs(clicks[:, 1].mean() - 0.3) < 0.01


def test_cascade_respects_mask():
    clicks = cascade_clicks(np.full((1000, 3), 0.9), np.array([[False, True, True]] * 1000),
                            np.random.default_rng(0))
    assert not clicks[:, 0].any()


def test_pbm_examination_decay():
    rng = np.random.default_rng(1)
    n = 200_000
    probs = np.full((n, 4), 0.8)
    clicks = pbm_clicks(probs, np.ones_like(probs, dtype=bool), rng, eta=1.0)
    assert clicks.mean(axis=0) == pytest.approx(0.8 / np.arange(1, 5), abs=0.01)


@pytest.mark.parametrize("model", [ClickModel("cascade"), ClickModel("cascade", patience=0.7),
                                   ClickModel("pbm", eta=0.5)])
def test_click_model_exact_ctr_matches_simulation(model):
    labels, _, mask = _lists(q=200)
    rows = np.random.default_rng(2).integers(0, 200, size=100_000)
    clicked = model.clicks(labels[rows], mask[rows], np.random.default_rng(3)).any(axis=1)
    assert abs(clicked.mean() - model.ctr(labels, mask).mean()) < 0.01


def test_click_model_validation():
    with pytest.raises(ValueError, match="ClickModel.name"):
        ClickModel(name="dbn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ClickModel.patience"):
        ClickModel(patience=0.0)
    assert ClickModel().params() == {"name": "cascade", "gmax": 1.0, "eps": 0.05, "eta": 1.0, "depth": 10,
                                     "patience": 1.0}


# --- statistics ---------------------------------------------------------------------------

def test_two_proportion_test_hand_values():
    r = two_proportion_test(100, 1000, 120, 1000)
    assert r["lift_abs"] == pytest.approx(0.02)
    assert r["lift_rel"] == pytest.approx(0.2)
    se = math.sqrt(0.1 * 0.9 / 1000 + 0.12 * 0.88 / 1000)
    assert r["ci_low"] == pytest.approx(0.02 - 1.959964 * se, rel=1e-5)
    pooled = 0.11
    z = 0.02 / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert r["p_value"] == pytest.approx(2 * (1 - NormalDist().cdf(z)), rel=1e-6)


def test_two_proportion_ci_coverage():
    rng = np.random.default_rng(0)
    p_a, p_b, n = 0.10, 0.12, 4000
    true_abs, true_rel = p_b - p_a, p_b / p_a - 1
    cover_abs = cover_rel = 0
    runs = 1000
    for x_a, x_b in zip(rng.binomial(n, p_a, runs), rng.binomial(n, p_b, runs)):
        r = two_proportion_test(int(x_a), n, int(x_b), n)
        cover_abs += r["ci_low"] <= true_abs <= r["ci_high"]
        cover_rel += r["rel_ci_low"] <= true_rel <= r["rel_ci_high"]
    assert 0.90 <= cover_abs / runs <= 0.99
    assert 0.90 <= cover_rel / runs <= 0.99


def test_welch_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 60), rng.normal(0.5, 2, 90)
    r = welch_ttest_mean(a, b)
    assert r["diff"] == pytest.approx(b.mean() - a.mean())
    assert r["p_value"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval()
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high))
    worse = welch_ttest_mean(b, a, alternative="less")["p_value"]
    assert worse == pytest.approx(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)


def test_srm_check():
    assert srm_check(48_000, 52_000, 0.5)["srm"]
    assert not srm_check(50_050, 49_950, 0.5)["srm"]
    assert not srm_check(90_100, 9_900, 0.1)["srm"]
    assert srm_check(10, 1, 0.0)["srm"] and not srm_check(10, 0, 0.0)["srm"]


def test_required_sample_size_textbook():
    # Independent closed form (equal split): n = (z_a sqrt(2 pbar qbar) + z_b sqrt(p1 q1 + p2 q2))^2 / d^2
    p1, p2 = 0.10, 0.11
    z_a, z_b = NormalDist().inv_cdf(0.975), NormalDist().inv_cdf(0.8)
    pbar = (p1 + p2) / 2
    n = (z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p2 - p1) ** 2
    r = required_sample_size(0.10, 0.10)
    assert r["n_control"] == r["n_treatment"] == math.ceil(n)
    assert 14_700 <= r["n_control"] <= 14_800


def test_unequal_split_needs_more_units():
    assert required_sample_size(0.1, 0.1, share=0.1)["n_total"] > required_sample_size(0.1, 0.1)["n_total"]


def test_mde_inverts_sample_size():
    mde = minimum_detectable_effect(0.10, 29_502)
    assert mde == pytest.approx(0.10, abs=1e-4)
    n = required_sample_size(0.05, 0.2, share=0.25)["n_total"]
    assert minimum_detectable_effect(0.05, n, share=0.25) == pytest.approx(0.2, abs=1e-3)


# --- A/B simulation -----------------------------------------------------------------------

@pytest.mark.parametrize("q", [50, 11])  # 11: the small demo's test split
def test_ab_false_positive_rate_identical_arms(q):
    labels, _, mask = _lists(q=q)
    model = ClickModel("cascade", patience=0.6)
    p = np.array([[simulate_ab(labels, labels, mask, seed=s, click_model=model, **_ab_kwargs()).lifts[k]["p_value"]
                   for k in ("ctr", "success")] for s in range(200)])
    fp = (p < 0.05).mean(axis=0)
    assert ((0.01 <= fp) & (fp <= 0.10)).all(), fp


def _population_lift(model: ClickModel) -> dict[str, float]:
    """Lifts over the query POPULATION (_lists' generator), from 200k queries: what a CI must cover."""
    labels, best, mask = _lists(seed=10**6, q=200_000)
    nd_a, nd_b = (served_ndcg(x, mask, THRESHOLD) for x in (labels, best))
    ok = np.isfinite(nd_a)
    return {"ctr": float((model.ctr(best, mask) - model.ctr(labels, mask)).mean()),
            "ndcg@10": float((nd_b[ok] - nd_a[ok]).mean())}


def test_ab_ci_covers_the_population_lift():
    """Each replicate draws a fresh set of test queries: the CI must cover the population lift,
    not only the lift on the queries it happened to see (users never enlarge the query sample)."""
    model = ClickModel("cascade", patience=0.6)
    truth = _population_lift(model)
    assert truth["ctr"] > 0.02 and truth["ndcg@10"] > 0.05
    covered = []
    for s in range(200):
        labels, best, mask = _lists(seed=s, q=50)
        lifts = simulate_ab(labels, best, mask, seed=s, click_model=model, **_ab_kwargs()).lifts
        covered.append([lifts[k]["ci_low"] <= truth[k] <= lifts[k]["ci_high"] for k in ("ctr", "ndcg@10")])
    rate = np.mean(covered, axis=0)
    assert ((0.90 <= rate) & (rate <= 0.99)).all(), rate


def test_ab_ndcg_matches_query_level_paired_bootstrap():
    """With every query seen in both arms the nDCG lift is the per-query paired mean, and its CI is
    about as wide as the paired query bootstrap the Overview shows (not a thousand times narrower)."""
    labels, best, mask = _lists(q=40)
    res = simulate_ab(labels, best, mask, seed=0, **_ab_kwargs(n_units=3000, days=3))
    t = res.lifts["ndcg@10"]
    nd_a, nd_b = served_ndcg(labels, mask, THRESHOLD), served_ndcg(best, mask, THRESHOLD)
    ok = np.isfinite(nd_a)
    assert t["queries"] == ok.sum() and t["diff"] == pytest.approx(float((nd_b - nd_a)[ok].mean()))
    ref = paired_bootstrap_ci(nd_b[ok], nd_a[ok], n_boot=4000, seed=0)
    ratio = (t["ci_high"] - t["ci_low"]) / (ref["hi"] - ref["lo"])
    assert 0.7 <= ratio <= 1.5, ratio


def test_clustered_diff_counts_users_not_queries():
    """Heterogeneous users issuing many queries: a per-query test is overconfident, the clustered one is not."""
    rng = np.random.default_rng(0)
    naive, clustered = [], []
    for s in range(150):
        n_users, per_user = 200, 20
        p_user = rng.beta(0.5, 0.5, n_users)  # identical arms, very different users
        unit = np.repeat(np.arange(n_users), per_user)
        clicked = rng.random(unit.size) < p_user[unit]
        treated = (buckets([f"u{i}" for i in range(n_users)], f"s{s}") < 0.5)[unit]
        query = rng.integers(0, 30, unit.size)
        clustered.append(clustered_diff(clicked, treated, unit, query, seed=s)["p_value"] < 0.05)
        naive.append(two_proportion_test(int(clicked[~treated].sum()), int((~treated).sum()),
                                         int(clicked[treated].sum()), int(treated.sum()))["p_value"] < 0.05)
    assert np.mean(naive) > 0.3  # the wrong unit of analysis: most "significant" lifts are noise
    assert np.mean(clustered) <= 0.10


def test_ab_assignment_uses_policy_buckets():
    labels, best, mask = _lists()
    res = simulate_ab(labels, best, mask, seed=0, salt="exp", **_ab_kwargs(share=0.3))
    treated = buckets([f"u{i}" for i in res.log["unit"]], "exp") < 0.3
    assert np.array_equal(treated, res.log["arm"].to_numpy() == "treatment")


def test_ab_result_tables():
    labels, best, mask = _lists()
    res = simulate_ab(labels, best, mask, seed=1, **_ab_kwargs(days=3))
    assert set(res.daily["day"]) == {0, 1, 2} and set(res.daily["arm"]) == {"control", "treatment"}
    assert res.daily.groupby("arm")["queries"].sum().to_dict() == res.totals["queries"].to_dict()
    assert set(res.lifts) == {"ctr", "success", "ndcg@10"}  # latency is a measurement, not a lift
    assert res.totals.loc["treatment", "ndcg@10"] == pytest.approx(1.0)  # best-first lists
    assert res.totals.loc["control", "latency_mean_ms"] == pytest.approx(10.0, abs=0.5)
    assert not res.srm["srm"] and 0 < res.mde["ctr"] < 1


def test_ab_is_deterministic_given_seed():
    labels, best, mask = _lists()
    a = simulate_ab(labels, best, mask, seed=5, **_ab_kwargs())
    b = simulate_ab(labels, best, mask, seed=5, **_ab_kwargs())
    pd.testing.assert_frame_equal(a.log, b.log)


def test_ab_full_share_has_no_lift_tests():
    labels, best, mask = _lists()
    res = simulate_ab(labels, best, mask, seed=0, **_ab_kwargs(share=1.0))
    assert res.lifts == {} and res.notes and not res.srm["srm"]
    assert all(math.isnan(v) for v in res.mde.values())  # no "nan%": the page says why there is none


# --- ramp ---------------------------------------------------------------------------------

def _ramp_kwargs(**over):
    kw = _ab_kwargs(n_units=5000)
    del kw["share"], kw["days"]
    kw.update(over)
    return kw


def test_ramp_stops_when_treatment_clearly_worse():
    labels, best, mask = _lists()
    worst = np.where(mask, np.sort(np.where(mask, labels, 2.0), axis=1), 0.0)
    res = simulate_ramp(best, worst, mask, seed=0, **_ramp_kwargs())
    assert res.rolled_back and res.final_share == 0.0
    assert res.stopped_at is not None and res.stopped_at < 1.0
    assert "success significantly worse" in res.reason
    assert not res.table["passed"].iloc[-1] and res.table["passed"].iloc[:-1].all()


def test_ramp_latency_guardrail():
    labels, _, mask = _lists()
    res = simulate_ramp(labels, labels, mask, seed=0, latency_guardrail_ms=12.5,
                        guardrail_alpha=1e-9, **_ramp_kwargs())
    assert res.stopped_at == 0.01 and "p95 latency" in res.reason


def test_ramp_completes_and_compares_full_share_with_previous_control():
    labels, best, mask = _lists()
    res = simulate_ramp(labels, best, mask, seed=0, **_ramp_kwargs())
    assert not res.rolled_back and res.final_share == 1.0 and res.stopped_at is None
    assert list(res.table["share"]) == [0.01, 0.05, 0.25, 0.5, 1.0]
    assert res.table["compared_with"].iloc[-1].startswith("previous step's control")
    alone = simulate_ramp(labels, best, mask, steps=(1.0,), seed=0, **_ramp_kwargs())
    assert "skipped" in alone.table["compared_with"].iloc[0]


# --- shadow -------------------------------------------------------------------------------

def _orders(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    keys = np.where(mask, np.random.default_rng(seed).random(mask.shape), 2.0)
    return np.argsort(keys, axis=1)


def test_shadow_identical_orders():
    labels, _, mask = _lists()
    order = _orders(mask)
    res = shadow_analysis(order, order.copy(), labels, mask, relevance_threshold=THRESHOLD, n_boot=200)
    assert res.summary["top1_agreement"] == 1.0 and res.summary["overlap@k"] == 1.0
    assert res.per_query["kendall_tau"].to_numpy() == pytest.approx(1.0)
    for d in res.deltas.values():
        assert d["diff"] == 0.0 and d["lo"] == 0.0 and d["hi"] == 0.0


def test_shadow_reversed_and_partial_overlap():
    mask = np.ones((1, 6), dtype=bool)
    labels = np.array([[1.0, 0.0, 0.0, 0.0, 0.0, 0.9]])
    original = np.array([[0, 1, 2, 3, 4, 5]])
    res = shadow_analysis(original, original[:, ::-1], labels, mask, k=2, relevance_threshold=THRESHOLD,
                          n_boot=50)
    row = res.per_query.iloc[0]
    assert row["kendall_tau"] == pytest.approx(-1.0)
    assert row["top1_agree"] == 0.0 and row["overlap@k"] == 0.0
    partial = shadow_analysis(original, np.array([[0, 2, 1, 3, 4, 5]]), labels, mask, k=2,
                              relevance_threshold=THRESHOLD, n_boot=50)
    assert partial.per_query["overlap@k"].iloc[0] == 0.5


def test_shadow_wouldbe_gain_and_most_disagreeing():
    labels, best_labels, mask = _lists(q=100)
    original = _orders(mask)
    best = np.argsort(np.where(mask, -labels, 2.0), axis=1, kind="stable")
    res = shadow_analysis(original, best, labels, mask, relevance_threshold=THRESHOLD, seed=1, n_boot=300,
                          latency_original_ms=np.full(50, 10.0), latency_shadow_ms=np.full(50, 2.5))
    assert res.deltas["ndcg@10"]["diff"] > 0 and res.deltas["ndcg@10"]["lo"] > 0
    assert res.deltas["ndcg@10"]["wouldbe"] == pytest.approx(1.0)
    worst = res.most_disagreeing(5)
    assert len(worst) == 5 and worst["kendall_tau"].is_monotonic_increasing
    assert worst["kendall_tau"].iloc[0] == res.per_query["kendall_tau"].min()
    assert res.latency["extra_mean_ms"] == 2.5 and res.latency["compute_share"] == pytest.approx(0.2)


def test_shadow_rejects_non_permutation():
    mask = np.ones((1, 3), dtype=bool)
    with pytest.raises(ValueError, match="wouldbe_order"):
        shadow_analysis(np.array([[0, 1, 2]]), np.array([[0, 0, 2]]), np.ones((1, 3)), mask,
                        relevance_threshold=THRESHOLD)


# --- top-M --------------------------------------------------------------------------------

def _frontier():
    quality = {5: {"ndcg@10": 0.60, "c@1": 0.5}, 10: {"ndcg@10": 0.70, "c@1": 0.6},
               20: {"ndcg@10": 0.74, "c@1": 0.6}, 50: {"ndcg@10": 0.74, "c@1": 0.6}}
    latency = {m: np.linspace(m, 2 * m, 101) for m in quality}  # p95 = 1.95 M
    return topm_tradeoff(quality, latency, price_per_cpu_second=1e-5, cores_used=2.0)


def test_topm_table():
    df = _frontier()
    assert list(df.columns) == ["M", "ndcg@10", "c@1", "p50_ms", "p95_ms", "cost_per_1000_queries", "pareto"]
    assert df["p95_ms"].tolist() == pytest.approx([1.95 * m for m in (5, 10, 20, 50)])
    # mean latency 1.5 M ms -> seconds x cores x price x 1000
    assert df["cost_per_1000_queries"].iloc[0] == pytest.approx(7.5e-3 * 2 * 1e-5 * 1000)
    assert df["pareto"].tolist() == [True, True, True, False]


def test_recommend_m_respects_budget():
    df = _frontier()
    assert recommend_m(df, latency_budget_ms=25) == 10
    assert recommend_m(df, latency_budget_ms=1000) == 20  # tie with 50 -> smaller M
    assert recommend_m(df, latency_budget_ms=5) is None
    assert recommend_m(df, latency_budget_ms=16, percentile="p50") == 10  # p50 = 1.5 M
    chosen = recommend_m(df, latency_budget_ms=40)
    assert df.set_index("M").loc[chosen, "p95_ms"] <= 40
