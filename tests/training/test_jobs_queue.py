"""Browser-launched trainings are bounded: a queued run holds no data, the queue has a cap, the form has limits."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from cotrr_core.config import ConfigError
from cotrr_core.training import jobs
from cotrr_core.training.runs import read_status, request_cancel


def _wait(predicate, seconds: float = 60.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
def test_queued_runs_hold_no_data_and_the_queue_is_capped(tmp_path, monkeypatch):
    monkeypatch.setenv(jobs.QUEUE_ENV, "1")
    monkeypatch.setenv(jobs.SLOTS_ENV, "1")
    busy = tmp_path / "busy"
    busy.mkdir()
    with jobs.training_slot(tmp_path, busy, slots=1, poll_s=0.01):  # the one slot is taken: launches queue
        run_dir = jobs.launch_training("demo-small", {"train.epochs": 1}, "q", root=tmp_path)
        pid = read_status(run_dir)["pid"]
        assert _wait(lambda: read_status(run_dir).get("message", "").startswith("waiting")), \
            (run_dir / "process.log").read_text()
        time.sleep(1.0)  # it keeps waiting: still queued, and it has loaded neither torch nor any dataset
        assert jobs.is_alive(run_dir) and read_status(run_dir)["state"] == "queued"
        maps = _mapped(pid)
        assert "torch" not in maps and "lightgbm" not in maps
        assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").iterdir())
        with pytest.raises(jobs.QueueFull, match=r"1 training run\(s\) already wait.*at most 1") as err:
            jobs.launch_training("demo-small", {"train.epochs": 1}, "q2", root=tmp_path)
        assert run_dir.name in str(err.value)
        assert len([p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2  # busy + q
        request_cancel(run_dir)  # cancelled while queued: the process ends without training
        assert _wait(lambda: read_status(run_dir)["state"] == "cancelled")
        assert _wait(lambda: not jobs.is_alive(run_dir), 20)


def test_form_limits_match_the_machine():
    cpu, gpu = jobs.form_limits(cuda=False), jobs.form_limits(cuda=True)
    assert cpu["train.epochs"] < gpu["train.epochs"] and cpu["model.layers"] < gpu["model.layers"]
    top = jobs.form_limits()
    jobs.validate_overrides({"train.epochs": top["train.epochs"], "model.layers": top["model.layers"]})
    with pytest.raises(ConfigError, match=r"train.epochs = 500 .*at most"):
        jobs.validate_overrides({"train.epochs": 500})
    with pytest.raises(ConfigError, match=r"model.layers = 12 .*at most"):
        jobs.validate_overrides({"model.layers": 12})
