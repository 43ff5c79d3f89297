"""Serving under concurrency and faults: MC dropout never leaks, every item is served once, the time
budget holds against a hung model, internal errors are told apart from bad input."""
from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cotrr_core.data
from cotrr_core.data.errors import DataError
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.serving.features import Featurizer, all_finite, in_original_order, original_order
from cotrr_core.serving.policy import Policy
from cotrr_core.serving.reranker import Reranker
from tests.conftest import CONFLICT, make_step5_rows
from tests.serving.conftest import ids, lists_of


def test_plain_answers_are_unchanged_while_other_threads_sample_mc(reranker):
    """Concurrent plain lists are batched together (one forward, other matrix shapes), so their scores may
    differ from a lone call's in the last float32 bits, never more: dropout leaking from the MC callers would
    move them by orders of magnitude more."""
    lists = lists_of(n_queries=6)
    expected = [[c["raw_score"] for c in reranker.rerank(q, c, mc_samples=0, time_budget_ms=1e5).served]
                for q, c in lists]
    wrong, errors = [], []

    def plain():
        for _ in range(15):
            for k, (q, c) in enumerate(lists):
                got = [x["raw_score"] for x in reranker.rerank(q, c, mc_samples=0, time_budget_ms=1e5).served]
                if not np.allclose(got, expected[k], rtol=1e-5, atol=1e-5):
                    wrong.append(k)

    def mc():
        for _ in range(15):
            for q, c in lists:
                res = reranker.rerank(q, c, mc_samples=5, time_budget_ms=1e5)
                if res.fallback_reason or res.served[0]["uncertainty"] is None:
                    errors.append(res.fallback_reason)

    threads = [threading.Thread(target=plain) for _ in range(6)] + [threading.Thread(target=mc) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [] and errors == []
    assert all(not m.training for m in reranker.model.modules())


ITEM = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5),
    st.dictionaries(st.sampled_from(["candidate_id", "brightness", "contrast", "first_stage_rank", "clip_img_features"]),
                    st.one_of(st.none(), st.integers(min_value=-10**400, max_value=10**400), st.floats(),
                              st.text(max_size=3), st.lists(st.floats(), max_size=5)), max_size=5))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(ITEM, max_size=8), valid=st.integers(min_value=0, max_value=6))
def test_every_input_item_is_served_exactly_once(reranker, items, valid):
    good = lists_of()[0][1][:valid]
    # no first_stage_* fields in the arbitrary items, so the original order is the given order
    cands = [dict(c, first_stage_score=None) for c in good] + items
    for c in cands:
        if isinstance(c, dict):
            c.pop("first_stage_rank", None)
            c.pop("first_stage_score", None)
    res = reranker.rerank("q", cands, time_budget_ms=1e5)
    assert len(res.served) == len(cands)
    if items:  # every arbitrary item lacks required fields: the list falls back, in the given order
        assert res.fallback_reason is not None and not res.reranked
    served = res.served if not res.reranked else sorted(res.served, key=lambda c: c["original_rank"])
    for got, sent in zip(served, cands):
        if isinstance(sent, dict):
            assert {k: v for k, v in got.items() if k in sent} == sent or _nan_equal(got, sent)
        else:
            assert got is sent


def _nan_equal(got: dict, sent: dict) -> bool:
    return all(got[k] is v or got[k] == v or (isinstance(v, float) and math.isnan(v)) for k, v in sent.items())


def test_a_non_list_is_an_invalid_input_not_a_crash(reranker):
    for junk in (None, 3, "abc", {"a": 1}):
        res = reranker.rerank("q", junk)
        assert res.fallback_reason == "invalid_input" and res.served == []


def test_a_huge_integer_is_invalid_input(reranker):
    query, cands = lists_of()[0]
    cands = [dict(c) for c in cands]
    cands[3]["brightness"] = 10**400
    res = reranker.rerank(query, cands)
    assert res.fallback_reason == "invalid_input" and "brightness" in res.detail
    assert ids(res.served) == ids(sorted(cands, key=lambda c: -c["first_stage_score"]))


