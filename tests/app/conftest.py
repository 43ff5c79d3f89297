"""App test fixtures: a tiny trained run on demo-small in a temporary COTRR_RUNS directory."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")


def tiny_config(list_context: bool = True):
    from cotrr_core.config import RunConfig

    cfg = RunConfig()
    cfg.model.hidden, cfg.model.heads, cfg.model.layers = 32, 4, 1
    cfg.model.list_context = list_context
    cfg.train.epochs = 1
    cfg.calibration.mc_samples = 3
    return cfg


@pytest.fixture(scope="session")
def app_env(tmp_path_factory):
    """COTRR_RUNS (with one tiny done run on demo-small), COTRR_UPLOADS and the small default dataset."""
    from cotrr_core.data.benchmarks import load_benchmark
    from cotrr_core.runs import new_run_dir
    from cotrr_core.train import fit

    base = tmp_path_factory.mktemp("app")
    runs, uploads = base / "runs", base / "uploads"
    run_dir = new_run_dir("tiny", root=runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # calibrators warn about a 1-epoch model's weak scores
        fit(load_benchmark("demo-small"), tiny_config(), run_dir)
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
    from cotrr_core.scoring import load_run

    return load_run(app_env["run_dir"], device="cpu")


@pytest.fixture(scope="session")
def small_bench():
    from cotrr_core.data.benchmarks import load_benchmark

    return load_benchmark("demo-small")
