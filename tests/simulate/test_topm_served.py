"""Top-M frontier quality is the order serving returns (issue 16): only the first M candidates are scored."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cotrr_core.evaluation.compare import evaluate_original_order, evaluate_scores
from cotrr_core.scoring import score_data
from cotrr_core.serving.reranker import Reranker
from cotrr_core.simulate.inputs import served_topm_scores, topm_inputs, topm_scores


@pytest.fixture(scope="module")
def test_split(small_bench):
    return small_bench.splits["test"]


@pytest.fixture(scope="module")
def reranker(app_env):
    return Reranker.load(app_env["run_dir"], device="cpu")


@torch.inference_mode()
def _head_order(run, data, q: int, m: int) -> list[int]:
    """Reference: the model called on the first m candidates alone, then the tail in original order."""
    r = data.rows(q)
    h = min(m, r.stop - r.start)
    feats = {k: v[r.start:r.start + h] for k, v in data.features.items()}  # raw: the model standardises
    tokens = {k: torch.from_numpy(np.ascontiguousarray(v[None])).float() for k, v in feats.items()}
    s = run.model(tokens, torch.ones((1, h), dtype=torch.bool))[0].numpy()
    head = np.argsort(-s, kind="stable").tolist() if h >= 2 else list(range(h))
    return head + list(range(h, r.stop - r.start))


@pytest.mark.parametrize("m", [2, 3, 5])
def test_served_order_matches_head_only_model_call(tiny_run, test_split, reranker, m):
    assert tiny_run.config.model.list_context  # the case where slicing whole-list scores is wrong
    s = served_topm_scores(reranker, test_split, m)
    for q in range(test_split.num_queries):
        r = test_split.rows(q)
        served = np.argsort(-s[r], kind="stable").tolist()
        assert served == _head_order(tiny_run, test_split, q, m), q


def test_frontier_ends_and_middle(tiny_run, test_split, reranker):
    longest = int(test_split.list_lengths.max())
    quality, latency = topm_inputs(tiny_run, test_split, [1, 3, longest], reranker=reranker, repeats=1,
                                   max_queries=2)
    assert quality[1]["ndcg@10"] == pytest.approx(evaluate_original_order(test_split)["ndcg@10"])
    full = score_data(tiny_run, test_split)
    assert quality[longest]["ndcg@10"] == pytest.approx(evaluate_scores(test_split, full)["ndcg@10"])
    ref = np.concatenate([[-i for i in np.argsort(_head_order(tiny_run, test_split, q, 3))]
                          for q in range(test_split.num_queries)]).astype(float)
    assert quality[3]["ndcg@10"] == pytest.approx(evaluate_scores(test_split, ref)["ndcg@10"])
    assert all(len(v) == 2 for v in latency.values())


def test_whole_list_slicing_differs_with_list_context(tiny_run, test_split, reranker):
    """The old frontier (score the whole list, keep the head's scores) is not what serving does."""
    full = score_data(tiny_run, test_split)
    differ = 0
    for m in (2, 3, 4):
        old, new = topm_scores(test_split, full, m), served_topm_scores(reranker, test_split, m)
        for q in range(test_split.num_queries):
            r = test_split.rows(q)
            differ += np.argsort(-old[r], kind="stable").tolist() != np.argsort(-new[r], kind="stable").tolist()
    assert differ > 0
