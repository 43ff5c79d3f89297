"""cotrr_core.training.jobs: separate-process training, liveness, the once-only default run."""
from __future__ import annotations

import json
import os
import threading
import time

from cotrr_core.training import jobs
from cotrr_core.training.runs import read_status, write_status


def test_overrides_and_validation():
    assert jobs.overrides_to_args({"train.epochs": 2, "model.list_context": True}) == [
        "--set", "train.epochs=2", "--set", "model.list_context=true"]
    import pytest

    from cotrr_core.config import ConfigError

    with pytest.raises(ConfigError, match="hidden"):
        jobs.validate_overrides({"model.hidden": 30, "model.heads": 8})
    with pytest.raises(ConfigError, match="unknown"):
        jobs.validate_overrides({"model.nope": 1})


def test_launch_training_runs_in_a_separate_process(tmp_path):
    run_dir = jobs.launch_training("demo-small", {"model.hidden": 16, "model.heads": 2, "model.layers": 1,
                                                    "train.epochs": 1}, "t", root=tmp_path)
    assert run_dir.parent == tmp_path and (run_dir / "process.log").exists()
    assert read_status(run_dir)["pid"] != os.getpid()
    deadline = time.time() + 120
    while time.time() < deadline and read_status(run_dir)["state"] not in ("done", "failed"):
        time.sleep(0.5)
    assert read_status(run_dir)["state"] == "done", (run_dir / "process.log").read_text()[-2000:]
    deadline = time.time() + 20
    while time.time() < deadline and jobs.is_alive(run_dir):  # the process exits after writing 'done'
        time.sleep(0.2)
    assert not jobs.is_alive(run_dir)
    assert jobs.ensure_default_run("demo-small", tmp_path) == run_dir


def test_default_run_started_once(tmp_path, monkeypatch):
    calls = []

    def fake_launch(dataset, overrides, name, *, fast=False, root=None):
        calls.append(dataset)
        d = tmp_path / f"20990101-000000-{name}"
        d.mkdir()
        write_status(d, "running", 0.1, "epoch 1")  # pid = this (alive) process
        (d / "config.json").write_text(json.dumps({"dataset": dataset}))
        return d

    monkeypatch.setattr(jobs, "launch_training", fake_launch)
    results = []
    threads = [threading.Thread(target=lambda: results.append(jobs.start_default_run("demo", tmp_path)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert jobs.start_default_run("demo", tmp_path) == tmp_path / "20990101-000000-default-fast"
    assert jobs.default_run_state("demo", tmp_path)[0] == "running"
    assert len(calls) == 1


def test_failed_default_run_is_not_relaunched(tmp_path, monkeypatch):
    calls = []

    def fake_launch(dataset, overrides, name, *, fast=False, root=None):
        d = tmp_path / f"2099010{len(calls)}-000000-{name}"
        d.mkdir()
        write_status(d, "failed", 0.0, "ValueError: boom")
        calls.append(d)
        return d

    monkeypatch.setattr(jobs, "launch_training", fake_launch)
    first = jobs.start_default_run("demo", tmp_path)
    assert jobs.default_run_state("demo", tmp_path) == ("failed", first)
    assert jobs.start_default_run("demo", tmp_path) == first and len(calls) == 1
    assert jobs.start_default_run("demo", tmp_path, retry=True) != first and len(calls) == 2


def test_a_second_training_waits_for_the_slot(tmp_path):
    """One app-launched training at a time: the next stays 'queued' until the first releases its slot."""
    import threading

    from cotrr_core.training.runs import new_run_dir, read_status

    first, second = new_run_dir("a", root=tmp_path), new_run_dir("b", root=tmp_path)
    holding, release, got = threading.Event(), threading.Event(), []

    def hold():
        with jobs.training_slot(tmp_path, first, slots=1, poll_s=0.01):
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)

    def wait_turn():
        with jobs.training_slot(tmp_path, second, slots=1, poll_s=0.01):
            got.append(True)

    w = threading.Thread(target=wait_turn)
    w.start()
    deadline = time.time() + 10
    while time.time() < deadline and "waiting" not in read_status(second).get("message", ""):
        time.sleep(0.01)
    assert read_status(second)["state"] == "queued" and not got
    release.set()
    t.join(10)
    w.join(10)
    assert got == [True]


def test_a_run_whose_process_died_is_shown_failed_and_cleaned(tmp_path):
    import subprocess
    import sys

    from cotrr_core.training.runs import list_runs, new_run_dir, read_status, write_status

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = new_run_dir("killed", root=tmp_path)
    write_status(run, "running", 0.4, "epoch 2/5", pid=int(dead.stdout))
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "pid": int(dead.stdout)}))
    (run / ".checkpoint.pt.abc.tmp").write_bytes(b"half")
    [info] = list_runs(tmp_path)
    assert info.state == "failed" and "ended without finishing" in info.status["message"]
    assert read_status(run)["state"] == "failed" and not list(run.glob(".*.tmp"))
