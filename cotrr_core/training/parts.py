"""The parts one training run steps with: loss, optimiser, LR schedule, AMP, the DDP wrapper, the RNG.

`build_parts` receives the model (built by the trainer) and returns them together; `optimiser_step`
is one accumulated update. Nothing here reads or writes the run directory.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cotrr_core.config import RunConfig
from cotrr_core.data.dataset import RankingData
from cotrr_core.losses import CombinedLoss
from cotrr_core.model import CoTRRModel

__all__ = ["TrainParts", "build_parts", "PlateauFactor", "lr_multiplier", "optimiser_step"]


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


def lr_multiplier(cfg: RunConfig, total_steps: int, plateau: PlateauFactor | None = None) -> Callable[[int], float]:
    """step -> LR multiplier: linear warm-up, then cosine to 5% (or the plateau factor, or constant)."""
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


@dataclass
class TrainParts:
    """Everything one optimiser step touches."""

    model: CoTRRModel  # the module whose weights are saved
    forward: torch.nn.Module  # `model`, or its DistributedDataParallel wrapper: what a step calls
    loss_fn: CombinedLoss
    params: list[torch.nn.Parameter]  # the model's and the loss's (its learnable temperature)
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    plateau: PlateauFactor | None
    grad_scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # autocast dtype; None: full precision
    gen: torch.Generator  # ListMLE tie-breaks and input noise (CPU, on every device)
    world: int

    def autocast(self, device: torch.device) -> AbstractContextManager:
        return torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    @property
    def temperature(self) -> float:
        """The loss's learned temperature (1.0 for a loss without one)."""
        t = getattr(self.loss_fn, "temperature", None)
        return float(t.detach().cpu()) if t is not None else 1.0


def build_parts(model: CoTRRModel, config: RunConfig, train: RankingData, device: torch.device,
                world: int = 1, rank: int = 0) -> TrainParts:
    """Loss, AdamW, the warm-up x cosine (x plateau) schedule, AMP (CUDA) and DDP around `model`.

    `train` (the training split) gives the relevance threshold and the number of steps.
    """
    cfg = config.train
    loss_fn = CombinedLoss(config.loss, train.spec.relevance_threshold).to(device)
    # buffers (standardisation, the prior's bank) are built identically on every rank: no broadcast per step
    forward = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False) if world > 1 else model
    params = list(model.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = math.ceil(train.num_queries / cfg.batch_size / cfg.grad_accum) * cfg.epochs
    plateau = PlateauFactor() if cfg.schedule == "plateau" else None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(config, total_steps, plateau))
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
    grad_scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    # ListMLE tie-breaks: a CPU generator on every device (listmle_loss draws on it, then moves the draw)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    return TrainParts(model, forward, loss_fn, params, opt, sched, plateau, grad_scaler, amp_dtype, gen, world)


def optimiser_step(parts: TrainParts, grad_clip: float) -> None:
    """Apply the accumulated gradients: sync the loss's, unscale, clip, step, schedule."""
    if parts.world > 1:
        _average_grads(parts.loss_fn.parameters(), parts.world)  # DDP only syncs the model's own grads
    if grad_clip > 0:
        parts.grad_scaler.unscale_(parts.opt)
        torch.nn.utils.clip_grad_norm_(parts.params, grad_clip)
    parts.grad_scaler.step(parts.opt)
    parts.grad_scaler.update()
    parts.opt.zero_grad(set_to_none=True)
    parts.sched.step()


def _average_grads(params, world: int) -> None:
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world