def test_a_hung_model_costs_the_budget_not_the_hang(loaded, monkeypatch):
    reranker = Reranker(loaded.run, Policy("full"))
    release, still_blocked = threading.Event(), []

    def hung(*a, **k):
        release.wait(10)  # blocks until the test releases it, long after the budget
        return np.zeros(a[1].shape), None

    monkeypatch.setattr(reranker, "_forward", hung)
    query, cands = lists_of()[0]
    res = reranker.rerank(query, cands, time_budget_ms=50)
    still_blocked.append(not release.is_set())
    release.set()
    assert res.fallback_reason == "timeout" and still_blocked == [True]
    assert ids(res.served) == ids(sorted(cands, key=lambda c: -c["first_stage_score"]))
    reranker.close(wait_s=10)  # the late result arrives and is counted, then discarded
    assert reranker.stats()["late_results"] == 1


def test_an_internal_error_is_logged_and_not_blamed_on_the_caller(loaded, monkeypatch, caplog):
    reranker = Reranker(loaded.run, Policy("full"))

    def bug(self, *args):
        raise KeyError("a bug in our code")

    monkeypatch.setattr(type(reranker.featurizer), "_token", bug)
    query, cands = lists_of()[0]
    with caplog.at_level(logging.ERROR, logger="cotrr_core.serving.reranker"):
        res = reranker.rerank(query, cands)
    assert res.fallback_reason == "error:KeyError" and len(res.served) == len(cands)
    assert any(r.exc_info for r in caplog.records), "the traceback must reach the log"
    health = reranker.health()
    assert health["status"] == "degraded" and health["last_error"]["type"] == "KeyError"


def test_health_is_ok_on_clean_traffic(reranker):
    for q, c in lists_of():
        reranker.rerank(q, c)
    assert reranker.health()["status"] == "ok" and reranker.health()["recent"]["fallback_rate"] == 0.0


def test_columnar_path_matches_the_dict_path(reranker, loaded):
    import pandas as pd

    from cotrr_core.data import build_ranking_data

    lists = lists_of()
    frame = pd.DataFrame([dict(c, query_id=f"q{k}") for k, (_, cands) in enumerate(lists) for c in cands])
    data = build_ranking_data(frame, loaded.run.spec, "t")
    arrays = reranker.rerank_arrays(data.features, data.offsets, top_m=5, mc_samples=3)
    dicts = reranker.rerank_batch([(None, c) for _, c in lists], top_m=5, mc_samples=3)
    for q, res in enumerate(dicts):
        r = data.rows(q)
        assert list(data.candidate_ids[arrays.order[r]]) == ids(res.served)
        served = {c["candidate_id"]: c for c in res.served}
        got = dict(zip(data.candidate_ids[r], arrays.raw_score[r]))
        for cid, c in served.items():
            if c["raw_score"] is None:
                assert np.isnan(got[cid])
            else:
                assert got[cid] == pytest.approx(c["raw_score"], abs=1e-5)
    assert arrays.reranked.all() and arrays.fallback_reason == [None] * len(lists)


def test_columnar_bad_rows_fall_back_per_list(reranker, loaded):
    import pandas as pd

    from cotrr_core.data import build_ranking_data

    lists = lists_of(n_queries=3)
    frame = pd.DataFrame([dict(c, query_id=f"q{k}") for k, (_, cands) in enumerate(lists) for c in cands])
    data = build_ranking_data(frame, loaded.run.spec, "t")
    feats = {k: v.astype(np.float64) for k, v in data.features.items()}
    feats["visual"][data.offsets[1] + 2, 0] = 1e39  # finite in float64, inf in float32
    res = reranker.rerank_arrays(feats, data.offsets)
    assert res.fallback_reason[1] == "invalid_input" and res.fallback_reason[0] is None
    r = data.rows(1)
    assert list(res.order[r]) == list(range(r.start, r.stop)) and np.isnan(res.raw_score[r]).all()


@pytest.mark.parametrize("value", ["0.5", True, [0.5]])
def test_text_booleans_and_lists_are_not_numbers(reranker, value):
    """Serving refuses what training refuses (the data layer's rules), instead of converting it."""
    query, cands = lists_of()[0]
    cands = [dict(c) for c in cands]
    cands[2]["contrast"] = value
    res = reranker.rerank(query, cands)
    assert res.fallback_reason == "invalid_input" and "contrast" in res.detail


