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
    stages = ["data", "artifacts", "training.trainer", "training.runs", "calibration.evaluate", "serving.reranker",
              "serving.policy", "evaluation.compare", "views", "simulate"]
    code = "\n".join(f"import cotrr_core.{s}" for s in stages) + "\nimport types, cotrr_core\n" + "\n".join(
        f"assert not isinstance(getattr(cotrr_core, {n!r}), types.ModuleType), {n!r}" for n in PUBLIC)
    result = _fresh(code)
    assert result.returncode == 0, result.stderr


def test_data_layer_does_not_import_torch():
    result = _fresh("import sys, cotrr_core.data, cotrr_core.data.benchmarks\nassert 'torch' not in sys.modules")
    assert result.returncode == 0, result.stderr


def test_top_level_modules_are_the_known_few():
    """Everything else lives in a stage package; a new top-level module is added here on purpose."""
    from pathlib import Path

    known = {"__init__", "__main__", "cli", "config", "io", "artifacts", "losses", "model", "mc", "prior", "ragged", "scoring"}
    root = Path(cotrr_core.__file__).parent
    assert {p.stem for p in root.glob("*.py")} <= known


def _module_graph() -> dict[str, set[str]]:
    """cotrr_core's modules -> the cotrr_core modules they import, at top level or inside functions."""
    import ast
    from pathlib import Path

    root = Path(cotrr_core.__file__).parent
    files = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}

    def resolve(name: str) -> str | None:  # `from a.b import c`: c may be a module or a name in a.b
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[module] |= {r for n in names if n.startswith("cotrr_core") and (r := resolve(n)) not in (None, module)}
    return graph


def test_no_import_cycle_counting_function_level_imports():
    graph = _module_graph()
    cyclic = []
    for start in graph:  # a module is on a cycle when it can reach itself
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        if start in seen:
            cyclic.append(start)
    assert not cyclic, f"modules on an import cycle: {sorted(cyclic)}"


def test_nothing_below_training_imports_training():
    below = ("cotrr_core.artifacts", "cotrr_core.serving", "cotrr_core.calibration", "cotrr_core.evaluation",
             "cotrr_core.scoring", "cotrr_core.data", "cotrr_core.model")
    bad = sorted((m, t) for m, ts in _module_graph().items() for t in ts
                 if m.startswith(below) and t.startswith("cotrr_core.training"))
    assert not bad, bad


def test_no_function_is_longer_than_80_lines():
    """Short functions: a long one is split into named steps (def line to last line)."""
    import ast
    from pathlib import Path

    root = Path(cotrr_core.__file__).parent
    long = [f"{p.relative_to(root)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in root.rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert long == []
