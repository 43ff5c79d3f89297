"""fit(): train the reranker on a benchmark into a run directory.

One run, in named steps: build the parts (training/parts.py: loss, AdamW with warm-up + cosine or
plateau, AMP on CUDA, DistributedDataParallel under torchrun), start or resume
(training/checkpoint.py), then per epoch: train, validate (nDCG@10), early-stop, checkpoint. The
best weights stay in memory as a LoadedRun, which is scored on test once and calibrated
(calibration/evaluate.py) without being reloaded; metrics.json is written once, at the end.
Only rank 0 writes artifacts.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cotrr_core.artifacts import LoadedRun, run_meta, save_weights, weights_state, write_metrics, write_run_start
from cotrr_core.calibration.evaluate import calibrate_loaded
from cotrr_core.config import RunConfig, TrainConfig
from cotrr_core.data.benchmarks import Benchmark
from cotrr_core.data.dataset import PaddedLists, RankingData
from cotrr_core.data.scaling import FeatureScaler
from cotrr_core.evaluation.compare import evaluate_original_order, evaluate_scores
from cotrr_core.io import read_json, write_jsonl
from cotrr_core.scoring import build_model, pick_device, score_data, score_padded
from cotrr_core.training.blend import fit_blend
from cotrr_core.training.checkpoint import EarlyStopping, restore_checkpoint, save_checkpoint
from cotrr_core.training.parts import TrainParts, build_parts, optimiser_step
from cotrr_core.training.prior_choice import choose_mode, choose_prior_column, set_query_bank
from cotrr_core.training.runs import append_log, cancel_requested, ensure_dataset_identity, read_history, write_status

__all__ = ["fit", "TrainingCancelled", "log_features"]

ProgressFn = Callable[[float, str], None]


class TrainingCancelled(Exception):
    """Raised inside fit() when cancellation was requested; the run keeps its checkpoint."""


@dataclass
class TrainingProcess:
    """Where and as whom this process trains: the run directory, its device and its DDP rank."""

    run_dir: Path
    device: torch.device
    world: int
    rank: int
    notify: ProgressFn

    @property
    def main(self) -> bool:
        return self.rank == 0

    def status(self, state: str, progress: float, message: str, **extra: Any) -> None:
        """status.json and the progress callback (rank 0 only)."""
        if self.main:
            write_status(self.run_dir, state, progress, message, **extra)
            self.notify(progress, message)

    def log(self, line: str) -> None:
        if self.main:
            append_log(self.run_dir, line)


def log_features(config: RunConfig, spec_log: bool) -> bool:
    """Signed log1p before standardising? TrainConfig.log_features, "spec" = the feature spec's choice."""
    mode = config.train.log_features
    return spec_log if mode == "spec" else mode == "on"


