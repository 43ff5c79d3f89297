"""Traffic policy: hashing, bucketing and mode semantics."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from cotrr_core.serving.policy import Policy, bucket, buckets, decide, fmix32, fnv1a_32

IDS = [f"u{i}" for i in range(100_000)]


def _reference_fnv1a(data: bytes) -> int:
    """Textbook FNV-1a 32-bit, written independently of the module."""
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) % 2**32
    return h


@pytest.mark.parametrize("text, expected", [("", 0x811C9DC5), ("a", 0xE40C292C), ("foobar", 0xBF9CF968)])
def test_fnv1a_known_vectors(text, expected):
    assert fnv1a_32(text.encode()) == expected


def test_fmix32_known_values():
    # MurmurHash3 fmix32 is a bijection with fmix32(0) == 0; 1 -> 0x514e28b7.
    assert fmix32(0) == 0
    assert fmix32(1) == 0x514E28B7


def test_bucket_is_finalised_fnv1a_of_salted_key():
    key = b"exp-7:user-42"
    assert bucket("user-42", "exp-7") == fmix32(_reference_fnv1a(key)) / 2**32
    assert 0.0 <= bucket("user-42", "exp-7") < 1.0


def test_bucket_hashes_utf8_bytes():
    assert bucket("café", "s") == fmix32(_reference_fnv1a("s:café".encode())) / 2**32


def test_vectorised_buckets_match_scalar():
    ids = ["", "a", "café", "ünïcødé-ÿ", "x" * 40] + IDS[:2000]
    assert buckets(ids, "cotrr").tolist() == [bucket(u, "cotrr") for u in ids]
    assert buckets([], "cotrr").shape == (0,)


def test_deterministic():
    assert bucket("u1", "cotrr") == bucket("u1", "cotrr")
    assert np.array_equal(buckets(IDS[:100], "s"), buckets(IDS[:100], "s"))
    assert decide(Policy("rollout", 0.3), "u9") == decide(Policy("rollout", 0.3), "u9")


def test_uniform_over_sequential_ids():
    counts = np.histogram(buckets(IDS, "cotrr"), bins=10, range=(0, 1))[0]
    assert stats.chisquare(counts).pvalue > 0.001


def test_raw_fnv1a_would_not_be_uniform():
    """Why bucket() applies fmix32: raw FNV-1a top bits are skewed on sequential ids."""
    raw = np.array([_reference_fnv1a(f"cotrr:{u}".encode()) for u in IDS[:50_000]]) / 2**32
    counts = np.histogram(raw, bins=10, range=(0, 1))[0]
    assert stats.chisquare(counts).pvalue < 0.001


@settings(max_examples=200, deadline=None)
@given(unit=st.text(max_size=20), salt=st.text(min_size=1, max_size=10),
       s1=st.floats(0, 1), s2=st.floats(0, 1))
def test_raising_share_never_moves_unit_back_to_control(unit, salt, s1, s2):
    lo, hi = sorted((s1, s2))
    if decide(Policy("rollout", lo, salt), unit).serve_treatment:
        assert decide(Policy("rollout", hi, salt), unit).serve_treatment


def test_salt_reshuffles():
    a, b = buckets(IDS[:20_000], "salt-a"), buckets(IDS[:20_000], "salt-b")
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.03
    differ = ((a < 0.5) != (b < 0.5)).mean()
    assert 0.45 < differ < 0.55


def test_rollout_share_matches_fraction_of_units():
    share = 0.25
    treated = np.mean([decide(Policy("rollout", share), u).serve_treatment for u in IDS[:20_000]])
    assert abs(treated - share) < 0.01


@pytest.mark.parametrize("mode, treat, score", [("off", False, False), ("shadow", False, True),
                                                ("full", True, True)])
def test_mode_semantics(mode, treat, score):
    for unit in IDS[:200]:
        d = decide(Policy(mode, 0.5), unit)
        assert (d.serve_treatment, d.score) == (treat, score)
        assert d.arm == ("treatment" if treat else "control")
        assert d.bucket == bucket(unit, "cotrr")


def test_rollout_semantics():
    policy = Policy("rollout", 0.4, "s")
    for unit in IDS[:500]:
        d = decide(policy, unit)
        assert d.serve_treatment == (bucket(unit, "s") < 0.4) == d.score
        assert d.arm == ("treatment" if d.serve_treatment else "control")
    assert not any(decide(Policy("rollout", 0.0), u).serve_treatment for u in IDS[:500])
    assert all(decide(Policy("rollout", 1.0), u).serve_treatment for u in IDS[:500])


def test_decision_is_frozen():
    d = decide(Policy(), "u1")
    with pytest.raises(AttributeError):
        d.arm = "treatment"  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, field", [({"mode": "on"}, "mode"), ({"share": 1.5}, "share"),
                                           ({"share": -0.1}, "share"), ({"share": "0.5"}, "share"),
                                           ({"salt": ""}, "salt")])
def test_policy_validation_names_field(kwargs, field):
    with pytest.raises(ValueError, match=f"Policy.{field}"):
        Policy(**kwargs)
