"""The QB-Norm anchor against a direct computation of the paper's inverted softmax."""
from __future__ import annotations

import numpy as np
from scipy.special import softmax

from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.evaluation.qbnorm import qbnorm_anchor, qbnorm_scores
from tests.conftest import write_jsonl
from tests.training.test_prior_training import SPEC, _rows


def test_scores_are_the_log_of_the_inverted_softmax(tmp_path):
    bench = load_benchmark(str(write_jsonl(tmp_path / "f.jsonl", _rows(n_queries=60))),
                           spec=FeatureSpec.from_dict(SPEC))
    train, test = bench.splits["train"], bench.splits["test"]
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    bank = unit(np.asarray(train.features["text"])[train.offsets[:-1]])
    got = qbnorm_scores(bank, test, ("text", "img"), 0.05)
    img, txt = unit(np.asarray(test.features["img"])), unit(np.asarray(test.features["text"]))
    for i in range(0, test.num_candidates, 7):
        column = np.append(bank @ img[i], txt[i] @ img[i])  # the bank plus this query, for this image
        # inverted softmax: P(query | image) over the bank; its log differs from ours by log(1 + p/(1-p))
        p = softmax(column / 0.05)[-1]
        assert np.isclose(got[i], np.log(p / (1 - p)), atol=1e-6)
    anchor = qbnorm_anchor(train, bench.splits["val"], test)
    assert anchor["t"] == max(anchor["val_ndcg@10"], key=anchor["val_ndcg@10"].get)


def test_a_bank_entry_does_not_count_for_its_own_image(tmp_path):
    """With positives, a candidate that is a bank entry's labelled image is scored against the bank without
    that entry (brute force: the column dropped); the anchor chooses t so and scores test on the whole bank."""
    bench = load_benchmark(str(write_jsonl(tmp_path / "f.jsonl", _rows(n_queries=60))),
                           spec=FeatureSpec.from_dict(SPEC))
    train, val = bench.splits["train"], bench.splits["val"]
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    bank = unit(np.asarray(train.features["text"])[train.offsets[:-1]])
    img = unit(np.asarray(train.features["img"]))
    positives = np.zeros_like(bank)
    positives[3] = img[train.offsets[5] + 1]  # entry 3 is labelled with a candidate of training list 5
    got = qbnorm_scores(bank, train, ("text", "img"), 0.05, positives)
    whole = qbnorm_scores(bank, train, ("text", "img"), 0.05)
    i = train.offsets[5] + 1
    txt = unit(np.asarray(train.features["text"]))
    kept = np.delete(bank @ img[i], 3)
    assert np.isclose(got[i], txt[i] @ img[i] / 0.05 - np.log(np.exp(kept / 0.05).sum()), atol=1e-6)
    same = img @ img[i] > 0.999  # this image, wherever it is a candidate
    assert (got[same] > whole[same]).all() and np.allclose(got[~same], whole[~same])
    anchor = qbnorm_anchor(train, val, bench.splits["test"])
    assert np.allclose(anchor["test"], qbnorm_scores(bank, bench.splits["test"], ("text", "img"), anchor["t"]))
