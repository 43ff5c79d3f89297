"""Run registry on disk (no torch): the runs under artifacts/runs/, their status, cancel requests,
history, log, process liveness and the dataset identity each was trained on.

status.json is what the app and CLI poll: state (queued/running/done/failed/cancelled),
progress in [0, 1], a message, and the pid of the training process. What a run directory holds
and how a trained run is rebuilt from it is `cotrr_core.artifacts`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotrr_core.io import REPO_ROOT, read_json, write_json

__all__ = ["runs_root", "RunInfo", "new_run_dir", "write_status", "read_status", "list_runs",
           "request_cancel", "cancel_requested", "append_log", "read_history", "STATES",
           "dataset_identity", "write_dataset_identity", "ensure_dataset_identity", "runs_for_dataset", "best_first",
           "registry", "pid_alive", "process_alive"]


def runs_root() -> Path:
    """$COTRR_RUNS (read now, not at import), else artifacts/runs."""
    return Path(os.environ.get("COTRR_RUNS", REPO_ROOT / "artifacts" / "runs"))

STATES = ("queued", "running", "done", "failed", "cancelled")
_CANCEL = "CANCEL"


@dataclass
class RunInfo:
    run_id: str
    path: Path
    status: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def state(self) -> str:
        return self.status.get("state", "unknown")

    @property
    def dataset(self) -> dict[str, Any]:
        """The dataset identity recorded at launch (dataset.json), else derived from config.json."""
        recorded = _read_optional(self.path / _IDENTITY)
        if recorded.get("name"):
            return recorded
        name = self.config.get("dataset")
        return dataset_identity(name, missing_ok=True) if name else {"key": None, "name": None}

    @property
    def test_ndcg(self) -> float | None:
        return self.metrics.get("test", {}).get("cotrr", {}).get("ndcg@10")

    @property
    def usable(self) -> bool:
        """Finished with weights on disk: the app can load and show it."""
        return self.state == "done" and (self.path / "model.pt").exists()


_IDENTITY = "dataset.json"
_HASHES: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    cache_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if cache_key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASHES[cache_key] = h.hexdigest()
    return _HASHES[cache_key]


def dataset_identity(dataset: str | Path, missing_ok: bool = False) -> dict[str, Any]:
    """A dataset's stable identity: {"key", "name", "file", "sha256"}.

    A built-in benchmark is its name; a file is its name plus the sha256 of its bytes, so the same
    upload is recognised wherever it is stored and a changed file is a different dataset. A file that
    no longer exists (missing_ok) keeps only its name (key None): matched by name, as old runs were.
    """
    from cotrr_core.data.benchmarks import BENCHMARKS
    from cotrr_core.data.split_files import is_splits_file, splits_sha256

    text = str(dataset)
    if text in BENCHMARKS:
        return {"key": text, "name": text, "file": None, "sha256": None}
    path = Path(text)
    if not path.is_file():
        if missing_ok:
            return {"key": None, "name": path.name, "file": str(path), "sha256": None}
        raise FileNotFoundError(f"dataset {text!r}: not a benchmark ({', '.join(BENCHMARKS)}) nor a file")
    sha = splits_sha256(path) if is_splits_file(path) else _sha256(path)  # a splits file: the data it names
    return {"key": f"{path.name}@{sha[:12]}", "name": path.name, "file": str(path), "sha256": sha}


def write_dataset_identity(run_dir: Path, dataset: str | Path) -> dict[str, Any]:
    """Record which dataset (name + content hash) a run trains on, before it starts."""
    ident = dataset_identity(dataset)
    write_json(Path(run_dir) / _IDENTITY, ident)
    return ident


def ensure_dataset_identity(run_dir: Path, dataset: str | Path) -> dict[str, Any]:
    """dataset.json for a run starting now, unless its launcher already wrote it (the app, at launch).

    A dataset that is neither a benchmark nor a file (e.g. assembled in code) is recorded by name only.
    """
    path = Path(run_dir) / _IDENTITY
    if path.exists():
        return read_json(path)
    ident = dataset_identity(dataset, missing_ok=True)
    write_json(path, ident)
    return ident


def _same_dataset(run: RunInfo, ident: dict[str, Any]) -> bool:
    mine = run.dataset
    if mine.get("key") and ident.get("key"):
        return mine["key"] == ident["key"]
    return bool(mine.get("name")) and mine.get("name") == ident.get("name")  # a run from before identities


def best_first(runs: list[RunInfo]) -> list[RunInfo]:
    """Highest test nDCG@10 first (runs without one last), then newest."""
    newest = sorted(runs, key=lambda r: r.run_id, reverse=True)
    return sorted(newest, key=lambda r: -r.test_ndcg if r.test_ndcg is not None else float("inf"))


def runs_for_dataset(dataset: str | Path, root: Path | None = None) -> list[RunInfo]:
    """Finished runs (weights on disk) trained on `dataset` (same name and content), best first."""
    ident = dataset_identity(dataset, missing_ok=True)
    return best_first([r for r in list_runs(root) if r.usable and _same_dataset(r, ident)])


def registry(root: Path | None = None) -> list[dict[str, Any]]:
    """One JSON-ready row per run, newest first: id, dataset identity, state, test nDCG@10, created."""
    rows = []
    for r in list_runs(root):
        try:
            created = _dt.datetime.fromtimestamp(r.path.stat().st_ctime, _dt.UTC)
        except OSError:
            created = None
        rows.append({"id": r.run_id, "dataset": r.dataset, "state": r.state, "test_ndcg@10": r.test_ndcg,
                     "created": created.isoformat(timespec="seconds") if created else None, "path": str(r.path),
                     "message": r.status.get("message", "")})
    return rows


def new_run_dir(name: str = "run", root: Path | None = None) -> Path:
    """Create artifacts/runs/<UTC timestamp>-<name>/ (unique) and return it."""
    root = Path(root or runs_root())
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^a-zA-Z0-9_-]+", "-", name).strip("-") or "run"
    for i in range(1000):
        path = root / (f"{stamp}-{slug}" + (f"-{i}" if i else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {root}")


def write_status(run_dir: Path, state: str, progress: float = 0.0, message: str = "", **extra: Any) -> None:
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    write_json(Path(run_dir) / "status.json", {
        "state": state, "progress": round(float(progress), 4), "message": message, "pid": os.getpid(),
        "updated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **extra})


def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        return read_json(Path(run_dir) / "status.json")
    except (FileNotFoundError, json.JSONDecodeError):
        return {"state": "unknown", "progress": 0.0, "message": "no status yet"}


def request_cancel(run_dir: Path) -> None:
    """Ask a running training to stop at its next step (it checkpoints and marks itself cancelled)."""
    (Path(run_dir) / _CANCEL).touch()


def cancel_requested(run_dir: Path) -> bool:
    return (Path(run_dir) / _CANCEL).exists()


def append_log(run_dir: Path, line: str) -> None:
    # log.txt is append-only text for people; the machine-read state lives in the atomic JSON files
    stamp = _dt.datetime.now().strftime("%H:%M:%S")
    with open(Path(run_dir) / "log.txt", "a", encoding="utf-8") as fh:
        fh.write(f"[{stamp}] {line}\n")


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_optional(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """All runs, newest first."""
    root = Path(root or runs_root())
    if not root.exists():
        return []
    runs = [RunInfo(p.name, p, _settled_status(p), _read_optional(p / "config.json"),
                    _read_optional(p / "metrics.json"))
            for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(runs, key=lambda r: r.run_id, reverse=True)


def pid_alive(pid: int) -> bool:
    """Is process `pid` running on this machine (a zombie, exited but not yet reaped, counts as dead)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def process_alive(status: dict[str, Any]) -> bool:
    """Is a process recorded in this status (the trainer's pid, or the launcher's) still running?"""
    pids = {p for p in (status.get("pid"), status.get("launched_pid")) if isinstance(p, int)}
    return any(pid_alive(p) for p in pids)


def _settled_status(run_dir: Path) -> dict[str, Any]:
    """status.json, where a queued/running run whose process is gone becomes 'failed' (on disk too)
    and its leftover temp files are removed: a run is never left looking alive."""
    status = read_status(run_dir)
    if status.get("state") not in ("queued", "running") or process_alive(status):
        return status
    for tmp in run_dir.glob(".*.tmp"):  # half-written files of atomic writes that never finished
        tmp.unlink(missing_ok=True)
    message = (f"the training process ended without finishing (killed or crashed) while "
               f"{status.get('state')}: {status.get('message', '')}; see log.txt / process.log")
    write_json(run_dir / "status.json", {**status, "state": "failed", "message": message})
    return read_status(run_dir)
