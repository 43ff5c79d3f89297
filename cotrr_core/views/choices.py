"""What the app's sidebar offers: the datasets, their labels and stable keys, finished runs and their labels."""
from __future__ import annotations

import json
import os
from pathlib import Path

from cotrr_core.data.benchmarks import BENCHMARKS, shared_datasets_dir
from cotrr_core.data.flickr8k import FLICKR8K_DIR
from cotrr_core.data.split_files import is_splits_file
from cotrr_core.io import REPO_ROOT, read_json
from cotrr_core.training import jobs
from cotrr_core.training.runs import RunInfo, dataset_identity, list_runs, runs_for_dataset
from cotrr_core.views.spec import has_editable_spec

__all__ = ["uploads_dir", "dataset_options", "dataset_label", "dataset_key", "url_name", "done_runs", "run_label",
           "run_stamp", "run_metrics", "process_log_tail"]


def uploads_dir() -> Path:
    """Where validated uploads live ($COTRR_UPLOADS, else artifacts/uploads)."""
    return Path(os.environ.get("COTRR_UPLOADS", REPO_ROOT / "artifacts" / "uploads"))


def dataset_options() -> list[str]:
    """The built-in benchmarks, the shared ones present on disk, every uploaded file (by path), then the
    predefined splits (`*.splits.json`) that finished runs were trained on."""
    opts = ["demo", "demo-small"]
    shared = shared_datasets_dir()
    if (shared / "mq2008" / "S1.txt").exists():
        opts.append("mq2008")
    if (shared / "mslr_web_tiny_sample").exists():
        opts.append("mslr-tiny")
    if (shared / FLICKR8K_DIR).exists():
        opts.append("flickr8k-dev")
    up = uploads_dir()
    if up.exists():
        opts += [str(p) for p in sorted(up.iterdir()) if p.is_file() and not p.name.startswith(".")]
    splits = {r.config.get("dataset") for r in list_runs(jobs.runs_root()) if r.state == "done"}
    return opts + sorted(s for s in splits if s and is_splits_file(s) and Path(s).is_file())


def dataset_label(name: str) -> str:
    if name in BENCHMARKS:
        return name
    return f"splits: {Path(name).parent.name}" if is_splits_file(name) else f"upload: {Path(name).name}"


def dataset_key(name: str) -> str:
    """A dataset's stable key (benchmark name, or file name @ content hash): training.runs.dataset_identity."""
    return dataset_identity(name, missing_ok=True)["key"] or Path(name).name


def url_name(dataset: str) -> str:
    """How a dataset is named in a shared link: the benchmark name, or the upload's file name."""
    return dataset if dataset in BENCHMARKS else Path(dataset).name


def done_runs(dataset: str) -> list[RunInfo]:
    """Finished runs on this dataset (same name and content, and for a file the feature spec it is read with
    now: a run of another spec cannot score it), best test nDCG@10 first."""
    runs = runs_for_dataset(dataset, jobs.runs_root())
    if not has_editable_spec(dataset) or not runs:
        return runs
    from cotrr_core.data.infer import resolve_spec
    from cotrr_core.data.loaders import infer_format

    now = _reads(resolve_spec(dataset, infer_format(dataset), dataset).to_dict())
    return [r for r in runs if _reads(r.config.get("spec") or {}) == now]


def _reads(spec: dict) -> tuple:
    """What a spec reads from a file: tokens and label."""
    return json.dumps(spec.get("tokens"), sort_keys=True), spec.get("label_field"), spec.get("relevance_threshold")


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
