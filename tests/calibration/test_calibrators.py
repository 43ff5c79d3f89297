"""Tests for cotrr_core.calibration."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit
from sklearn.base import clone
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from cotrr_core.calibration.calibrators import (
    IsotonicCalibrator,
    NotFittedError,
    PlattCalibrator,
    TemperatureCalibrator,
    calibrator_from_state,
    load_calibrator,
    make_calibrator,
    save_calibrator,
)

METHODS = ["temperature", "platt", "isotonic"]


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores = 3 * logit(p) + 2 of true probabilities p; labels ~ Bernoulli(p)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    return 3.0 * logit(p) + 2.0, rng.random(n) < p


def fit_quiet(cal, s, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return cal.fit(s, y)


def smoothed_lr_reference(s, y, *, fit_intercept: bool) -> LogisticRegression:
    """Unregularised LR on Platt's smoothed targets, expressed as weighted duplicates."""
    n_pos, n_neg = y.sum(), (~y).sum()
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    X = np.concatenate([s, s])[:, None]
    labels = np.r_[np.ones_like(s), np.zeros_like(s)]
    return LogisticRegression(C=1e10, tol=1e-12, max_iter=10_000, fit_intercept=fit_intercept).fit(
        X, labels, sample_weight=np.r_[t, 1 - t]
    )


# ----------------------------------------------------------------------------- quality
@pytest.mark.parametrize("method", METHODS)
def test_reduces_log_loss_vs_naive_sigmoid(method):
    s, y = miscalibrated(4000, seed=0)
    s_test, y_test = miscalibrated(4000, seed=1)
    cal = make_calibrator(method).fit(s, y)
    p = cal.predict(s_test)
    assert cal.fit_note_ == ""
    assert p.shape == s_test.shape and np.all((p >= 0) & (p <= 1))
    assert log_loss(p, y_test) < log_loss(expit(s_test), y_test) - 0.02


def test_platt_beats_temperature_when_scores_are_offset():
    s, y = miscalibrated(4000, seed=2)
    temp = TemperatureCalibrator().fit(s, y).predict(s)
    platt = PlattCalibrator().fit(s, y).predict(s)
    assert log_loss(platt, y) < log_loss(temp, y)


# ----------------------------------------------------------------------------- ranking
@pytest.mark.parametrize("method", METHODS)
def test_ranking_unchanged_on_random_scores(method):
    rng = np.random.default_rng(3)
    s = rng.normal(size=500)
    y = rng.random(500) < expit(2 * s)
    p = make_calibrator(method).fit(s, y).predict(s)
    np.testing.assert_array_equal(np.argsort(p, kind="stable"), np.argsort(s, kind="stable"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(METHODS),
    data=st.lists(st.tuples(st.integers(-30, 30), st.booleans()), min_size=1, max_size=60),
    probe=st.lists(st.integers(-400, 400), min_size=2, max_size=40, unique=True),
)
def test_strictly_increasing_map_property(method, data, probe):
    # Few distinct integer scores and random labels: many flat isotonic steps.
    s = np.array([d[0] for d in data], dtype=float) / 2
    y = np.array([d[1] for d in data])
    cal = fit_quiet(make_calibrator(method), s, y)
    grid = np.sort(np.r_[np.unique(s), np.array(probe, dtype=float) / 10])
    grid = np.unique(grid)
    p = cal.predict(grid)
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) >= 0)
    # Sigmoid maps can only tie where float64 rounds p to 1 (logit > ~36); isotonic never.
    resolvable = p[1:] < 1 - 1e-12 if method != "isotonic" else np.ones(p.size - 1, bool)
    assert np.all(np.diff(p)[resolvable] > 0)
    p_train = cal.predict(s)
    np.testing.assert_array_equal(np.argsort(p_train, kind="stable"), np.argsort(s, kind="stable"))


# ----------------------------------------------------------------------------- references
def test_platt_unsmoothed_matches_sklearn_logistic_regression():
    s, y = miscalibrated(3000, seed=4)
    cal = PlattCalibrator(smoothing=False).fit(s, y)
    ref = LogisticRegression(C=1e10, tol=1e-12, max_iter=10_000).fit(s[:, None], y)
    assert cal.a_ == pytest.approx(ref.coef_[0, 0], abs=1e-3)
    assert cal.b_ == pytest.approx(ref.intercept_[0], abs=1e-3)