def fit(bench: Benchmark, config: RunConfig, run_dir: str | Path, *, resume: bool = False,
        on_progress: ProgressFn | None = None, calibrate: bool = True) -> dict:
    """Train on bench.splits['train'], early-stop on 'val' nDCG@10, calibrate on 'cal', test on 'test'.

    Args:
        bench: the benchmark (see cotrr_core.data.benchmarks.load_benchmark).
        config: the RunConfig.
        run_dir: where config.json, dataset.json, model.pt, scaler.json, checkpoint.pt, history.jsonl,
            status.json, metrics.json and calibrator.json are written (atomically).
        resume: continue from run_dir/checkpoint.pt.
        on_progress: called with (progress in [0, 1], message).
        calibrate: fit the calibrators after training (calibration.evaluate.calibrate_loaded).
    Returns:
        The metrics.json content: best epoch, validation and test metrics, calibration.
    Raises:
        TrainingCancelled when run_dir has a cancel request (the checkpoint is kept).
    """
    proc = _start_process(Path(run_dir), config.train.device, on_progress)
    try:
        metrics = _train(bench, config, proc, resume, calibrate)
        if proc.world > 1:
            dist.barrier()  # rank 0 hosts the rendezvous store: let it finish writing before anyone leaves
        return metrics
    except TrainingCancelled:
        proc.status("cancelled", 0.0, "cancelled by request; resume with --resume")
        proc.log("cancelled")
        raise
    except Exception as exc:
        proc.status("failed", 0.0, f"{type(exc).__name__}: {exc}")
        proc.log(f"failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        if proc.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _start_process(run_dir: Path, device_choice: str, on_progress: ProgressFn | None) -> TrainingProcess:
    """Pick the device and, under torchrun (WORLD_SIZE > 1), join the process group."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = pick_device(device_choice)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return TrainingProcess(run_dir, device, world, rank, on_progress or (lambda p, m: None))


def _train(bench: Benchmark, config: RunConfig, proc: TrainingProcess, resume: bool, calibrate: bool) -> dict:
    """Build, start or resume, run the epochs; on rank 0 then test and calibrate the best weights."""
    cfg = config.train
    torch.manual_seed(cfg.seed)
    train, val = bench.splits["train"], bench.splits["val"]
    scaler = FeatureScaler(log_features(config, train.spec.log_transform)).fit(train.features)
    # token batches are read and padded per step (memory is a batch, not the dataset); the model standardises
    p_train, p_val = train.padded(max_len=cfg.max_list_len), val.padded()
    model = build_model(config, train.spec, train.token_dims, scaler).to(proc.device)
    ranker = {"bank_size": set_query_bank(model, train, cfg.seed),
              "prior_train_val_ndcg@10": choose_prior_column(model, [(p_train, train), (p_val, val)], proc.device)}
    parts = build_parts(model, config, train, proc.device, proc.world, proc.rank)
    stopping = EarlyStopping(cfg.patience)
    if resume and (proc.run_dir / "checkpoint.pt").exists():
        start_epoch, history, meta = _resume(proc, parts, stopping, cfg.epochs)
    else:
        start_epoch, history, meta = 0, [], run_meta(bench, config, model, proc.device, proc.world)
        _begin(proc, bench, meta, scaler)
    run = LoadedRun(proc.run_dir, config, train.spec, scaler, model, 1.0, None, proc.device, meta)

    t_start, best_weights = time.perf_counter(), None
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        losses, n_batches = _train_epoch(parts, p_train, cfg, epoch, proc)
        val_metrics = _validate(model, p_val, val, proc.device)
        ndcg = _selection_ndcg(val_metrics, val)
        if parts.plateau is not None:
            parts.plateau.step(ndcg)  # read by the LambdaLR multiplier from the next optimiser step on
        improved = stopping.update(ndcg, epoch)
        history.append({"epoch": epoch + 1, **{f"train_{k}": v / max(n_batches, 1) for k, v in losses.items()},
                        "val_ndcg@10": ndcg, "val_c@1": val_metrics["c@1"], "val_mrr": val_metrics["mrr"],
                        "lr": parts.opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
        if improved and proc.main:
            best_weights = weights_state(model, parts.temperature)
        _end_epoch(proc, parts, stopping, history, best_weights if improved else None)
        proc.status("running", 0.95 * (epoch + 1) / cfg.epochs,
                    f"epoch {epoch + 1}/{cfg.epochs}: val nDCG@10 {ndcg:.4f}")
        if stopping.stopped:
            proc.log(f"early stop after epoch {epoch + 1}")
            break

    metrics = {"best_epoch": stopping.best_epoch + 1, "best_val_ndcg@10": stopping.best,
               "train_seconds": time.perf_counter() - t_start, "device": str(proc.device), "world_size": proc.world}
    if not proc.main:
        return metrics
    _keep_best(run, best_weights)
    metrics["ranker"] = {**choose_mode(run.model, p_val, val, proc.device, cfg.guard), **ranker}
    _announce_mode(proc, metrics["ranker"])
    save_weights(proc.run_dir, weights_state(run.model, run.temperature))
    if cfg.blend == "auto":  # the peers on top of the chosen network part; calibration then sees the served score
        proc.status("running", 0.96, "fitting the blend's peers (LightGBM, ridge) and choosing the weight on validation")
        metrics["blend"] = fit_blend(run, bench, cfg.seed, proc.log)
    return _finish(run, bench, metrics, proc, calibrate)


def _announce_mode(proc: TrainingProcess, ranker: dict) -> None:
    """Say which model the run serves; plainly when it keeps the first-stage order."""
    scores = ", ".join(f"{k} {v:.4f}" for k, v in ranker["val_ndcg@10"].items())
    if ranker["mode"] == "first_stage":
        proc.log(f"the reranker did not beat the first-stage order on validation ({scores}): "
                 "this run keeps the first-stage order")
    else:
        proc.log(f"serving mode {ranker['mode']!r} (validation nDCG@10: {scores})")


def _begin(proc: TrainingProcess, bench: Benchmark, meta: dict, scaler: FeatureScaler) -> None:
    """A new run: config.json, scaler.json and dataset.json (unless the launcher wrote it), a log line."""
    if not proc.main:
        return
    write_run_start(proc.run_dir, meta, scaler)
    ensure_dataset_identity(proc.run_dir, bench.name)
    append_log(proc.run_dir, f"start: {bench.name}, {bench.splits['train'].num_queries} train lists, "
                             f"device {proc.device}, world {proc.world}")


def _resume(proc: TrainingProcess, parts: TrainParts, stopping: EarlyStopping,
            epochs: int) -> tuple[int, list[dict], dict]:
    """Restore checkpoint.pt: (first epoch to train, history so far, config.json)."""
    last = restore_checkpoint(proc.run_dir / "checkpoint.pt", parts, stopping, proc.device)
    history = read_history(proc.run_dir)[:last + 1]
    start_epoch = epochs if stopping.stopped else last + 1  # stopped early already: no extra epoch, go to test
    return start_epoch, history, read_json(proc.run_dir / "config.json")


def _train_epoch(parts: TrainParts, padded: PaddedLists, cfg: TrainConfig, epoch: int,
                 proc: TrainingProcess) -> tuple[dict[str, float], int]:
    """One pass over the training lists in a seeded order: (summed loss terms, number of batches)."""
    parts.forward.train()
    order = np.random.default_rng(cfg.seed + epoch).permutation(padded.mask.shape[0])  # every training list
    batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    batches = [b for b in batches if len(b) >= proc.world]
    sums: dict[str, float] = {}
    parts.opt.zero_grad(set_to_none=True)
    for step, idx in enumerate(batches):
        if cancel_requested(proc.run_dir):
            raise TrainingCancelled()
        terms = _backward(parts, padded, idx[proc.rank::proc.world], cfg, epoch, proc.device)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if (step + 1) % cfg.grad_accum == 0 or step == len(batches) - 1:
            optimiser_step(parts, cfg.grad_clip)
        if step % 5 == 0:
            done = (epoch + (step + 1) / len(batches)) / cfg.epochs
            proc.status("running", 0.95 * done, f"epoch {epoch + 1}/{cfg.epochs}, step {step + 1}/{len(batches)}")
    return sums, len(batches)


def _backward(parts: TrainParts, padded: PaddedLists, idx: np.ndarray, cfg: TrainConfig, epoch: int,
              device: torch.device) -> dict[str, torch.Tensor]:
    """Forward and backward of one batch of lists `idx` (gradients accumulate); returns the loss terms."""
    tokens, mask, labels = padded.batch(idx, device)
    if cfg.input_noise > 0:  # augmentation in standardised units (padding is masked anyway)
        exact = set(parts.model.prior.pair or ())  # the similarity pair keeps its geometry
        noisy = parts.model.standardise.jitter({k: v for k, v in tokens.items() if k not in exact},
                                               cfg.input_noise, parts.gen)
        tokens = {**tokens, **noisy}
    with parts.autocast(device):
        scores = parts.forward(tokens, mask)
    loss, terms = parts.loss_fn(scores.float(), labels, mask, epoch=epoch, generator=parts.gen)
    parts.grad_scaler.scale(loss / cfg.grad_accum).backward()
    return terms


def _validate(model, padded: PaddedLists, data: RankingData, device) -> dict[str, float]:
    return evaluate_scores(data, score_padded(model, padded, device)[padded.mask])


def _selection_ndcg(val_metrics: dict[str, float], val: RankingData) -> float:
    """Validation nDCG@10, the metric that picks the epoch; an error when no val query can have one."""
    ndcg = val_metrics["ndcg@10"]
    if not np.isfinite(ndcg):
        raise ValueError(f"validation split ({val.num_queries} queries) has no query with a relevant "
                         "candidate, so nDCG@10 cannot pick a model")
    return ndcg


def _end_epoch(proc: TrainingProcess, parts: TrainParts, stopping: EarlyStopping, history: list[dict],
               new_best: dict | None) -> None:
    """Rank 0: model.pt when this epoch is the best so far, history.jsonl, checkpoint.pt, a log line."""
    if not proc.main:
        return
    if new_best is not None:
        save_weights(proc.run_dir, new_best)
    write_jsonl(proc.run_dir / "history.jsonl", history)
    epoch = history[-1]["epoch"] - 1
    save_checkpoint(proc.run_dir / "checkpoint.pt", parts, stopping, epoch)
    append_log(proc.run_dir, f"epoch {epoch + 1}: val nDCG@10 {history[-1]['val_ndcg@10']:.4f} "
                             f"(best {stopping.best:.4f} @ {stopping.best_epoch + 1})")


def _keep_best(run: LoadedRun, best_weights: dict | None) -> None:
    """Put the best epoch's weights into the in-memory run (eval mode).

    They are in memory unless this process resumed past its best epoch: then model.pt holds them.
    """
    state = best_weights or torch.load(run.run_dir / "model.pt", map_location=run.device, weights_only=True)
    run.model.load_state_dict(state["model"])
    run.model.eval()
    run.temperature = float(state.get("temperature", 1.0))


def _finish(run: LoadedRun, bench: Benchmark, metrics: dict, proc: TrainingProcess, calibrate: bool) -> dict:
    """Score test once, calibrate the in-memory run (reusing those scores), write metrics.json once."""
    test = bench.splits["test"]
    # served: blended when the run holds a blend (then from the network part's scores, the test split read once)
    network = None if run.blend is None else score_data(dataclasses.replace(run, blend=None), test)
    test_scores = score_data(run, test) if network is None else run.blend.combine(
        network, run.blend.committee_split(test.features, test.num_candidates))
    metrics["test"] = {"cotrr": evaluate_scores(test, test_scores), "original": evaluate_original_order(test)}
    if network is not None:  # the network part alone, as an ablation
        metrics["test"]["network"] = evaluate_scores(test, network)
    if calibrate:
        proc.status("running", 0.97, "calibrating on the calibration split")
        metrics["calibration"] = calibrate_loaded(run, bench, run.config.calibration.method,
                                                  test_scores=test_scores)
        if run.blend is not None:
            metrics["calibration"]["uncertainty"]["covers"] = (
                "MC dropout of the network part only: the blend's peers (LightGBM, ridge) are deterministic")
    write_metrics(proc.run_dir, metrics)
    proc.status("done", 1.0, f"done: test nDCG@10 {metrics['test']['cotrr']['ndcg@10']:.4f} "
                             f"(original {metrics['test']['original']['ndcg@10']:.4f})")
    proc.log("done")
    return metrics
