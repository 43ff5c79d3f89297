"""Training: learns the synthetic task, writes the run directory, resumes, cancels, runs under torchrun."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cotrr_core.config import RunConfig
from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.io import read_json
from cotrr_core.training.runs import dataset_identity, list_runs, read_history, read_status, request_cancel
from cotrr_core.training.trainer import TrainingCancelled, fit

REPO = Path(__file__).resolve().parents[2]


def tiny_config(epochs: int = 4, **train) -> RunConfig:
    cfg = RunConfig()
    cfg.model.hidden, cfg.model.heads, cfg.model.layers, cfg.model.dropout = 32, 4, 1, 0.0
    cfg.train.epochs, cfg.train.batch_size, cfg.train.warmup_steps, cfg.train.lr = epochs, 8, 2, 3e-3
    cfg.train.patience = 50
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_fit_learns_and_writes_the_run_directory(synthetic_file, tmp_path):
    bench = load_benchmark(str(synthetic_file))
    metrics = fit(bench, tiny_config(epochs=6), tmp_path)
    for name in ("config.json", "dataset.json", "model.pt", "calibrator.json", "metrics.json", "history.jsonl",
                 "status.json", "log.txt", "scaler.json"):
        assert (tmp_path / name).exists(), name
    assert read_status(tmp_path)["state"] == "done"
    history = read_history(tmp_path)
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert {"val_ndcg@10", "lr", "seconds"} <= set(history[0])
    config = read_json(tmp_path / "config.json")
    assert config["package_version"] and len(config["data_fingerprint"]["train"]) == 16
    # the task is learnable from the conflict token: the model must beat the noisy first stage
    assert metrics["test"]["cotrr"]["ndcg@10"] > metrics["test"]["original"]["ndcg@10"] + 0.02
    assert "calibration" in read_json(tmp_path / "metrics.json")
    assert not list(tmp_path.glob("*.tmp")), "temp files must not be left behind"
    # the file's content identity is recorded as trained on (not hashed again later, when it may have changed)
    assert read_json(tmp_path / "dataset.json") == dataset_identity(synthetic_file)


def test_a_run_is_calibrated_in_memory_scores_test_once_and_writes_metrics_once(synthetic_file, tmp_path,
                                                                                 monkeypatch):
    import cotrr_core.artifacts as artifacts
    import cotrr_core.calibration.evaluate as evaluate
    import cotrr_core.scoring as scoring
    import cotrr_core.training.trainer as trainer

    def no_reload(*a, **k):
        raise AssertionError("the trained run must not be reloaded from disk")

    monkeypatch.setattr(artifacts, "load_run", no_reload)
    monkeypatch.setattr(evaluate, "load_run", no_reload)
    scored, writes = [], []
    real_score, real_write = scoring.score_data, artifacts.write_metrics
    for module in (trainer, evaluate):
        monkeypatch.setattr(module, "score_data", lambda run, data: scored.append(data) or real_score(run, data))
    monkeypatch.setattr(trainer, "write_metrics", lambda *a: writes.append(a) or real_write(*a))
    bench = load_benchmark(str(synthetic_file))
    metrics = fit(bench, tiny_config(epochs=2), tmp_path)
    assert sum(d is bench.splits["test"] for d in scored) == 1
    assert len(writes) == 1 and read_json(tmp_path / "metrics.json") == metrics
    assert set(metrics) >= {"best_epoch", "test", "calibration"}


def test_weights_load_with_weights_only(synthetic_file, tmp_path):
    fit(load_benchmark(str(synthetic_file)), tiny_config(epochs=1), tmp_path, calibrate=False)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert "model" in state and isinstance(state["temperature"], float)


def test_resume_after_interruption_matches_uninterrupted_training(synthetic_file, tmp_path):
    bench = load_benchmark(str(synthetic_file))
    cfg = tiny_config(epochs=4)
    cfg.model.dropout = 0.1  # resume must restore the RNG streams too
    fit(bench, cfg, tmp_path / "full", calibrate=False)

    def interrupt_after_epoch_2(progress: float, message: str) -> None:
        if message.startswith("epoch 2/4: val"):
            request_cancel(tmp_path / "part")

    with pytest.raises(TrainingCancelled):
        fit(bench, cfg, tmp_path / "part", on_progress=interrupt_after_epoch_2, calibrate=False)
    assert len(read_history(tmp_path / "part")) == 2
    (tmp_path / "part" / "CANCEL").unlink()
    fit(bench, cfg, tmp_path / "part", resume=True, calibrate=False)
    assert len(read_history(tmp_path / "part")) == 4
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def test_cancel_marks_the_run_and_keeps_it_resumable(synthetic_file, tmp_path):
    bench = load_benchmark(str(synthetic_file))
    calls = []

    def cancel_after_first_epoch(progress: float, message: str) -> None:
        calls.append(message)
        if "val nDCG" in message:
            request_cancel(tmp_path)

    with pytest.raises(TrainingCancelled):
        fit(bench, tiny_config(epochs=5), tmp_path, on_progress=cancel_after_first_epoch)
    assert read_status(tmp_path)["state"] == "cancelled"
    assert (tmp_path / "checkpoint.pt").exists()
    assert [r.state for r in list_runs(tmp_path.parent) if r.path == tmp_path] == ["cancelled"]


def test_unknown_device_is_a_clear_error(synthetic_file, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        fit(load_benchmark(str(synthetic_file)), tiny_config(epochs=1, device="cuda"), tmp_path)


def _cli_train(args: list[str], run_dir: Path, nproc: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc > 1 else [sys.executable]
    cmd = launcher + ["-m", "cotrr_core", "train", *args, "--run-dir", str(run_dir)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def test_torchrun_two_processes_match_single_process(synthetic_file, tmp_path):
    """DDP on gloo/CPU averages gradients over 2 shards of each batch: same model as one process."""
    overrides = ["--dataset", str(synthetic_file), "--set", "model.hidden=32", "--set", "model.heads=4",
                 "--set", "model.layers=1", "--set", "model.dropout=0.0", "--set", "train.epochs=2",
                 "--set", "train.batch_size=8", "--set", "train.warmup_steps=2", "--set", "train.grad_clip=0"]
    _cli_train(overrides, tmp_path / "single")
    _cli_train(overrides, tmp_path / "ddp", nproc=2)
    assert read_json(tmp_path / "ddp" / "config.json")["world_size"] == 2
    assert read_json(tmp_path / "single" / "dataset.json") == dataset_identity(synthetic_file)  # the CLI's run too
    a = torch.load(tmp_path / "single" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)["model"]
    # Adam divides by sqrt(v), so float summation-order differences grow a little; 1e-3 is still
    # tight enough to catch an unsynchronised parameter (the loss temperature once was)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-3, rtol=1e-2, msg=lambda m, n=name: f"{n}: {m}")
    h1, h2 = read_history(tmp_path / "single"), read_history(tmp_path / "ddp")
    assert h2[-1]["val_ndcg@10"] == pytest.approx(h1[-1]["val_ndcg@10"], abs=0.005)


def test_plateau_factor_halves_after_patience():
    from cotrr_core.training.parts import PlateauFactor

    p = PlateauFactor(factor=0.5, patience=2)
    for metric in (0.5, 0.6, 0.6, 0.6):
        p.step(metric)
    assert p.value == 1.0
    p.step(0.6)  # the third epoch without a gain
    assert p.value == 0.5


def test_plateau_schedule_lowers_the_learning_rate_actually_used(synthetic_file, tmp_path, monkeypatch):
    """With val nDCG@10 stuck, the LR the optimiser steps with must drop (LambdaLR once undid it)."""
    import cotrr_core.training.trainer as trainer

    monkeypatch.setattr(trainer, "_validate", lambda *a: {"ndcg@10": 0.5, "c@1": 0.0, "mrr": 0.0})
    used: list[float] = []
    step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        used.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    cfg = tiny_config(epochs=6, schedule="plateau", warmup_steps=0)
    fit(load_benchmark(str(synthetic_file)), cfg, tmp_path, calibrate=False)
    lrs = [h["lr"] for h in read_history(tmp_path)]
    assert lrs[0] == pytest.approx(cfg.train.lr) and lrs[-1] == pytest.approx(cfg.train.lr / 2)
    assert min(used) == pytest.approx(cfg.train.lr / 2) and used[0] == pytest.approx(cfg.train.lr)


def test_input_noise_and_log_features_train(synthetic_file, tmp_path):
    cfg = tiny_config(epochs=1, input_noise=0.1, log_features="on")
    fit(load_benchmark(str(synthetic_file)), cfg, tmp_path, calibrate=False)
    assert read_json(tmp_path / "scaler.json")["log_transform"] is True


def test_auto_config_rule_follows_size_and_feature_kinds(synthetic_file):
    import numpy as np

    from cotrr_core.training.recipe import auto_config

    train = load_benchmark(str(synthetic_file)).splits["train"]
    cfg, rule = auto_config(train)
    wide = any(d >= 64 for d in train.token_dims.values())
    assert ("embeddings" if wide else "tabular") in rule and cfg.model.list_context
    assert cfg.calibration.method == "auto"
    heavy = any(np.percentile(np.abs(v), 99) > 10 for v in train.features.values())
    assert (cfg.train.log_features == "on") == heavy
    RunConfig.from_json(cfg.to_json())  # a valid, round-tripping config


def test_resume_after_an_early_stop_trains_no_extra_epoch(synthetic_file, tmp_path):
    bench = load_benchmark(str(synthetic_file))
    cfg = tiny_config(epochs=8, patience=1, lr=1e-9)  # nothing improves after epoch 1: stops at epoch 2
    fit(bench, cfg, tmp_path, calibrate=False)
    epochs = len(read_history(tmp_path))
    assert epochs < 8
    again = fit(bench, cfg, tmp_path, resume=True, calibrate=False)
    assert len(read_history(tmp_path)) == epochs and again["best_epoch"] == 1


def test_cli_resume_of_a_finished_run_changes_nothing(synthetic_file, tmp_path, capsys):
    from cotrr_core.cli import main

    fit(load_benchmark(str(synthetic_file)), tiny_config(epochs=1), tmp_path, calibrate=False)
    before = (tmp_path / "metrics.json").read_text()
    assert main(["train", "--resume", str(tmp_path)]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert (tmp_path / "metrics.json").read_text() == before and read_status(tmp_path)["state"] == "done"


def test_resume_from_a_checkpoint_written_before_the_model_held_its_standardisation(synthetic_file, tmp_path):
    bench = load_benchmark(str(synthetic_file))
    cfg = tiny_config(epochs=3)

    def interrupt_after_epoch_1(progress: float, message: str) -> None:
        if message.startswith("epoch 1/3: val"):
            request_cancel(tmp_path)

    with pytest.raises(TrainingCancelled):
        fit(bench, cfg, tmp_path, on_progress=interrupt_after_epoch_1, calibrate=False)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    ck["model"] = {k: v for k, v in ck["model"].items() if not k.startswith(("standardise.", "prior."))}
    torch.save(ck, tmp_path / "checkpoint.pt")
    (tmp_path / "CANCEL").unlink()
    fit(bench, cfg, tmp_path, resume=True, calibrate=False)
    assert len(read_history(tmp_path)) == 3
