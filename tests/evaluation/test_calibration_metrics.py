"""Tests for cotrr_core.evaluation.metrics.calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss
from sklearn.metrics import log_loss as sk_log_loss

from cotrr_core.evaluation.metrics import calibration as C


def _data(seed=0, n=2000, skew=1.0):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    y = (rng.random(n) < p**skew).astype(float)
    return p, y


def bf_ece(probs, y, n_bins, use_max=False):
    """Python loop over equal-width bins [i/n, (i+1)/n), last bin closed."""
    edges = [i / n_bins for i in range(n_bins + 1)]
    gaps, weights = [], []
    for i in range(n_bins):
        lo, hi = edges[i], edges[i + 1]
        last = i == n_bins - 1
        idx = [j for j, p in enumerate(probs) if lo <= p < hi or (last and p == hi)]
        if not idx:
            continue
        conf = sum(probs[j] for j in idx) / len(idx)
        freq = sum(y[j] for j in idx) / len(idx)
        gaps.append(abs(conf - freq))
        weights.append(len(idx) / len(probs))
    return max(gaps) if use_max else sum(g * w for g, w in zip(gaps, weights))


@pytest.mark.parametrize("n_bins", [1, 5, 10, 15])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_and_mce_match_brute_force(n_bins, seed):
    p, y = _data(seed, n=500, skew=1.7)
    assert C.ece(p, y, n_bins) == pytest.approx(bf_ece(p, y, n_bins), abs=1e-12)
    assert C.mce(p, y, n_bins) == pytest.approx(bf_ece(p, y, n_bins, use_max=True), abs=1e-12)


def test_ece_edge_values():
    # 0.0 goes to the first bin, 1.0 to the last (closed) bin, 0.5 to the upper bin.
    p = np.array([0.0, 0.5, 1.0, 1.0])
    y = np.array([0, 1, 1, 0])
    assert C.ece(p, y, n_bins=2) == pytest.approx(bf_ece(p, y, 2))
    curve = C.reliability_curve(p, y, n_bins=2)
    assert curve["count"].tolist() == [1, 3]


def test_calibrated_data_has_small_ece():
    p, y = _data(11, n=200_000)
    assert C.ece(p, y) < 0.01
    assert C.adaptive_ece(p, y) < 0.01


def test_constant_overconfident_predictor_known_value():
    p = np.full(1000, 0.9)
    y = np.tile([0.0, 1.0], 500)
    assert C.adaptive_ece(p, y) == pytest.approx(0.4)
    assert C.ece(p, y) == pytest.approx(0.4)
    assert C.mce(p, y, strategy="quantile") == pytest.approx(0.4)
    curve = C.reliability_curve(p, y, strategy="quantile")
    assert curve["count"].tolist() == [1000]  # ties share one bin


def test_adaptive_ece_bins_are_equal_mass():
    p, y = _data(4, n=1500)
    curve = C.reliability_curve(p, y, n_bins=15, strategy="quantile")
    assert len(curve["count"]) == 15
    assert np.abs(curve["count"] - 100).max() <= 1
    expected = np.sum(curve["count"] / 1500 * np.abs(curve["mean_confidence"] - curve["observed_frequency"]))
    assert C.adaptive_ece(p, y) == pytest.approx(expected)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_curve_matches_sklearn(strategy):
    p, y = _data(5, n=300, skew=2.0)
    p = p * 0.6  # leaves the upper uniform bins empty; sklearn drops them too
    curve = C.reliability_curve(p, y, n_bins=15, strategy=strategy)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=15, strategy=strategy)
    np.testing.assert_allclose(curve["observed_frequency"], prob_true, atol=1e-12)
    np.testing.assert_allclose(curve["mean_confidence"], prob_pred, atol=1e-12)
    assert curve["count"].sum() == 300
    assert np.all(curve["bin_lower"] <= curve["mean_confidence"])
    assert np.all(curve["mean_confidence"] <= curve["bin_upper"])
    assert set(curve) == {"bin_lower", "bin_upper", "mean_confidence", "observed_frequency",
                          "count", "ci_low", "ci_high"}


def test_wilson_interval_hand_and_scipy():
    lo, hi = C.wilson_interval(8, 10)
    # Closed form with z = 1.96: (0.4902, 0.9433) (textbook value).
    assert float(lo) == pytest.approx(0.4902, abs=1e-4)
    assert float(hi) == pytest.approx(0.9433, abs=1e-4)
    for k, n in [(0, 5), (5, 5), (3, 17), (50, 100)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = C.wilson_interval(k, n)
        assert float(lo) == pytest.approx(ci.low, abs=1e-10)
        assert float(hi) == pytest.approx(ci.high, abs=1e-10)


def test_reliability_curve_ci_brackets_frequency():
    p, y = _data(6, n=400)
    c = C.reliability_curve(p, y)
    assert np.all(c["ci_low"] <= c["observed_frequency"] + 1e-12)
    assert np.all(c["observed_frequency"] <= c["ci_high"] + 1e-12)
    ci = binomtest(int(round(c["observed_frequency"][0] * c["count"][0])), int(c["count"][0]))
    ci = ci.proportion_ci(method="wilson")
    assert c["ci_low"][0] == pytest.approx(ci.low) and c["ci_high"][0] == pytest.approx(ci.high)


def test_brier_and_log_loss_match_sklearn():
    p, y = _data(7, n=1000)
    p = np.clip(p, 0.01, 0.99)
    assert C.brier(p, y) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert C.log_loss(p, y) == pytest.approx(sk_log_loss(y, p), abs=1e-10)


def test_log_loss_clips():
    y = np.array([1.0, 0.0])
    assert C.log_loss(np.array([0.0, 1.0]), y, eps=1e-7) == pytest.approx(-np.log(1e-7))
    assert C.log_loss(np.array([1.0, 0.0]), y, eps=0.0) == 0.0


def test_risk_coverage_hand_example():
    errors = np.array([1.0, 0.0, 1.0, 0.0])
    unc = np.array([0.9, 0.1, 0.8, 0.2])  # perfectly informative
    rc = C.risk_coverage(errors, unc)
    np.testing.assert_allclose(rc["coverage"], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(rc["risk"], [0.0, 0.0, 1 / 3, 0.5])
    assert rc["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 0.5) / 4)
    assert rc["aurc"] == rc["oracle_aurc"] < rc["random_aurc"] == 0.5
    worst = C.risk_coverage(errors, -unc)
    np.testing.assert_allclose(worst["risk"], [1.0, 1.0, 2 / 3, 0.5])
    assert worst["aurc"] > worst["random_aurc"]


def test_risk_coverage_random_order_expectation():
    rng = np.random.default_rng(8)
    errors = (rng.random(2000) < 0.3).astype(float)
    aurcs = [C.risk_coverage(errors, rng.random(2000))["aurc"] for _ in range(20)]
    assert np.mean(aurcs) == pytest.approx(errors.mean(), abs=0.02)


@pytest.mark.parametrize(
    "fn", [C.ece, C.adaptive_ece, C.mce, C.brier, C.log_loss, C.reliability_curve]
)
def test_validation(fn):
    ok_p, ok_y = np.array([0.2, 0.7]), np.array([0, 1])
    with pytest.raises(ValueError, match="same length"):
        fn(ok_p, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="finite"):
        fn(np.array([0.2, np.nan]), ok_y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(np.array([0.2, 1.1]), ok_y)
    with pytest.raises(ValueError, match="binary"):
        fn(ok_p, np.array([0, 2]))
    with pytest.raises(ValueError, match="empty"):
        fn(np.array([]), np.array([]))
    fn(ok_p, ok_y.astype(bool))  # bool labels are fine


def test_validation_other():
    with pytest.raises(ValueError, match="n_bins"):
        C.ece(np.array([0.5]), np.array([1]), n_bins=0)
    with pytest.raises(ValueError, match="strategy"):
        C.reliability_curve(np.array([0.5]), np.array([1]), strategy="kmeans")
    with pytest.raises(ValueError, match="same length"):
        C.risk_coverage(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        C.risk_coverage(np.zeros(2), np.array([0.0, np.inf]))
