"""Deep ensemble: same interface as MC dropout, and its spread says something about the error."""
from __future__ import annotations

import numpy as np
import pytest

from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.evaluation.compare import evaluate_scores
from cotrr_core.training.ensemble import Ensemble, train_ensemble
from tests.training.test_trainer import tiny_config


@pytest.fixture(scope="module")
def ensemble(synthetic_file, tmp_path_factory):
    bench = load_benchmark(str(synthetic_file))
    dirs = train_ensemble(bench, tiny_config(epochs=3), tmp_path_factory.mktemp("ens"), seeds=(0, 1, 2))
    return bench, Ensemble.load(dirs)


def test_members_differ_and_the_mean_ranks_well(ensemble):
    bench, ens = ensemble
    test = bench.splits["test"]
    members = ens.member_scores(test)
    assert members.shape == (3, test.num_candidates)
    assert not np.allclose(members[0], members[1])  # different seeds, different models
    mean, std = ens.score_data(test)
    assert mean.shape == std.shape == (test.num_candidates,) and (std > 0).all()
    original = evaluate_scores(test, -np.arange(test.num_candidates, dtype=float))["ndcg@10"]
    assert evaluate_scores(test, mean)["ndcg@10"] >= original


def test_probabilities_are_calibrated_member_averages(ensemble):
    bench, ens = ensemble
    test = bench.splits["test"]
    p, sd = ens.probabilities(test)
    assert ((0 <= p) & (p <= 1)).all() and (sd >= 0).all()
    first = ens.members[0].calibrator.predict(ens.member_scores(test)[0])
    assert not np.allclose(p, first)  # the mean really mixes members


def test_a_single_run_is_not_an_ensemble(ensemble):
    _, ens = ensemble
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble.load([ens.members[0].run_dir])
