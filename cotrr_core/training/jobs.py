"""Launch training runs as separate processes, so they survive app reruns and browser reloads.

The app never trains in its own process: `launch_training` starts
`python -m cotrr_core train ... --run-dir DIR` in a new session with its output in
DIR/process.log, and the app polls DIR/status.json (cotrr_core.training.runs.read_status).

Launches are bounded: the child first waits for a training slot in a light process that has loaded
nothing (`python -m cotrr_core.training.jobs`: no torch, no dataset), and only then runs the `train`
command in the same process; at most `max_queued()` runs may wait (QueueFull past it), and the form's
values are checked against `form_limits()` (what this machine trains in reasonable time).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cotrr_core.config import ConfigError
from cotrr_core.io import REPO_ROOT
from cotrr_core.training.runs import (
    cancel_requested,
    dataset_identity,
    list_runs,
    new_run_dir,
    process_alive,
    read_status,
    runs_for_dataset,
    runs_root,
    write_dataset_identity,
    write_status,
)

__all__ = ["runs_root", "launch_training", "is_alive", "ensure_default_run", "start_default_run",
           "default_run_state", "validate_overrides", "DEFAULT_DATASET", "DEFAULT_NAME", "overrides_to_args",
           "training_slot", "SLOTS_ENV", "QUEUE_ENV", "QueueFull", "max_queued", "waiting_runs", "form_limits"]

DEFAULT_NAME = "default-fast"
DEFAULT_DATASET = "demo"
_LOCK = ".default-run.lock"


def default_dataset() -> str:
    return os.environ.get("COTRR_DEFAULT_DATASET", DEFAULT_DATASET)


def overrides_to_args(overrides: dict[str, Any]) -> list[str]:
    """{"train.epochs": 3, "model.list_context": True} -> ["--set", "train.epochs=3", ...] (JSON values)."""
    args: list[str] = []
    for key, value in overrides.items():
        if "." not in key:
            raise ValueError(f"override {key!r}: expected section.field")
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args


QUEUE_ENV = "COTRR_MAX_QUEUED"  # how many app-launched runs may wait for a slot (default 2)


class QueueFull(ConfigError):
    """Too many training runs are already waiting for a slot."""


def max_queued() -> int:
    return max(0, int(os.environ.get(QUEUE_ENV, "2")))


def form_limits(cuda: bool | None = None) -> dict[str, int]:
    """The largest epochs and token layers the training form accepts: a CPU trains the demo at a few
    seconds per epoch per layer, so 60 epochs x 3 layers already takes many minutes; a CUDA device gets more."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return {"train.epochs": 150 if cuda else 60, "model.layers": 6 if cuda else 3}


def validate_overrides(overrides: dict[str, Any], device_check: bool = True):
    """The RunConfig these overrides give (ConfigError naming the field, also past form_limits); checks the
    device exists."""
    from cotrr_core.config import RunConfig

    config = RunConfig().with_overrides(overrides, where="training form")
    for key, top in form_limits().items():
        if key in overrides and int(overrides[key]) > top:
            raise ConfigError(f"training form: {key} = {overrides[key]} is more than this machine trains in "
                              f"reasonable time (at most {top}); use the command line for longer runs")
    if device_check:
        from cotrr_core.scoring import pick_device

        pick_device(config.train.device)  # RuntimeError naming the missing device
    return config


SLOTS_ENV = "COTRR_TRAINING_SLOTS"  # how many app-launched trainings run at once (default 1); others queue


