"""Shared fixtures: a tiny synthetic Step5 dataset whose relevance depends on the features, and a tiny
run trained on demo-small in a temporary COTRR_RUNS directory (for the app and the views)."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

VISUAL = ["subject_ratio", "object_area", "aspect_ratio", "brightness", "contrast", "saturation",
          "hue_variance", "edge_density"]
CONFLICT = ["color_delta_e", "temperature_conflict", "clarity_conflict", "garnish_mismatch", "overall_conflict_prob"]


def make_step5_rows(n_queries: int = 40, list_len: int = 8, dim: int = 4, seed: int = 0) -> list[dict]:
    """Candidates whose compliance falls with the conflict signals; first stage is noisy."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        text = rng.normal(size=dim)
        conflict = rng.uniform(0, 1, size=(list_len, 5))
        # a smooth map (no clipping) keeps labels distinct: ListMLE ties would be broken at random
        compliance = 1 / (1 + np.exp(-6 * (0.75 - conflict[:, 0] - 0.3 * conflict[:, 1])))
        first_stage = compliance + rng.normal(0, 1.0, list_len)
        for c in range(list_len):
            row = {"query_id": f"q{q:03d}", "candidate_id": f"q{q:03d}_c{c}", "query": f"query {q}",
                   "compliance_score": round(float(compliance[c]), 6), "first_stage_score": float(first_stage[c]),
                   "clip_img_features": rng.normal(size=dim).round(4).tolist(),
                   "clip_text_features": text.round(4).tolist()}
            row.update({k: float(v) for k, v in zip(VISUAL, rng.uniform(0, 1, 8))})
            row.update({k: float(v) for k, v in zip(CONFLICT, conflict[c])})
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "synthetic.jsonl", make_step5_rows())


def tiny_app_config(list_context: bool = True):
    from cotrr_core.config import RunConfig

    cfg = RunConfig()
    cfg.model.hidden, cfg.model.heads, cfg.model.layers = 32, 4, 1
    cfg.model.list_context = list_context
    cfg.train.epochs = 1
    cfg.train.guard = False  # the pages' fixture must rerank, even when 1 epoch loses to the first stage
    cfg.train.blend = "off"  # the network's paths (attention, Top-M references); blends: tests/serving/test_blended.py
    return cfg


@pytest.fixture(scope="session")
def app_env(tmp_path_factory):
    """COTRR_RUNS (with one tiny done run on demo-small), COTRR_UPLOADS and the small default dataset."""
    from cotrr_core.data.benchmarks import load_benchmark
    from cotrr_core.training.runs import new_run_dir
    from cotrr_core.training.trainer import fit

    base = tmp_path_factory.mktemp("app")
    runs, uploads = base / "runs", base / "uploads"
    run_dir = new_run_dir("tiny", root=runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # calibrators warn about a 1-epoch model's weak scores
        fit(load_benchmark("demo-small"), tiny_app_config(), run_dir)
    env = {"COTRR_RUNS": str(runs), "COTRR_UPLOADS": str(uploads), "COTRR_DEFAULT_DATASET": "demo-small"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield {"runs": runs, "uploads": uploads, "run_dir": run_dir, "env": env}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_run(app_env):
    from cotrr_core.artifacts import load_run

    return load_run(app_env["run_dir"], device="cpu")


@pytest.fixture(scope="session")
def small_bench():
    from cotrr_core.data.benchmarks import load_benchmark

    return load_benchmark("demo-small")