def test_platt_smoothed_matches_weighted_logistic_regression():
    s, y = miscalibrated(500, seed=5)
    cal = PlattCalibrator().fit(s, y)
    ref = smoothed_lr_reference(s, y, fit_intercept=True)
    assert cal.a_ == pytest.approx(ref.coef_[0, 0], abs=1e-3)
    assert cal.b_ == pytest.approx(ref.intercept_[0], abs=1e-3)


@pytest.mark.parametrize("smoothing", [False, True])
def test_temperature_matches_logistic_regression_without_intercept(smoothing):
    rng = np.random.default_rng(6)
    s = rng.normal(scale=4.0, size=2000)
    y = rng.random(2000) < expit(s / 2.5)
    cal = TemperatureCalibrator(smoothing=smoothing).fit(s, y)
    if smoothing:
        ref = smoothed_lr_reference(s, y, fit_intercept=False)
    else:
        ref = LogisticRegression(C=1e10, tol=1e-12, max_iter=10_000, fit_intercept=False).fit(s[:, None], y)
    assert cal.temperature_ == pytest.approx(1 / ref.coef_[0, 0], rel=1e-3)


def test_centred_isotonic_has_one_knot_per_block_at_the_centre_of_its_scores():
    s, y = miscalibrated(2000, seed=7)
    cal = IsotonicCalibrator().fit(s, y)
    fitted = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(s, y).predict(s)
    blocks = pd.DataFrame({"s": s, "p": fitted}).groupby("p")["s"]  # isotonic values are distinct per block
    blocks = (blocks.min() + blocks.max()) / 2
    np.testing.assert_allclose(cal.X_thresholds_, blocks.to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(cal.y_thresholds_, blocks.index.to_numpy())
    np.testing.assert_allclose(cal.predict(cal.X_thresholds_), cal.y_thresholds_, atol=1e-5)
    mid = (cal.X_thresholds_[:-1] + cal.X_thresholds_[1:]) / 2  # linear between knots, not steps
    np.testing.assert_allclose(cal.predict(mid), (cal.y_thresholds_[:-1] + cal.y_thresholds_[1:]) / 2, atol=1e-5)


def test_isotonic_matches_sklearn_at_knots():
    s, y = miscalibrated(2000, seed=7)
    cal = IsotonicCalibrator(centered=False).fit(s, y)
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(s, y)
    np.testing.assert_array_equal(cal.X_thresholds_, ref.X_thresholds_)
    np.testing.assert_array_equal(cal.y_thresholds_, ref.y_thresholds_)
    np.testing.assert_allclose(cal.predict(ref.X_thresholds_), ref.predict(ref.X_thresholds_), atol=1e-5)
    outside = np.array([s.min() - 10, s.max() + 10])
    np.testing.assert_allclose(cal.predict(outside), ref.predict(outside), atol=1e-5)


# ----------------------------------------------------------------------------- JSON state
@pytest.mark.parametrize("method", METHODS)
def test_json_round_trip_is_bit_for_bit(method, tmp_path):
    s, y = miscalibrated(800, seed=8)
    cal = make_calibrator(method).fit(s, y)
    path = tmp_path / "cal.json"
    save_calibrator(cal, path)
    assert [p.name for p in tmp_path.iterdir()] == ["cal.json"]  # no temp file left behind
    raw = path.read_bytes()
    state = json.loads(raw.decode("utf-8"))
    assert state["method"] == method and b"pickle" not in raw and not raw.startswith(b"\x80")
    loaded = load_calibrator(path)
    assert type(loaded) is type(cal) and loaded.get_params() == cal.get_params()
    probe = np.r_[s, np.random.default_rng(9).normal(scale=10, size=1000)]
    assert np.array_equal(loaded.predict(probe), cal.predict(probe))
    assert calibrator_from_state(json.loads(json.dumps(cal.to_state()))).to_state() == cal.to_state()


def test_bad_state_raises_value_error():
    with pytest.raises(ValueError, match="not a calibrator state"):
        calibrator_from_state({"method": "platt"})
    state = PlattCalibrator().fit([0.0, 1.0, 2.0, 3.0], [0, 1, 0, 1]).to_state()
    del state["learned"]["b_"]
    with pytest.raises(ValueError, match="malformed"):
        calibrator_from_state(state)


# ----------------------------------------------------------------------------- degenerate inputs
DEGENERATE = {
    "all_positive": ([0.1, -0.5, 2.0, 3.0, -1.0], [1, 1, 1, 1, 1]),
    "all_negative": ([0.1, -0.5, 2.0, 3.0, -1.0], [0, 0, 0, 0, 0]),
    "constant_scores": ([1.5] * 6, [0, 1, 0, 1, 1, 0]),
    "separated": ([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], [0, 0, 0, 1, 1, 1]),
    "one_sample": ([0.7], [1]),
    "two_samples": ([0.2, 0.9], [False, True]),
}


@pytest.mark.parametrize("case", DEGENERATE)
@pytest.mark.parametrize("method", METHODS)
def test_degenerate_inputs_fit_and_explain(method, case):
    s, y = DEGENERATE[case]
    with pytest.warns(RuntimeWarning):
        cal = make_calibrator(method).fit(s, y)
    assert cal.fit_note_
    probe = np.linspace(-10, 10, 201)
    p = cal.predict(probe)
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) >= 0)
    if method == "isotonic":
        assert np.all(np.diff(p) > 0) and np.all((p > 0) & (p < 1))


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_one_class_predicts_clipped_base_rate(method):
    cal = fit_quiet(make_calibrator(method), *DEGENERATE["all_positive"])
    p = cal.predict([-1.0, 0.0, 3.0])
    assert np.all((p > 0.8) & (p < 1))
    cal = fit_quiet(make_calibrator(method), *DEGENERATE["all_negative"])
    p = cal.predict([-1.0, 0.0, 3.0])
    assert np.all((p > 0) & (p < 0.2))


