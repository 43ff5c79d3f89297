"""Tests for cotrr_core.evaluation.metrics.ranking against sklearn and brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score

from cotrr_core.evaluation.metrics import ranking as R

POLICY = {"exclude": math.nan, "one": 1.0, "zero": 0.0}


# ---------------------------------------------------------------- brute force
def _ranked_labels(labels, scores, mask):
    """Labels of real candidates in ranked order; plain Python, stable tie-break."""
    items = [(float(scores[j]), j, float(labels[j])) for j in range(len(labels)) if mask[j]]
    # Sort by -score then original index: the documented stable tie-break.
    items.sort(key=lambda t: (-t[0], t[1]))
    return [t[2] for t in items]


def bf_metric(name, labels, scores, mask, k=None, thr=1.0, policy="exclude"):
    ranked = _ranked_labels(labels, scores, mask)
    rel = [1 if x >= thr else 0 for x in ranked]
    if sum(rel) == 0:
        return POLICY[policy]
    if name == "ndcg":
        dcg = sum((2.0**g - 1) / math.log2(i + 2) for i, g in enumerate(ranked[:k]))
        ideal = sorted(ranked, reverse=True)
        idcg = sum((2.0**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        return dcg / idcg if idcg > 0 else POLICY[policy]
    if name == "c":
        top = rel[:k]
        return sum(top) / len(top)
    if name == "p":
        return sum(rel[:k]) / k
    if name == "mrr":
        return 1.0 / (rel.index(1) + 1)
    if name == "map":
        hits, total = 0, 0.0
        for i, r in enumerate(rel):
            if r:
                hits += 1
                total += hits / (i + 1)
        return total / sum(rel)
    raise KeyError(name)


def bf_all(labels, scores, mask, name, k=None, thr=1.0, policy="exclude"):
    return np.array(
        [bf_metric(name, labels[q], scores[q], mask[q], k, thr, policy) for q in range(len(labels))]
    )


def _call(name, labels, scores, mask, k, thr, policy):
    kw = dict(relevance_threshold=thr, no_relevant=policy)
    if name == "ndcg":
        return R.ndcg_at_k(labels, scores, mask, k, **kw)
    if name == "c":
        return R.compliance_at_k(labels, scores, mask, k, **kw)
    if name == "p":
        return R.precision_at_k(labels, scores, mask, k, **kw)
    if name == "mrr":
        return R.reciprocal_rank(labels, scores, mask, **kw)
    return R.average_precision(labels, scores, mask, **kw)


def _random_batch(rng, Q, L, graded=True, ties=True, pad_garbage=True):
    labels = rng.integers(0, 5, size=(Q, L)).astype(float) if graded else rng.random((Q, L))
    scores = rng.integers(0, 4, size=(Q, L)).astype(float) if ties else rng.normal(size=(Q, L))
    lengths = rng.integers(0, L + 1, size=Q)
    mask = np.arange(L)[None, :] < lengths[:, None]
    # Scatter the padding too: positions need not be a suffix.
    mask = np.take_along_axis(mask, rng.permuted(np.tile(np.arange(L), (Q, 1)), axis=1), axis=1)
    if pad_garbage:
        labels[~mask] = 99.0
        scores[~mask] = np.where(rng.random((~mask).sum()) < 0.5, np.nan, 1e9)
    return labels, scores, mask


# ---------------------------------------------------------------- sklearn
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    Q=st.integers(1, 6),
    L=st.integers(2, 12),
    k=st.integers(1, 12),
)
def test_ndcg_matches_sklearn_per_query_with_masks(seed, Q, L, k):
    rng = np.random.default_rng(seed)
    labels, scores, mask = _random_batch(rng, Q, L, ties=False, pad_garbage=False)
    mask[:, :2] = True  # sklearn needs >= 2 documents per query
    labels[~mask], scores[~mask] = 99.0, np.nan
    ours = R.ndcg_at_k(labels, scores, mask, k, no_relevant="zero")
    for q in range(Q):
        m = mask[q]
        ref = ndcg_score(
            [2.0 ** labels[q, m] - 1], [scores[q, m]], k=k, ignore_ties=True
        )
        assert ours[q] == pytest.approx(ref, abs=1e-12)


def test_ndcg_matches_sklearn_equal_length_batch():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=(40, 10)).astype(float)
    labels[:3] = 0.0  # all-zero-gain queries: sklearn scores them 0
    scores = rng.normal(size=(40, 10))
    for k in (1, 3, 5, 10):
        ours = R.ndcg_at_k(labels, scores, None, k, no_relevant="zero")
        ref = ndcg_score(2.0**labels - 1, scores, k=k, ignore_ties=True)
        assert ours.mean() == pytest.approx(ref, abs=1e-12)
        assert np.all(ours[:3] == 0.0)
        assert np.all(R.ndcg_at_k(labels, scores, None, k, no_relevant="one")[:3] == 1.0)
        assert np.all(np.isnan(R.ndcg_at_k(labels, scores, None, k)[:3]))


# ---------------------------------------------------------------- brute force
@pytest.mark.parametrize("policy", ["exclude", "one", "zero"])
@pytest.mark.parametrize("graded,thr", [(True, 1.0), (True, 3.0), (False, 0.8)])
def test_all_metrics_match_brute_force_with_ties_and_padding(policy, graded, thr):
    rng = np.random.default_rng(hash((policy, graded, thr)) % 2**32)
    labels, scores, mask = _random_batch(rng, 200, 9, graded=graded, ties=True)
    for name in ("ndcg", "c", "p"):
        for k in (1, 2, 3, 5, 9, 20):
            got = _call(name, labels, scores, mask, k, thr, policy)
            exp = bf_all(labels, scores, mask, name, k, thr, policy)
            np.testing.assert_allclose(got, exp, rtol=0, atol=1e-12, equal_nan=True)
    for name in ("mrr", "map"):
        got = _call(name, labels, scores, mask, None, thr, policy)
        exp = bf_all(labels, scores, mask, name, None, thr, policy)
        np.testing.assert_allclose(got, exp, rtol=0, atol=1e-12, equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), Q=st.integers(1, 5), L=st.integers(1, 8))
def test_evaluate_matches_brute_force_property(seed, Q, L):
    rng = np.random.default_rng(seed)
    labels, scores, mask = _random_batch(rng, Q, L, ties=True)
    out = R.evaluate(labels, scores, mask, ks=(1, 3))
    for key, name, k in [("ndcg@1", "ndcg", 1), ("ndcg@3", "ndcg", 3), ("c@1", "c", 1),
                         ("c@3", "c", 3), ("p@3", "p", 3), ("mrr", "mrr", None), ("map", "map", None)]:
        np.testing.assert_allclose(out[key], bf_all(labels, scores, mask, name, k),
                                   atol=1e-12, equal_nan=True)


# ---------------------------------------------------------------- hand examples
def test_hand_checked_example():
    # Ranked by score: idx1 (0.9), idx2 (0.9, tie -> later index), idx3, idx0; idx4 is padding.
    labels = np.array([[3.0, 2.0, 0.0, 1.0, 4.0]])
    scores = np.array([[0.1, 0.9, 0.9, 0.2, 5.0]])
    mask = np.array([[True, True, True, True, False]])
    assert R.rank_order(scores, mask).tolist() == [[1, 2, 3, 0, 4]]
    # ranked labels [2, 0, 1, 3]; gains [3, 0, 1, 7]; ideal [7, 3, 1, 0]
    assert R.ndcg_at_k(labels, scores, mask, 1)[0] == pytest.approx(3 / 7)
    dcg3 = 3 + 0 + 1 / 2
    idcg3 = 7 + 3 / math.log2(3) + 1 / 2
    assert R.ndcg_at_k(labels, scores, mask, 3)[0] == pytest.approx(dcg3 / idcg3)
    assert R.compliance_at_k(labels, scores, mask, 1)[0] == 1.0
    assert R.compliance_at_k(labels, scores, mask, 2)[0] == 0.5
    assert R.compliance_at_k(labels, scores, mask, 10)[0] == 0.75  # 3 of n=4
    assert R.precision_at_k(labels, scores, mask, 10)[0] == 0.3  # 3 of k=10
    assert R.reciprocal_rank(labels, scores, mask, relevance_threshold=3.0)[0] == 0.25
    # relevant at ranks 1, 3, 4 -> (1/1 + 2/3 + 3/4) / 3
    assert R.average_precision(labels, scores, mask)[0] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_one_d_input_and_compliance_threshold():
    labels = np.array([0.9, 0.5, 0.85])
    scores = np.array([0.2, 0.8, 0.1])
    c1 = R.compliance_at_k(labels, scores, None, 1, relevance_threshold=0.8)
    assert c1.shape == (1,) and c1[0] == 0.0
    assert R.rank_order(scores).tolist() == [1, 0, 2]
    assert R.reciprocal_rank(labels, scores, None, relevance_threshold=0.8)[0] == 0.5


def test_padding_is_ignored_completely():
    rng = np.random.default_rng(3)
    labels, scores, mask = _random_batch(rng, 30, 6, pad_garbage=False)
    base = R.evaluate(labels, scores, mask)
    labels2, scores2 = labels.copy(), scores.copy()
    labels2[~mask] = 4.0
    scores2[~mask] = np.nan
    other = R.evaluate(labels2, scores2, mask)
    for key in base:
        np.testing.assert_array_equal(base[key], other[key])


def test_rank_order_padding_last_and_stable():
    scores = np.array([[1.0, np.nan, 1.0, 2.0, -np.inf]])
    mask = np.array([[True, False, True, True, False]])
    assert R.rank_order(scores, mask).tolist() == [[3, 0, 2, 1, 4]]


def test_empty_query_and_no_relevant_policy():
    labels = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 2.0]])
    scores = np.zeros((3, 2))
    mask = np.array([[True, True], [True, True], [False, False]])
    for policy, fill in POLICY.items():
        out = R.evaluate(labels, scores, mask, ks=(1,), no_relevant=policy)
        for key, vals in out.items():
            np.testing.assert_array_equal(vals[[0, 2]], [fill, fill], err_msg=key)
            assert vals[1] == 1.0
    s = R.summarize(R.evaluate(labels, scores, mask, ks=(1,)))
    assert s["queries"] == 1 and s["c@1"] == 1.0
    assert R.summarize(R.evaluate(labels, scores, mask, ks=(1,), no_relevant="zero"))["queries"] == 3


def test_evaluate_keys_and_validation():
    labels = np.ones((2, 3))
    out = R.evaluate(labels, np.zeros((2, 3)), np.ones((2, 3), bool))
    expected = {f"{m}@{k}" for m in ("ndcg", "c", "p") for k in (1, 3, 5, 10)} | {"mrr", "map"}
    assert set(out) == expected
    with pytest.raises(ValueError, match="shape"):
        R.evaluate(labels, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="no_relevant"):
        R.evaluate(labels, np.zeros((2, 3)), no_relevant="nan")
    with pytest.raises(ValueError, match="k must"):
        R.ndcg_at_k(labels, np.zeros((2, 3)), None, 0)
    with pytest.raises(ValueError, match="finite"):
        R.ndcg_at_k(labels, np.full((2, 3), np.nan), None, 1)


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_identical_inputs():
    a = np.random.default_rng(0).random(50)
    res = R.paired_bootstrap_ci(a, a.copy(), n_boot=500)
    assert res["diff"] == 0.0 and res["lo"] == 0.0 and res["hi"] == 0.0
    assert res["n"] == 50 and res["p_value"] == 1.0


def test_bootstrap_contains_true_difference_and_drops_nan():
    rng = np.random.default_rng(42)
    b = rng.random(400)
    a = b + 0.05 + rng.normal(0, 0.05, size=400)
    a[:10] = np.nan
    b[10:15] = np.nan
    res = R.paired_bootstrap_ci(a, b, n_boot=2000, seed=rng)
    assert res["n"] == 385
    assert res["lo"] < 0.05 < res["hi"]
    assert res["lo"] < res["diff"] < res["hi"]
    assert res["p_value"] < 0.01


def test_bootstrap_reproducible_and_null_not_significant():
    rng = np.random.default_rng(7)
    a, b = rng.random(200), rng.random(200)
    r1 = R.paired_bootstrap_ci(a, b, seed=5)
    assert r1 == R.paired_bootstrap_ci(a, b, seed=5)
    assert r1["lo"] < 0 < r1["hi"] or r1["p_value"] < 0.05
    with pytest.raises(ValueError):
        R.paired_bootstrap_ci(np.array([np.nan]), np.array([1.0]))
