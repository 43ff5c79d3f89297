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
