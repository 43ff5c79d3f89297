"""What the app's sidebar offers: the datasets, their labels and stable keys, finished runs and their labels."""
from __future__ import annotations

import os
from pathlib import Path

from cotrr_core.data.benchmarks import BENCHMARKS, shared_datasets_dir
from cotrr_core.io import REPO_ROOT, read_json
from cotrr_core.training import jobs
from cotrr_core.training.runs import RunInfo, dataset_identity, runs_for_dataset

__all__ = ["uploads_dir", "dataset_options", "dataset_label", "dataset_key", "url_name", "done_runs", "run_label",
           "run_stamp", "run_metrics", "process_log_tail"]


def uploads_dir() -> Path:
    """Where validated uploads live ($COTRR_UPLOADS, else artifacts/uploads)."""
    return Path(os.environ.get("COTRR_UPLOADS", REPO_ROOT / "artifacts" / "uploads"))


def dataset_options() -> list[str]:
    """The built-in benchmarks, the shared ones present on disk, then every uploaded file (by path)."""
    opts = ["demo", "demo-small"]
    shared = shared_datasets_dir()
    if (shared / "mq2008" / "S1.txt").exists():
        opts.append("mq2008")
    if (shared / "mslr_web_tiny_sample").exists():
        opts.append("mslr-tiny")
    up = uploads_dir()
    if up.exists():
        opts += [str(p) for p in sorted(up.iterdir()) if p.is_file() and not p.name.startswith(".")]
    return opts


def dataset_label(name: str) -> str:
    return name if name in BENCHMARKS else f"upload: {Path(name).name}"


def dataset_key(name: str) -> str:
    """A dataset's stable key (benchmark name, or file name @ content hash): training.runs.dataset_identity."""
    return dataset_identity(name, missing_ok=True)["key"] or Path(name).name


def url_name(dataset: str) -> str:
    """How a dataset is named in a shared link: the benchmark name, or the upload's file name."""
    return dataset if dataset in BENCHMARKS else Path(dataset).name


def done_runs(dataset: str) -> list[RunInfo]:
    """Finished runs on this dataset (same name and content), best test nDCG@10 first."""
    return runs_for_dataset(dataset, jobs.runs_root())


def run_label(r: RunInfo) -> str:
    nd = r.metrics.get("test", {}).get("cotrr", {}).get("ndcg@10")
    return r.run_id + (f"  ·  test nDCG@10 {nd:.3f}" if nd is not None else "")


def run_stamp(run_dir: Path) -> float:
    """Cache key part: changes when the weights or the calibrator are rewritten."""
    run_dir = Path(run_dir)
    stamps = [p.stat().st_mtime for p in (run_dir / "model.pt", run_dir / "calibrator.json") if p.exists()]
    return max(stamps, default=0.0)


def run_metrics(run_dir: Path) -> dict:
    """The run's metrics.json ({} before it is written)."""
    path = Path(run_dir) / "metrics.json"
    return read_json(path) if path.exists() else {}


def process_log_tail(run_dir: Path, chars: int = 1500) -> str:
    """The end of a training process's log (what a failed run printed last)."""
    log = Path(run_dir) / "process.log"
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""
