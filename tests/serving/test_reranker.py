"""Serving: top-M, calibrated order, policy modes, fallbacks, batch == single, stats, CLI."""
from __future__ import annotations

import copy
import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from cotrr_core.data import build_ranking_data
from cotrr_core.scoring import score_data
from cotrr_core.serving.policy import Policy, bucket
from cotrr_core.serving.reranker import PARALLEL_MIN_ROWS, Reranker
from tests.serving.conftest import ids, lists_of, original_ids


def test_top_m_reorders_only_the_head_and_keeps_everything(reranker):
    query, cands = lists_of()[0]
    res = reranker.rerank(query, cands, top_m=5, time_budget_ms=1e4)
    assert res.reranked and res.fallback_reason is None and len(res.served) == len(cands)
    orig = original_ids(cands)
    assert sorted(ids(res.served)[:5]) == sorted(orig[:5])
    assert ids(res.served)[5:] == orig[5:]
    assert [c["original_rank"] for c in res.served[5:]] == list(range(6, len(cands) + 1))
    assert all(c["probability"] is None for c in res.served[5:])


def test_order_follows_calibrated_probability_and_ranks_are_consistent(reranker):
    query, cands = lists_of()[1]
    res = reranker.rerank(query, cands, top_m=20, mc_samples=4, time_budget_ms=1e4)
    probs = [c["probability"] for c in res.served]
    assert probs == sorted(probs, reverse=True) and all(0.0 <= p <= 1.0 for p in probs)
    assert [c["new_rank"] for c in res.served] == list(range(1, len(cands) + 1))
    orig = original_ids(cands)
    assert all(orig[c["original_rank"] - 1] == c["candidate_id"] for c in res.served)
    by_raw = sorted(res.served, key=lambda c: c["raw_score"])
    assert all(a["probability"] <= b["probability"] for a, b in zip(by_raw, by_raw[1:]))
    assert all(c["uncertainty"] is not None and c["uncertainty"] >= 0 for c in res.served)
    assert "new_rank" not in cands[0], "the caller's dicts must not be mutated"


def test_scores_match_offline_scoring(reranker):
    query, cands = lists_of()[2]
    res = reranker.rerank(query, cands, time_budget_ms=1e4)
    data = build_ranking_data(pd.DataFrame(cands), reranker.run.spec, "t")
    offline = score_data(reranker.run, data)
    served = {c["candidate_id"]: c["raw_score"] for c in res.served}
    assert np.allclose([served[c] for c in data.candidate_ids], offline, atol=1e-5)


def test_batch_equals_single_calls_and_dataframe_input(reranker):
    lists = lists_of()
    lists[3] = (lists[3][0], lists[3][1][:5])  # different lengths share one padded batch
    batch = reranker.rerank_batch(lists)
    for (query, cands), b in zip(lists, batch):
        single = reranker.rerank(query, cands, time_budget_ms=1e4)
        assert ids(b.served) == ids(single.served)
        assert np.allclose([c["raw_score"] for c in b.served], [c["raw_score"] for c in single.served], atol=1e-5)
    frame = reranker.rerank(lists[0][0], pd.DataFrame(lists[0][1]), time_budget_ms=1e4)
    assert ids(frame.served) == ids(batch[0].served)


def test_shadow_serves_original_and_returns_would_be(loaded):
    reranker = Reranker(loaded.run, Policy("shadow"))
    query, cands = lists_of()[0]
    res = reranker.rerank(query, cands, time_budget_ms=1e4)
    full = Reranker(loaded.run, Policy("full")).rerank(query, cands, time_budget_ms=1e4)
    assert not res.reranked and res.arm == "control" and res.mode == "shadow"
    assert ids(res.served) == original_ids(cands)
    assert ids(res.wouldbe) == ids(full.served)
    assert reranker.stats()["shadowed"] == 1 and reranker.stats()["reranked"] == 0


def test_rollout_follows_bucket_and_is_deterministic(loaded):
    policy = Policy("rollout", share=0.3, salt="exp1")
    reranker = Reranker(loaded.run, policy)
    query, cands = lists_of()[0]
    for u in [f"user{i}" for i in range(40)]:
        a = reranker.rerank(query, cands, unit_id=u, time_budget_ms=1e4)
        b = reranker.rerank(query, cands, unit_id=u, time_budget_ms=1e4)
        assert a.reranked == b.reranked == (bucket(u, "exp1") < 0.3)
        assert a.arm == ("treatment" if a.reranked else "control")
    no_unit = reranker.rerank(query, cands, time_budget_ms=1e4)
    assert no_unit.reranked == (bucket(query, "exp1") < 0.3) and "query" in no_unit.detail


def test_off_never_scores(loaded, monkeypatch):
    reranker = Reranker(loaded.run, Policy("off"))
    monkeypatch.setattr(reranker, "_forward", lambda *a, **k: pytest.fail("off must not score"))
    query, cands = lists_of()[0]
    res = reranker.rerank(query, cands)
    assert ids(res.served) == original_ids(cands) and res.wouldbe is None and res.fallback_reason is None
    assert reranker.stats()["scored"] == 0


