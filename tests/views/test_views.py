"""cotrr_core.views on a tiny trained run: attention, ablation, comparisons, calibration, rollout inputs."""
from __future__ import annotations

import numpy as np
import pytest

from cotrr_core import views as I
from cotrr_core.scoring import score_data
from cotrr_core.serving.features import request_records


@pytest.fixture(scope="module")
def test_split(small_bench):
    return small_bench.splits["test"]


def test_attention_rows_sum_to_one(tiny_run, test_split):
    maps = I.attention_maps(tiny_run, test_split, 0)
    L = test_split.list_lengths[0]
    T = len(maps.token_names)
    assert maps.token.shape == (L, 1, 4, T, T)
    np.testing.assert_allclose(maps.token.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(maps.token_matrix(0).sum(-1), 1.0, atol=1e-5)
    assert maps.list is not None and maps.list.shape == (1, 4, L, L)
    np.testing.assert_allclose(maps.list_matrix(0).sum(-1), 1.0, atol=1e-5)
    # the attention path scores like the fused path
    s = score_data(tiny_run, test_split.subset([0]))
    np.testing.assert_allclose(maps.scores, s, atol=1e-4)


def test_attention_by_relevance(tiny_run, test_split):
    ds = I.attention_by_relevance(tiny_run, test_split, batch_lists=4)
    rel = int(test_split.relevant().sum())
    assert ds.candidates == {"relevant": rel, "non-relevant": test_split.num_candidates - rel}
    for group, m in ds.matrices.items():
        np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-5)
        # mean attention received over tokens averages to 1 / T
        assert ds.received[ds.received.group == group].mean_attention.mean() == pytest.approx(1 / m.shape[0])


def test_ablation_changes_scores(tiny_run, test_split):
    res = I.token_ablation(tiny_run, test_split, 0, "conflict")
    assert len(res.table) == test_split.list_lengths[0]
    assert res.summary["mean_abs_score_change"] > 0
    assert sorted(res.table.rank_ablated) == list(range(1, len(res.table) + 1))
    np.testing.assert_allclose(res.table.score_ablated - res.table.score_full, res.table.score_change)
    with pytest.raises(ValueError, match="unknown token"):
        I.token_ablation(tiny_run, test_split, 0, "nope")
    over = I.ablation_over_queries(tiny_run, test_split)
    assert set(over.token) == set(tiny_run.model.encoder.names)
    assert (over.mean_abs_score_change > 0).all()


def test_query_lists_and_wins(tiny_run, test_split):
    scored = I.score_split(tiny_run, test_split, mc_samples=3)
    assert scored.std is not None and (scored.prob_std >= 0).all()
    original, reranked = I.query_lists(test_split, 0, scored)
    n = test_split.list_lengths[0]
    assert sorted(original.reranked_rank) == list(range(1, n + 1))
    assert list(reranked.reranked_rank) == list(range(1, n + 1))
    assert (reranked.score.diff().dropna() <= 0).all()
    assert (original.movement == original.original_rank - original.reranked_rank).all()
    assert I.movement_arrow(3) == "↑3" and I.movement_arrow(-2) == "↓2"
    counts, table = I.wins_ties_losses(test_split, scored.scores)
    assert counts["win"] + counts["tie"] + counts["loss"] == test_split.num_queries == len(table)
    assert table.change.is_monotonic_increasing  # worst regressions first
    qm = I.query_metrics(test_split, 0, scored.scores)
    row = table[table.query_index == 0].iloc[0]
    assert qm.set_index("metric").loc["ndcg@10", "change"] == pytest.approx(row.change)
    assert set(I.find_queries(test_split, test_split.queries[2][:8])) >= {2}
    head = I.headline(test_split, scored.scores)
    assert list(head.metric) == ["ndcg@10", "c@1", "mrr"]
    assert (head.ci_low <= head.change).all() and (head.change <= head.ci_high).all()


def test_calibration_view(tiny_run, small_bench):
    v = I.calibration_view(tiny_run, small_bench, "platt", n_bins=10, mc_samples=3)
    assert list(v.table.calibrator) == ["uncalibrated", "temperature", "platt", "isotonic"]
    assert v.n_test == small_bench.splits["test"].num_candidates
    for _stage, g in v.reliability.groupby("stage"):
        assert g["count"].sum() == v.n_test
        assert ((g.ci_low <= g.observed_frequency) & (g.observed_frequency <= g.ci_high)).all()
    assert v.histogram.groupby("stage")["count"].sum().eq(v.n_test).all()
    assert v.risk.coverage.iloc[-1] == pytest.approx(1.0)


