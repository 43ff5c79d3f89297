"""fit(): train the reranker on a benchmark into a run directory.

Device pick, AMP (CUDA), gradient accumulation and clipping, AdamW with warm-up +
cosine (or ReduceLROnPlateau), early stopping on validation nDCG@10, per-epoch
checkpoints with resume, cancellation, and DistributedDataParallel when launched
by torchrun (WORLD_SIZE > 1). Only rank 0 writes artifacts.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from cotrr_core.config import RunConfig
from cotrr_core.data.benchmarks import Benchmark
from cotrr_core.data.dataset import PaddedLists, RankingData
from cotrr_core.data.scaling import FeatureScaler
from cotrr_core.evaluation.compare import evaluate_original_order, evaluate_scores
from cotrr_core.io import atomic_write, read_json, write_json, write_jsonl
from cotrr_core.losses import CombinedLoss
from cotrr_core.training.runs import append_log, cancel_requested, read_history, write_status
from cotrr_core.scoring import build_model, pick_device, score_padded

__all__ = ["fit", "TrainingCancelled", "PlateauFactor"]

ProgressFn = Callable[[float, str], None]


class TrainingCancelled(Exception):
    """Raised inside fit() when cancellation was requested; the run keeps its checkpoint."""


def _package_version() -> str:
    from cotrr_core import __version__

    return __version__


class PlateauFactor:
    """The plateau part of the LR multiplier: halves after `patience` epochs without a val gain.

    One LambdaLR multiplies it in (warm-up x cosine x plateau), so nothing else rewrites the rate
    (a separate ReduceLROnPlateau would be undone by LambdaLR recomputing from base_lrs).
    """

    def __init__(self, factor: float = 0.5, patience: int = 2) -> None:
        self.factor, self.patience = factor, patience
        self.value, self.best, self.bad = 1.0, -math.inf, 0

    def step(self, metric: float) -> None:
        if metric > self.best + 1e-5:
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.value, self.bad = self.value * self.factor, 0

    def state_dict(self) -> dict:
        return {"value": self.value, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.best, self.bad = state["value"], state["best"], state["bad"]


def _lr_lambda(cfg: RunConfig, total_steps: int, plateau: PlateauFactor | None = None) -> Callable[[int], float]:
    # capped at 10% of the run: 50 steps is 10 of MQ2008's 5-step epochs, which starved short runs
    warm = max(min(cfg.train.warmup_steps, int(0.1 * total_steps)), 1)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.train.schedule == "plateau" and plateau is not None:
            return plateau.value
        if cfg.train.schedule != "cosine":
            return 1.0
        progress = min((step - warm) / max(total_steps - warm, 1), 1.0)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def log_features(config: RunConfig, spec_log: bool) -> bool:
    """Signed log1p before standardising? TrainConfig.log_features, "spec" = the feature spec's choice."""
    mode = config.train.log_features
    return spec_log if mode == "spec" else mode == "on"


def _validate(model, padded: PaddedLists, data: RankingData, device) -> dict[str, float]:
    return evaluate_scores(data, score_padded(model, padded, device)[padded.mask])