def _raise(*a, **k):
    raise RuntimeError("boom")


def _nan(self):
    def forward(batch, *a, **k):
        return np.full(batch.mask.shape, np.nan), None
    return forward


def _slow(self):
    real = self._forward

    def forward(*a, **k):
        time.sleep(0.03)
        return real(*a, **k)
    return forward


@pytest.mark.parametrize("patch, reason", [(lambda r: _raise, "error:RuntimeError"), (_nan, "nan_score"),
                                           (_slow, "timeout")])
def test_faults_fall_back_to_the_original_order(reranker, monkeypatch, patch, reason):
    monkeypatch.setattr(reranker, "_forward", patch(reranker))
    query, cands = lists_of()[0]
    # only the slow forward is meant to run out of time: the others get a budget no loaded machine exceeds
    res = reranker.rerank(query, cands, time_budget_ms=10 if reason == "timeout" else 60_000)
    assert res.fallback_reason == reason and not res.reranked and res.wouldbe is None
    assert ids(res.served) == original_ids(cands)
    stats = reranker.stats()
    assert stats["fallback"] == {reason: 1} and stats["total"] == 1 and stats["reranked"] == 0
    if reason.startswith("error"):
        assert reranker.health()["last_error"]["type"] == "RuntimeError"


def _drop_field(c):
    c[0].pop("brightness")


def _short_vector(c):
    c[2]["clip_img_features"] = c[2]["clip_img_features"][:-1]


def _nan_feature(c):
    c[1]["contrast"] = float("nan")


@pytest.mark.parametrize("damage", [_drop_field, _short_vector, _nan_feature, lambda c: c.__delitem__(slice(1, None)),
                                    lambda c: c.clear()])
def test_invalid_input_falls_back(reranker, damage):
    query, cands = lists_of()[0]
    cands = copy.deepcopy(cands)
    damage(cands)
    res = reranker.rerank(query, cands)
    assert res.fallback_reason == "invalid_input" and res.detail and len(res.served) == len(cands)
    assert sorted(ids(res.served)) == sorted(ids(cands))
    assert reranker.stats()["fallback"] == {"invalid_input": 1}


def test_threads_share_one_reranker(reranker):
    lists = lists_of()

    def work():
        for q, c in lists * 4:
            reranker.rerank(q, c, time_budget_ms=1e4)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = reranker.stats()
    assert stats["total"] == stats["reranked"] == 4 * 4 * len(lists)
    assert stats["latency_ms"]["n"] == stats["total"] and stats["latency_ms"]["p99"] >= stats["latency_ms"]["p50"]
    assert stats["candidates_per_query"]["mean"] == 12


def test_health_reports_the_run(reranker, run_dir):
    h = reranker.health()
    assert h["run_id"] == run_dir.name and h["params"] > 0 and h["device"] == "cpu"
    assert h["calibrator"] == "isotonic" and h["policy"]["mode"] == "full" and h["last_error"] is None


def test_cli_rerank_writes_one_row_per_candidate(run_dir, synthetic_file, tmp_path):
    from cotrr_core.cli import main

    out = tmp_path / "out.jsonl"
    assert main(["rerank", str(run_dir), str(synthetic_file), "--out", str(out), "--top-m", "5",
                 "--mc-samples", "2"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(synthetic_file.read_text().splitlines())
    assert {"query_id", "candidate_id", "original_rank", "new_rank", "raw_score", "probability",
            "uncertainty"} <= set(rows[0])
    assert not list(tmp_path.glob("*.tmp"))


def test_budgeted_scoring_uses_the_callers_thread_count_and_one_thread_for_small_requests(loaded):
    """Scoring workers follow a later torch.set_num_threads (OpenMP keeps a count per thread, so a worker
    would otherwise keep the one it started with); a request below PARALLEL_MIN_ROWS rows runs on one."""
    before = torch.get_num_threads()
    if before < 2:
        pytest.skip("needs a machine with 2+ cores")
    rr = Reranker(loaded.run, Policy("full"))
    seen = []
    real = rr._forward
    rr._forward = lambda *a: (seen.append(torch.get_num_threads()), real(*a))[1]
    small = lists_of(1)[:1]
    large = lists_of(PARALLEL_MIN_ROWS // 12 + 1)
    assert sum(len(c) for _, c in large) >= PARALLEL_MIN_ROWS > sum(len(c) for _, c in small)
    try:
        rr.rerank_batch(large, time_budget_ms=1e6)  # starts a worker at `before` threads
        rr.rerank_batch(small, time_budget_ms=1e6)
        torch.set_num_threads(1)
        for _ in range(4):  # whichever worker takes it
            assert rr.rerank_batch(large, time_budget_ms=1e6)[0].fallback_reason is None
    finally:
        torch.set_num_threads(before)
        rr.close()
    assert seen == [before, 1] + [1] * 4