def test_rollout_inputs_and_topm(tiny_run, test_split):
    scores = score_data(tiny_run, test_split)
    inp = I.rollout_inputs(tiny_run, test_split, scores)
    Q, L = inp.mask.shape
    assert Q == test_split.num_queries and (inp.latency_treatment_ms > 0).all()
    # each arm serves the same candidates: rows are permutations of each other
    np.testing.assert_allclose(np.sort(inp.control_labels, 1), np.sort(inp.treatment_labels, 1))
    from cotrr_core.evaluation.compare import evaluate_original_order, evaluate_scores
    full = I.topm_scores(test_split, scores, int(test_split.list_lengths.max()))
    assert evaluate_scores(test_split, full)["ndcg@10"] == pytest.approx(evaluate_scores(test_split, scores)["ndcg@10"])
    one = I.topm_scores(test_split, scores, 1)
    assert evaluate_scores(test_split, one)["ndcg@10"] == pytest.approx(evaluate_original_order(test_split)["ndcg@10"])
    quality, latency = I.topm_inputs(tiny_run, test_split, [1, 5], scores=scores, repeats=1, max_queries=3)
    assert set(quality) == {1, 5} and all(len(v) == 3 for v in latency.values())


def test_serving_records_match_scoring(tiny_run, test_split, app_env):
    serve = pytest.importorskip("cotrr_core.serving.reranker")
    reranker = serve.Reranker.load(app_env["run_dir"], device="cpu")
    records = request_records(test_split, 1)
    res = reranker.rerank_batch([(test_split.queries[1], records)], top_m=len(records), mc_samples=0)[0]
    assert res.fallback_reason is None and res.reranked
    s = score_data(tiny_run, test_split.subset([1]))
    expected = test_split.candidate_ids[test_split.rows(1)][np.argsort(-s, kind="stable")]
    assert [r["candidate_id"] for r in res.served] == list(expected)
    assert len(I.serving_latency(reranker, test_split, top_m=5, repeats=1, max_queries=2)) == 2


def test_launch_steps_follow_the_status():
    import datetime as dt

    from cotrr_core.views.runs import launch_steps

    now = dt.datetime(2026, 1, 1, 12, 2, 0, tzinfo=dt.UTC)
    rid = "20260101-120000-default-fast"  # started 120 s before `now`
    rows, eta = launch_steps(rid, {"state": "queued", "progress": 0.0, "message": "training process started"}, now)
    assert [r["state"] for r in rows] == ["active", "pending", "pending", "pending"] and "120 s" in eta
    rows, eta = launch_steps(rid, {"state": "running", "progress": 0.4, "message": "epoch 8/20"}, now)
    assert [r["state"] for r in rows] == ["done", "active", "pending", "pending"]
    assert "3.0 min left" in eta  # 120 s for 40%: 180 s more
    rows, _ = launch_steps(rid, {"state": "running", "progress": 0.97, "message": "calibrating on the cal split"}, now)
    assert [r["state"] for r in rows] == ["done", "done", "active", "pending"]
    rows, _ = launch_steps(rid, {"state": "done", "progress": 1.0}, now, latency_measured=True)
    assert all(r["state"] == "done" for r in rows)
    rows, eta = launch_steps(rid, {"state": "failed", "progress": 0.0, "message": "boom"}, now)
    assert rows[0]["state"] == "failed" and eta == ""


def test_similarity_token_ablation_flattens_it_within_each_list(tmp_path, monkeypatch):
    """A run with a vector pair derives a similarity token: ablating it sets it to its list's mean. Checked
    against the model's own forward with the token replaced list by list in numpy."""
    from types import SimpleNamespace

    import torch

    from cotrr_core.config import ModelConfig
    from cotrr_core.data import load_dataset
    from cotrr_core.model import CoTRRModel
    from cotrr_core.prior import SIMILARITY_TOKEN, FirstStagePrior
    from tests.data.clip_file import write_clip_jsonl

    data = load_dataset(write_clip_jsonl(tmp_path / "c.jsonl", queries=6))
    torch.manual_seed(0)
    model = CoTRRModel(ModelConfig(hidden=16, heads=2, layers=1, list_context=True), data.token_dims,
                       list_constant=["clip_text"], similarity=data.spec.similarity).eval()
    torch.nn.init.normal_(model.head[-1].weight)  # a residual that reads its inputs (the head starts at zero)
    run = SimpleNamespace(model=model, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="similarity"):
        I.token_ablation(run, data, 0, "nope")

    res = I.token_ablation(run, data, 1, SIMILARITY_TOKEN)
    assert res.summary["mean_abs_score_change"] > 0

    add_token = FirstStagePrior.add_token

    def flat(self, batch, similarity):
        out = add_token(self, batch, similarity)
        token = out.rows[SIMILARITY_TOKEN].numpy().copy()
        lists = out.list_of_row().numpy()
        for k in np.unique(lists):
            token[lists == k] = token[lists == k].mean(axis=0)
        out.rows[SIMILARITY_TOKEN] = torch.from_numpy(token)
        return out

    monkeypatch.setattr(FirstStagePrior, "add_token", flat)
    padded = data.padded([1])
    with torch.no_grad():
        expected = model({n: torch.from_numpy(v) for n, v in padded.tokens.items()},
                         torch.from_numpy(padded.mask))[0].numpy()
    np.testing.assert_allclose(res.table.sort_values("original_rank").score_ablated, expected[padded.mask[0]],
                               rtol=1e-5, atol=1e-5)