def fit(bench: Benchmark, config: RunConfig, run_dir: str | Path, *, resume: bool = False,
        on_progress: ProgressFn | None = None, calibrate: bool = True) -> dict:
    """Train on bench.splits['train'], early-stop on 'val' nDCG@10, calibrate on 'cal', test on 'test'.

    Args:
        bench: the benchmark (see cotrr_core.data.benchmarks.load_benchmark).
        config: the RunConfig.
        run_dir: where config.json, model.pt, scaler.json, checkpoint.pt, history.jsonl,
            status.json, metrics.json and calibrator.json are written (atomically).
        resume: continue from run_dir/checkpoint.pt.
        on_progress: called with (progress in [0, 1], message).
        calibrate: fit the calibrators after training (calibration.evaluate.calibrate_run).
    Returns:
        The metrics.json content: best epoch, validation and test metrics, calibration.
    Raises:
        TrainingCancelled when run_dir has a cancel request (the checkpoint is kept).
    """
    run_dir = Path(run_dir)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = pick_device(config.train.device)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main = rank == 0
    notify = on_progress or (lambda p, m: None)

    def status(state: str, progress: float, message: str, **extra) -> None:
        if main:
            write_status(run_dir, state, progress, message, **extra)
            notify(progress, message)

    try:
        metrics = _fit(bench, config, run_dir, resume, device, world, rank, status, calibrate)
        if world > 1:
            dist.barrier()  # rank 0 hosts the rendezvous store: let it finish writing before anyone leaves
        return metrics
    except TrainingCancelled:
        status("cancelled", 0.0, "cancelled by request; resume with --resume")
        if main:
            append_log(run_dir, "cancelled")
        raise
    except Exception as exc:
        status("failed", 0.0, f"{type(exc).__name__}: {exc}")
        if main:
            append_log(run_dir, f"failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _fit(bench, config, run_dir, resume, device, world, rank, status, calibrate) -> dict:
    main = rank == 0
    cfg = config.train
    torch.manual_seed(cfg.seed)
    train, val = bench.splits["train"], bench.splits["val"]
    scaler = FeatureScaler(log_features(config, train.spec.log_transform)).fit(train.features)
    # token batches are read, padded and standardised per step: memory is a batch, not the dataset
    p_train, p_val = train.padded(max_len=cfg.max_list_len, scaler=scaler), val.padded(scaler=scaler)

    model = build_model(config, train.spec, train.token_dims).to(device)
    loss_fn = CombinedLoss(config.loss, train.spec.relevance_threshold).to(device)
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model)
    params = list(model.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(train.num_queries / cfg.batch_size / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    plateau = PlateauFactor() if cfg.schedule == "plateau" else None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config, total_steps, plateau))
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    grad_scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    # ListMLE tie-breaks: a CPU generator on every device (listmle_loss draws on it, then moves the draw)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    start_epoch, best, best_epoch, bad_epochs = 0, -1.0, -1, 0
    history: list[dict] = []
    ckpt_path = run_dir / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(ck["model"])
        loss_fn.load_state_dict(ck["loss"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if plateau is not None and "plateau" in ck:
            plateau.load_state_dict(ck["plateau"])
        torch.set_rng_state(ck["torch_rng"].cpu())  # RNG states are CPU byte tensors, whatever map_location
        gen.set_state(ck["listmle_rng"].cpu())
        start_epoch, best, best_epoch, bad_epochs = ck["epoch"] + 1, ck["best"], ck["best_epoch"], ck["bad_epochs"]
        history = read_history(run_dir)[:start_epoch]
        if bad_epochs >= cfg.patience:  # it had already stopped early: no extra epoch, go on to test
            start_epoch = cfg.epochs
    elif main:
        write_json(run_dir / "config.json", {
            "run": config.to_dict(), "dataset": bench.name, "dataset_note": bench.note,
            "spec": train.spec.to_dict(), "token_dims": train.token_dims,
            "package_version": _package_version(), "torch_version": torch.__version__,
            "data_fingerprint": {k: d.fingerprint() for k, d in bench.splits.items()},
            "parameters": sum(p.numel() for p in model.parameters()), "device": str(device), "world_size": world})
        write_json(run_dir / "scaler.json", scaler.to_state())
        append_log(run_dir, f"start: {bench.name}, {train.num_queries} train lists, device {device}, world {world}")

    t_start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        ddp_model.train()
        order = np.random.default_rng(cfg.seed + epoch).permutation(train.num_queries)
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        batches = [b for b in batches if len(b) >= world]
        sums: dict[str, float] = {}
        opt.zero_grad(set_to_none=True)
        for step, idx in enumerate(batches):
            if cancel_requested(run_dir):
                raise TrainingCancelled()
            tokens, mask, labels = p_train.batch(idx[rank::world], device)
            if cfg.input_noise > 0:  # augmentation in standardised units (padding is masked anyway)
                tokens = {k: v + cfg.input_noise * torch.randn(v.shape, generator=gen).to(v.device)
                          for k, v in tokens.items()}
            ctx = torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext()
            with ctx:
                scores = ddp_model(tokens, mask)
            loss, parts = loss_fn(scores.float(), labels, mask, epoch=epoch, generator=gen)
            grad_scaler.scale(loss / cfg.grad_accum).backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if (step + 1) % cfg.grad_accum == 0 or step == len(batches) - 1:
                if world > 1:
                    _average_grads(loss_fn.parameters(), world)  # DDP only syncs the model's own grads
                if cfg.grad_clip > 0:
                    grad_scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                grad_scaler.step(opt)
                grad_scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
            if step % 5 == 0:
                done = (epoch + (step + 1) / len(batches)) / cfg.epochs
                status("running", 0.95 * done, f"epoch {epoch + 1}/{cfg.epochs}, step {step + 1}/{len(batches)}")
        val_metrics = _validate(model, p_val, val, device)
        ndcg = val_metrics["ndcg@10"]
        if not np.isfinite(ndcg):
            raise ValueError(f"validation split ({val.num_queries} queries) has no query with a relevant "
                             "candidate, so nDCG@10 cannot pick a model")
        if plateau is not None:
            plateau.step(ndcg)  # read by the LambdaLR multiplier from the next optimiser step on
        improved = best_epoch < 0 or ndcg > best + 1e-5
        if improved:
            best, best_epoch, bad_epochs = ndcg, epoch, 0
        else:
            bad_epochs += 1
        row = {"epoch": epoch + 1, **{f"train_{k}": v / max(len(batches), 1) for k, v in sums.items()},
               "val_ndcg@10": ndcg, "val_c@1": val_metrics["c@1"], "val_mrr": val_metrics["mrr"],
               "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        history.append(row)
        if main:
            if improved:
                _save_weights(run_dir / "model.pt", model, loss_fn)
            write_jsonl(run_dir / "history.jsonl", history)
            ck = {"model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizer": opt.state_dict(),
                  "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                  "listmle_rng": gen.get_state(), "epoch": epoch,
                  "best": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs}
            if plateau is not None:
                ck["plateau"] = plateau.state_dict()
            atomic_write(ckpt_path, lambda p: torch.save(ck, p))
            append_log(run_dir, f"epoch {epoch + 1}: val nDCG@10 {ndcg:.4f} (best {best:.4f} @ {best_epoch + 1})")
        status("running", 0.95 * (epoch + 1) / cfg.epochs, f"epoch {epoch + 1}/{cfg.epochs}: val nDCG@10 {ndcg:.4f}")
        if bad_epochs >= cfg.patience:
            if main:
                append_log(run_dir, f"early stop after epoch {epoch + 1}")
            break

    metrics = {"best_epoch": best_epoch + 1, "best_val_ndcg@10": best,
               "train_seconds": time.perf_counter() - t_start, "device": str(device), "world_size": world}
    if not main:
        return metrics
    best_state = torch.load(run_dir / "model.pt", map_location=device, weights_only=True)
    model.load_state_dict(best_state["model"])
    test = bench.splits["test"]
    p_test = test.padded(scaler=scaler)
    test_scores = score_padded(model, p_test, device)[p_test.mask]
    metrics["test"] = {"cotrr": evaluate_scores(test, test_scores),
                       "original": evaluate_original_order(test)}
    write_json(run_dir / "metrics.json", metrics)
    if calibrate:
        from cotrr_core.calibration.evaluate import calibrate_run

        status("running", 0.97, "calibrating on the calibration split")
        calibrate_run(run_dir, bench=bench, method=config.calibration.method)
        metrics = read_json(run_dir / "metrics.json")
    status("done", 1.0, f"done: test nDCG@10 {metrics['test']['cotrr']['ndcg@10']:.4f} "
                        f"(original {metrics['test']['original']['ndcg@10']:.4f})")
    append_log(run_dir, "done")
    return metrics


def _average_grads(params, world: int) -> None:
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _save_weights(path: Path, model: torch.nn.Module, loss_fn: CombinedLoss) -> None:
    temperature = float(loss_fn.temperature.detach().cpu()) if hasattr(loss_fn, "temperature") else 1.0
    state = {"model": model.state_dict(), "temperature": temperature}
    atomic_write(path, lambda p: torch.save(state, p))
