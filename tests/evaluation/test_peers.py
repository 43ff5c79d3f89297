"""Peers of the quality bench: fit on train, choose on val, predict in row order."""
from __future__ import annotations

import numpy as np
import pytest

from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.evaluation.compare import evaluate_scores


@pytest.fixture(scope="module")
def bench(synthetic_file):
    return load_benchmark(str(synthetic_file))


@pytest.mark.parametrize("name,module", [("ridge", "sklearn"), ("xgboost", "xgboost"), ("catboost", "catboost")])
def test_peer_chooses_on_val_and_beats_the_first_stage(bench, name, module):
    pytest.importorskip(module)
    from cotrr_core.evaluation.peers import PEERS

    cls = PEERS[name]
    first = {k: v[:1] for k, v in cls.grid.items()}
    second = {k: v[-1:] for k, v in cls.grid.items()}
    grid = {k: tuple(dict.fromkeys(first[k] + second[k])) for k in cls.grid}
    peer = cls(grid=grid, n_estimators=30, n_jobs=1).fit(bench.splits["train"], bench.splits["val"])
    best = max(peer.search_, key=lambda r: r["val_ndcg@10"])
    assert {k: best[k] for k in grid} == {k: v for k, v in peer.best_params_.items() if k in grid}
    test = bench.splits["test"]
    scores = peer.predict(test)
    assert scores.shape == (test.num_candidates,) and np.isfinite(scores).all()
    from cotrr_core.evaluation.compare import evaluate_original_order

    assert evaluate_scores(test, scores)["ndcg@10"] > evaluate_original_order(test)["ndcg@10"]


def test_every_peer_grid_has_lightgbms_budget():
    from cotrr_core.evaluation.baselines import DEFAULT_GRID
    from cotrr_core.evaluation.peers import PEERS

    budget = int(np.prod([len(v) for v in DEFAULT_GRID.values()]))
    for cls in PEERS.values():
        assert int(np.prod([len(v) for v in cls.grid.values()])) == budget, cls.__name__


def test_unfitted_peer_refuses_to_predict(bench):
    from cotrr_core.evaluation.peers import RidgeRanker

    with pytest.raises(RuntimeError, match="not fitted"):
        RidgeRanker().predict(bench.splits["test"])
