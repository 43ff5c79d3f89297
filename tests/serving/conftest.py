"""Serving fixtures: one tiny run trained once per session, fresh Rerankers over it, request lists."""
from __future__ import annotations

import pytest

from cotrr_core.config import RunConfig
from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.serving.policy import Policy
from cotrr_core.serving.reranker import Reranker
from cotrr_core.training.trainer import fit
from tests.conftest import make_step5_rows


@pytest.fixture(scope="session")
def run_dir(synthetic_file, tmp_path_factory):
    cfg = RunConfig()
    cfg.model.hidden, cfg.model.heads, cfg.model.layers, cfg.model.dropout = 32, 4, 1, 0.1
    cfg.train.epochs, cfg.train.batch_size, cfg.train.warmup_steps = 1, 8, 1
    cfg.train.blend = "off"  # the network's serving path; a blended run is served in test_blended.py
    out = tmp_path_factory.mktemp("serve_run")
    fit(load_benchmark(str(synthetic_file)), cfg, out)
    return out


@pytest.fixture(scope="session")
def loaded(run_dir) -> Reranker:
    return Reranker.load(run_dir, device="cpu")


@pytest.fixture
def reranker(loaded) -> Reranker:
    """A fresh Reranker (own stats, patchable) sharing the loaded run."""
    return Reranker(loaded.run, Policy("full"))


def lists_of(n_queries: int = 6, list_len: int = 12, seed: int = 7) -> list[tuple[str, list[dict]]]:
    rows = make_step5_rows(n_queries=n_queries, list_len=list_len, seed=seed)
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["query"], []).append(r)
    return list(out.items())


def original_ids(cands: list[dict]) -> list[str]:
    return [c["candidate_id"] for c in sorted(cands, key=lambda c: -c["first_stage_score"])]


def ids(cands: list[dict]) -> list[str]:
    return [c["candidate_id"] for c in cands]


