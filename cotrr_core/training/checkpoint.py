"""Early stopping on validation nDCG@10, and the per-epoch checkpoint a run resumes from.

checkpoint.pt holds everything that makes a resumed run continue exactly as an uninterrupted one:
weights, loss, optimiser, schedule (and plateau factor), both RNG streams and the stopping state.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cotrr_core.io import atomic_write
from cotrr_core.training.parts import TrainParts

__all__ = ["EarlyStopping", "save_checkpoint", "restore_checkpoint"]


@dataclass
class EarlyStopping:
    """Best validation metric so far; stops after `patience` epochs without a gain above 1e-5."""

    patience: int
    best: float = -1.0
    best_epoch: int = -1  # 0-based; -1 before the first validation
    bad_epochs: int = 0

    def update(self, metric: float, epoch: int) -> bool:
        """Record epoch `epoch`'s metric; True when it is the new best."""
        improved = self.best_epoch < 0 or metric > self.best + 1e-5
        if improved:
            self.best, self.best_epoch, self.bad_epochs = metric, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def stopped(self) -> bool:
        return self.bad_epochs >= self.patience


def save_checkpoint(path: Path, parts: TrainParts, stopping: EarlyStopping, epoch: int) -> None:
    """Write checkpoint.pt (atomically) after epoch `epoch` (0-based)."""
    ck = {"model": parts.model.state_dict(), "loss": parts.loss_fn.state_dict(), "optimizer": parts.opt.state_dict(),
          "scheduler": parts.sched.state_dict(), "torch_rng": torch.get_rng_state(),
          "listmle_rng": parts.gen.get_state(), "epoch": epoch,
          "best": stopping.best, "best_epoch": stopping.best_epoch, "bad_epochs": stopping.bad_epochs}
    if parts.plateau is not None:
        ck["plateau"] = parts.plateau.state_dict()
    atomic_write(path, lambda p: torch.save(ck, p))


def restore_checkpoint(path: Path, parts: TrainParts, stopping: EarlyStopping, device: torch.device) -> int:
    """Load checkpoint.pt into `parts` and `stopping`; returns the last finished epoch (0-based)."""
    ck = torch.load(path, map_location=device, weights_only=True)
    # a checkpoint from before the model held its standardisation and prior: this run's own (fitted on
    # the same training split) fill the keys it lacks
    own = {k: v for k, v in parts.model.state_dict().items() if k.startswith(("standardise.", "prior."))}
    parts.model.load_weights({**own, **ck["model"]})
    parts.loss_fn.load_state_dict(ck["loss"])
    parts.opt.load_state_dict(ck["optimizer"])
    parts.sched.load_state_dict(ck["scheduler"])
    if parts.plateau is not None and "plateau" in ck:
        parts.plateau.load_state_dict(ck["plateau"])
    torch.set_rng_state(ck["torch_rng"].cpu())  # RNG states are CPU byte tensors, whatever map_location
    parts.gen.set_state(ck["listmle_rng"].cpu())
    stopping.best, stopping.best_epoch, stopping.bad_epochs = ck["best"], ck["best_epoch"], ck["bad_epochs"]
    return int(ck["epoch"])
