"""The package's public names import in a fresh interpreter, whatever the import order."""
from __future__ import annotations

import subprocess
import sys

import pytest

import cotrr_core

PUBLIC = [n for n in cotrr_core.__all__ if n != "__version__"]


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("order", [PUBLIC, PUBLIC[::-1]], ids=["forward", "reverse"])
def test_public_names_import_in_any_order(order):
    code = "\n".join(f"from cotrr_core import {name}" for name in order) + "\n" + "\n".join(
        f"assert not isinstance({name}, type(__import__('sys'))), {name!r}" for name in order)
    result = _fresh(code)
    assert result.returncode == 0, result.stderr


def test_submodule_import_does_not_shadow_a_public_function():
    """Importing every stage first must not turn a public name into a module."""
    stages = ["data", "training.trainer", "training.runs", "calibration.evaluate", "serving.reranker",
              "serving.policy", "evaluation.compare", "views", "simulate"]
    code = "\n".join(f"import cotrr_core.{s}" for s in stages) + "\nimport types, cotrr_core\n" + "\n".join(
        f"assert not isinstance(getattr(cotrr_core, {n!r}), types.ModuleType), {n!r}" for n in PUBLIC)
    result = _fresh(code)
    assert result.returncode == 0, result.stderr


def test_data_layer_does_not_import_torch():
    result = _fresh("import sys, cotrr_core.data, cotrr_core.data.benchmarks\nassert 'torch' not in sys.modules")
    assert result.returncode == 0, result.stderr


def test_at_most_eight_top_level_modules():
    from pathlib import Path

    root = Path(cotrr_core.__file__).parent
    assert len(list(root.glob("*.py"))) <= 8
