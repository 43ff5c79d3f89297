"""CoTRR-Stable: train, inspect and safely roll out a calibrated cross-attention reranker.

The main entry points are importable from the package; they load lazily so that
`import cotrr_core.data` does not pull in torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "RunConfig": "cotrr_core.config",
    "ConfigError": "cotrr_core.config",
    "DataError": "cotrr_core.data",
    "load_dataset": "cotrr_core.data",
    "load_benchmark": "cotrr_core.data.benchmarks",
    "fit": "cotrr_core.training.trainer",
    "fast_config": "cotrr_core.training.recipe",
    "load_run": "cotrr_core.artifacts",
    "calibrate_run": "cotrr_core.calibration.evaluate",
    "Reranker": "cotrr_core.serving.reranker",
    "Ensemble": "cotrr_core.training.ensemble",
    "Policy": "cotrr_core.serving.policy",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cotrr_core' has no attribute {name!r}")