def test_separated_classes_keep_parameters_bounded():
    s, y = DEGENERATE["separated"]
    for cal in (PlattCalibrator(smoothing=False), TemperatureCalibrator(smoothing=False)):
        fit_quiet(cal, s, y)
        assert "clamped" in cal.fit_note_ or "no finite minimum" in cal.fit_note_
        assert np.all(np.isfinite(list(cal.to_state()["learned"].values())))


# ----------------------------------------------------------------------------- contract & errors
@pytest.mark.parametrize("method", METHODS)
def test_predict_before_fit_raises(method):
    cal = make_calibrator(method)
    with pytest.raises(NotFittedError):
        cal.predict([0.0, 1.0])
    with pytest.raises(NotFittedError):
        cal.to_state()


@pytest.mark.parametrize(
    ("scores", "y", "match"),
    [
        ([], [], "empty"),
        ([0.0, np.nan], [0, 1], "NaN or inf"),
        ([0.0, np.inf], [0, 1], "NaN or inf"),
        ([0.0, 1.0, 2.0], [0, 1], "same length"),
        ([0.0, 1.0], [0, 2], r"\{0, 1\}"),
        ([[0.0, 1.0]], [0], "1-D"),
        (["a", "b"], [0, 1], "numeric"),
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_bad_inputs_raise_value_error(method, scores, y, match):
    with pytest.raises(ValueError, match=match):
        make_calibrator(method).fit(scores, y)


def test_predict_rejects_nan_and_accepts_empty():
    cal = PlattCalibrator().fit([0.0, 1.0, 2.0, 3.0], [0, 1, 0, 1])
    with pytest.raises(ValueError, match="NaN"):
        cal.predict([np.nan])
    assert cal.predict([]).shape == (0,)


def test_unknown_method_names_valid_ones():
    with pytest.raises(ValueError, match="isotonic, platt, temperature"):
        make_calibrator("beta")


def test_sklearn_contract_lists_and_bools():
    cal = make_calibrator("platt", smoothing=False)
    assert cal.get_params() == {"smoothing": False} and not hasattr(cal, "a_")
    assert clone(cal).get_params() == cal.get_params()
    s = [0.0, 1.0, 2.0, 3.0, 0.5, 2.5]
    assert cal.fit(s, [False, False, True, True, True, False]) is cal
    p = cal.predict(s)
    assert p.dtype == np.float64 and p.shape == (6,)
    ref = PlattCalibrator(smoothing=False).fit(np.array(s), [0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(p, ref.predict(s))
