"""Shared plumbing for the evidence benchmarks: datasets, per-dataset configs, training, tables.

Every bench trains into artifacts/runs/bench-<dataset>-<variant>-<time> (or a directory the
caller gives) and evaluates with cotrr_core.evaluation.compare only, so all models share one metric code.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/quality.py` from the repository root
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from cotrr_core.config import RunConfig  # noqa: E402
from cotrr_core.data.benchmarks import Benchmark, load_benchmark  # noqa: E402
from cotrr_core.data.dataset import RankingData  # noqa: E402
from cotrr_core.io import write_json  # noqa: E402  (atomic; re-exported for the bench scripts)

__all__ = ["REPO", "RESULTS", "CONFIGS", "machine", "stamp", "files_benchmark", "get_benchmark", "dataset_config",
           "train_run", "score_run", "write_json", "finish", "md_table", "fmt", "Timer", "is_letor"]

RESULTS = REPO / "bench" / "results"
CONFIGS = REPO / "bench" / "configs"


def machine() -> str:
    """One line: OS, Python, CPU count, torch / lightgbm versions."""
    import torch

    try:
        import lightgbm

        lgb = lightgbm.__version__
    except ImportError:  # pragma: no cover
        lgb = "absent"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpuinfo = Path("/proc/cpuinfo")
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                  if ln.startswith("model name")), platform.processor()) if cpuinfo.exists() else platform.processor()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return (f"{model} ({platform.system()} {platform.machine()}), {cpus} CPU cores, {dev}, Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), lightgbm {lgb}")


def stamp() -> dict:
    """Commit (with '+dirty' when tracked files differ) and 1-minute load average at the start of a bench."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "bench", "cotrr_core",
                                ":(exclude)bench/results"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"commit": commit, "load_average": [round(x, 2) for x in os.getloadavg()]}


def files_benchmark(train: str, val: str, test: str, seed: int = 0, spec=None) -> Benchmark:
    """A Benchmark from three LETOR/Step5 files, as `python -m cotrr_core train --train --val --test` reads them:
    `val` cut into val/cal halves by whole queries, `spec` for all three (default: the train file's own)."""
    from cotrr_core.data.benchmarks import split_files_benchmark
    from cotrr_core.data.split_files import checked_files

    files = checked_files({"train": train, "val": val, "test": test}, "--train/--val/--test")
    return split_files_benchmark(files, Path(train).stem, seed, spec)


def get_benchmark(name: str, seed: int = 0, spec=None) -> Benchmark:
    return load_benchmark(name, seed=seed, spec=spec)


def is_letor(data: RankingData) -> bool:
    return data.spec.format == "letor"


def dataset_config(name: str, quick: bool = False, override: str | None = None) -> RunConfig:
    """bench/configs/<name>.json when present (else bench/configs/default.json, else fast_config()).

    quick: the same model for at most 4 epochs (smoke runs; numbers are not evidence).
    """
    from cotrr_core.training.recipe import fast_config

    if override:
        cfg = RunConfig.load(override)
    else:
        for cand in (CONFIGS / f"{name}.json", CONFIGS / "default.json"):
            if cand.exists():
                cfg = RunConfig.load(cand)
                break
        else:
            cfg = fast_config()
    if quick:
        cfg.train.epochs = min(cfg.train.epochs, 4)
        cfg.train.patience = min(cfg.train.patience, 4)
        cfg.train.warmup_steps = min(cfg.train.warmup_steps, 4)
    return cfg


def new_bench_dir(root: Path | None, dataset: str, variant: str) -> Path:
    from cotrr_core.training.runs import runs_root

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset)
    d = (root or runs_root()) / f"bench-{safe}-{variant}-{stamp}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def train_run(bench: Benchmark, cfg: RunConfig, variant: str, root: Path | None = None,
              calibrate: bool = False) -> tuple[Path, dict]:
    """fit() into a fresh bench- directory; returns (run_dir, metrics)."""
    from cotrr_core.training.trainer import fit

    run_dir = new_bench_dir(root, bench.name, variant)
    metrics = fit(bench, cfg, run_dir, calibrate=calibrate)
    return run_dir, metrics


def score_run(run_dir: Path, data: RankingData) -> np.ndarray:
    from cotrr_core.artifacts import load_run
    from cotrr_core.scoring import score_data

    scores = score_data(load_run(run_dir, device="cpu"), data)
    return scores


def finish(stem: str, result: dict, json_out: str | None, keep: bool, markdown, merge: bool = False) -> dict:
    """Stamp machine, commit, load average and time; write OUT and bench/results/<stem>.json/.md (atomically).

    merge: keep the other datasets' sections of an existing bench/results/<stem>.json (datasets run
    as separate processes at the same time); each section carries its own seconds and stamp.
    """
    result["machine"] = machine()
    for k, v in stamp().items():
        result.setdefault(k, v)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if json_out:
        write_json(json_out, result)
    if keep:
        path = RESULTS / f"{stem}.json"
        if merge and path.exists():
            import json

            old = json.loads(path.read_text())
            for sec in result.values():
                if isinstance(sec, dict):
                    sec.setdefault("stamp", {k: result.get(k) for k in ("commit", "load_average", "machine")})
            result = {**{k: v for k, v in old.items() if isinstance(v, dict)}, **result}
        write_json(path, result)
        (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(f"total {result['seconds']} s")
    return result


def fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return "nan" if not np.isfinite(x) else f"{x:.{digits}f}"
    return str(x)


def md_table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.t0, 1)