@pytest.mark.parametrize("value", ["2", True, None, float("nan")])
def test_a_rank_that_is_not_a_number_is_refused_as_in_a_file(reranker, value):
    """A file with first_stage_rank "2" does not load (data layer); a request with it is invalid input too,
    naming the candidate and field, instead of being read as 2.0."""
    query, cands = lists_of()[0]
    cands = [{**c, "first_stage_rank": i + 1} for i, c in enumerate(cands)]
    cands[1]["first_stage_rank"] = value
    res = reranker.rerank(query, cands)
    assert res.fallback_reason == "invalid_input"
    assert "first_stage_rank" in res.detail and "candidate 2" in res.detail
    assert len(res.served) == len(cands)


def test_a_bug_anywhere_still_serves_every_list(loaded, monkeypatch):
    reranker = Reranker(loaded.run, Policy("full"))
    monkeypatch.setattr(reranker, "_decide", lambda *a: 1 / 0)
    query, cands = lists_of()[0]
    res = reranker.rerank(query, cands)
    assert res.fallback_reason == "error:ZeroDivisionError" and ids(res.served) == ids(cands)
    assert reranker.health()["status"] == "degraded"


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=6),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_all_finite_agrees_with_isfinite(x):
    """The max/min check flags exactly the rows numpy's isfinite flags, extreme values and empty arrays included."""
    assert all_finite(x) == bool(np.isfinite(x).all())
    np.testing.assert_array_equal(all_finite(x, axis=1), np.isfinite(x).all(axis=1))


def test_featurizer_gives_list_constant_tokens_one_row_per_list():
    """Single-field and multi-field list-constant tokens both come back [K, d] from each list's first
    candidate, as the model reads them; per-candidate tokens stay [n, d]."""
    raw = _step5_spec()
    raw["tokens"][3]["list_constant"] = True  # conflict: five scalar fields
    spec = FeatureSpec.from_dict(raw)
    dims = {"clip_img": 4, "clip_text": 4, "visual": 8, "conflict": 5}
    rows = make_step5_rows(n_queries=3, list_len=5)
    offsets = np.array([0, 5, 7, 15])  # lists of 5, 2 and 8 rows
    out = Featurizer(spec, dims)(rows, offsets)
    assert out["clip_img"].shape == (15, 4) and out["visual"].shape == (15, 8)
    np.testing.assert_array_equal(out["clip_text"], np.float32([rows[a]["clip_text_features"] for a in offsets[:-1]]))
    np.testing.assert_array_equal(out["conflict"], np.float32([[rows[a][f] for f in CONFLICT] for a in offsets[:-1]]))


def _step5_spec() -> dict:
    return json.loads((Path(cotrr_core.data.__file__).parent / "specs" / "step5.json").read_text())


RANK = st.one_of(st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True), st.none(), st.just("2"))
RANKED = st.one_of(st.builds(lambda r, s: {"first_stage_rank": r, "first_stage_score": s}, RANK, RANK),
                   st.builds(lambda s: {"first_stage_score": s}, RANK), st.builds(dict), st.just(3))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(RANKED, max_size=6), max_size=5))
def test_batch_original_order_equals_each_list_ordered_alone(lists):
    """The one-pass check for ranked lists agrees with ordering each list on its own (ties, NaN, None,
    text, non-dict items and empty lists included)."""
    spec = FeatureSpec.from_dict(_step5_spec())
    for items, got in zip(lists, in_original_order(lists, spec)):
        try:
            if not all(isinstance(r, dict) for r in items):
                raise DataError("t", None, None, "not a dict")
            want = [items[k] for k in original_order(items, spec)]
        except DataError:
            assert isinstance(got, DataError)
        else:
            assert [id(r) for r in got] == [id(r) for r in want]


@pytest.mark.parametrize("mc, precision", [(0, "fp32"), (3, "fp32"), (3, "bf16")])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300])
def test_a_non_finite_vector_value_fails_only_its_list_and_is_named(loaded, mc, precision, value):
    """Vectors reach the model unchecked; the NaN score they cause is traced back to the input."""
    reranker = Reranker(loaded.run, Policy("full"), precision=precision)
    lists = lists_of()
    bad = [dict(c) for c in lists[2][1]]
    vector = np.array(bad[3]["clip_img_features"], dtype=np.float64)
    vector[2] = value
    bad[3]["clip_img_features"] = vector
    lists[2] = (lists[2][0], bad)
    out = reranker.rerank_batch(lists, mc_samples=mc)
    assert out[2].fallback_reason == "invalid_input" and "clip_img_features" in out[2].detail
    assert [r.fallback_reason for k, r in enumerate(out) if k != 2] == [None] * (len(out) - 1)
    assert reranker.health()["last_error"] is None