@contextmanager
def training_slot(root: Path, run_dir: Path, slots: int, poll_s: float = 1.0):
    """Hold one of `slots` lock files under `root` while training; meanwhile the run stays 'queued'.

    flock is released by the kernel when the process ends, crash or not, so a dead run never
    blocks the queue. Without fcntl (Windows) there is no queue.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    handles = [open(root / f".training-slot-{i}.lock", "a+") for i in range(max(1, slots))]
    try:
        while True:
            for fh in handles:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    yield
                    return
                except BlockingIOError:
                    continue
            if cancel_requested(run_dir):
                write_status(run_dir, "cancelled", 0.0, "cancelled while queued")
                raise SystemExit(130)
            write_status(run_dir, "queued", 0.0, f"waiting: {len(handles)} training run(s) at a time")
            time.sleep(poll_s)
    finally:
        for fh in handles:
            fh.close()


def launch_training(dataset: str, overrides: dict[str, Any] | None = None, name: str = "run", *,
                    fast: bool = False, root: Path | None = None) -> Path:
    """Start training in a separate process; returns the run directory (status.json already 'queued').

    The process waits for a training slot before it imports torch or loads the dataset. QueueFull when
    max_queued() runs already wait (checked under a lock, so concurrent sessions cannot both pass)."""
    root = Path(root or runs_root())
    dataset_identity(dataset)  # a missing file fails here, before a run directory exists
    root.mkdir(parents=True, exist_ok=True)
    with _launch_lock(root):
        waiting = waiting_runs(root)
        if len(waiting) >= max_queued():
            raise QueueFull(f"{len(waiting)} training run(s) already wait for a slot (at most {max_queued()} may "
                            f"wait, {QUEUE_ENV}); wait for one to start, or cancel one: "
                            + ", ".join(p.name for p in waiting))
        return _launch(dataset, overrides, name, fast, root)


def waiting_runs(root: Path) -> list[Path]:
    """Runs under `root` whose process is alive and still waits for a slot (status 'queued')."""
    _reap()
    return [r.path for r in list_runs(root) if r.state == "queued" and is_alive(r.path)]


@contextmanager
def _launch_lock(root: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    with open(root / ".launch.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _launch(dataset: str, overrides: dict[str, Any] | None, name: str, fast: bool, root: Path) -> Path:
    run_dir = new_run_dir(name, root=root)
    write_dataset_identity(run_dir, dataset)  # how the app finds the run again (name + content hash)
    write_status(run_dir, "queued", 0.0, "starting the training process")
    cmd = [sys.executable, "-m", "cotrr_core.training.jobs", "train", "--dataset", str(dataset), "--run-dir",
           str(run_dir), *(["--fast"] if fast else []), *overrides_to_args(overrides or {})]
    env = dict(os.environ, COTRR_RUNS=str(root), PYTHONUNBUFFERED="1")
    env.setdefault(SLOTS_ENV, "1")  # the child queues for a slot (training_slot) before it trains
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    with open(run_dir / "process.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    _CHILDREN.append(proc)
    # The child rewrites status.json with its own pid once it starts; record ours meanwhile.
    write_status(run_dir, "queued", 0.0, "training process started", pid=proc.pid, launched_pid=proc.pid,
                 command=" ".join(cmd[1:]))
    return run_dir


def is_alive(run_dir: Path) -> bool:
    """Is the process that trains `run_dir` (pid in status.json) still running?"""
    _reap()
    return process_alive(read_status(Path(run_dir)))


_CHILDREN: list[subprocess.Popen] = []


def _reap() -> None:
    """Collect exited training processes this process launched, so they do not linger as zombies."""
    for proc in list(_CHILDREN):
        if proc.poll() is not None:
            _CHILDREN.remove(proc)


def ensure_default_run(dataset: str | None = None, root: Path | None = None) -> Path | None:
    """The best finished run on `dataset` (default: the demo), or None."""
    runs = runs_for_dataset(dataset or default_dataset(), Path(root or runs_root()))
    return runs[0].path if runs else None


def _default_runs(dataset: str, root: Path) -> list:
    return [r for r in list_runs(root) if r.run_id.endswith(DEFAULT_NAME)
            and r.config.get("dataset") in (dataset, None)]


def default_run_state(dataset: str | None = None, root: Path | None = None) -> tuple[str, Path | None]:
    """('done' | 'running' | 'failed' | 'missing', run dir or None) for the default dataset.

    'failed': the newest default run failed, was cancelled or died; it is not relaunched by itself.
    """
    dataset = dataset or default_dataset()
    root = Path(root or runs_root())
    done = ensure_default_run(dataset, root)
    if done is not None:
        return "done", done
    _reap()
    for run in _default_runs(dataset, root):  # newest first
        if run.state in ("queued", "running") and is_alive(run.path):
            return "running", run.path
    newest = _default_runs(dataset, root)
    if newest and (run := newest[0]).state in ("failed", "cancelled", "queued", "running"):
        return "failed", run.path
    return "missing", None


def start_default_run(dataset: str | None = None, root: Path | None = None,
                      overrides: dict[str, Any] | None = None, retry: bool = False) -> Path | None:
    """First launch: start the fast default run unless one is done or running. Returns its directory.

    A lock file created atomically (O_CREAT | O_EXCL) makes concurrent sessions start one run only.
    A failed default run is returned as is (no relaunch loop) unless `retry`.
    """
    dataset = dataset or default_dataset()
    root = Path(root or runs_root())
    root.mkdir(parents=True, exist_ok=True)
    state, run = default_run_state(dataset, root)
    if state in ("done", "running") or (state == "failed" and not retry):
        return run
    lock = root / _LOCK
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if _stale(lock):
            lock.unlink(missing_ok=True)
            return start_default_run(dataset, root, overrides, retry)
        return _locked_run(lock)
    try:
        run_dir = launch_training(dataset, overrides or {}, DEFAULT_NAME, fast=True, root=root)
        os.write(fd, json.dumps({"run_dir": str(run_dir), "time": time.time()}).encode())
    finally:
        os.close(fd)
    return run_dir


def _locked_run(lock: Path) -> Path | None:
    try:
        return Path(json.loads(lock.read_text())["run_dir"])
    except (OSError, ValueError, KeyError):
        return None  # the other session is between creating the lock and writing it


def _stale(lock: Path) -> bool:
    run = _locked_run(lock)
    if run is None:
        try:
            return time.time() - lock.stat().st_mtime > 60
        except OSError:
            return True
    state = read_status(run).get("state")
    # a finished, failed or dead default run frees the lock
    return state in ("failed", "cancelled") or (state != "done" and not is_alive(run)) or state == "done"


def _wait_then_train(argv: list[str]) -> int:
    """The launched process: wait for a slot holding no data (this module imports neither torch nor the
    dataset), then run `python -m cotrr_core train ARGS` here, keeping the slot until it ends."""
    run_dir = Path(argv[argv.index("--run-dir") + 1])
    slots = int(os.environ.pop(SLOTS_ENV, "1"))  # popped: the train command must not queue a second time
    write_status(run_dir, "queued", 0.0, "waiting for a training slot")
    with training_slot(runs_root(), run_dir, slots):
        import runpy

        sys.argv = ["python -m cotrr_core", *argv]  # the command line, run as `python -m cotrr_core` runs it
        try:
            runpy.run_module("cotrr_core", run_name="__main__", alter_sys=True)
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        return 0


if __name__ == "__main__":
    sys.exit(_wait_then_train(sys.argv[1:]))
