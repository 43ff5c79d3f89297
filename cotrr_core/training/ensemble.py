"""Deep ensemble: several runs of one config that differ only in seed, scored together.

Gives the same interface as MC dropout: a per-candidate mean and standard deviation,
of raw scores and of calibrated probabilities (each member uses its own calibrator).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cotrr_core.artifacts import LoadedRun, load_run
from cotrr_core.config import RunConfig
from cotrr_core.data.benchmarks import Benchmark
from cotrr_core.data.dataset import RankingData
from cotrr_core.scoring import score_data
from cotrr_core.training.trainer import fit

__all__ = ["train_ensemble", "Ensemble"]


def train_ensemble(bench: Benchmark, config: RunConfig, root: str | Path, seeds: Sequence[int] = (0, 1, 2, 3, 4),
                   on_progress: Callable[[float, str], None] | None = None) -> list[Path]:
    """Train one run per seed into root/seed<k>/ (calibrated as usual). Returns the run dirs."""
    dirs = []
    for i, seed in enumerate(seeds):
        cfg = RunConfig.from_dict(config.to_dict())
        cfg.train = dataclasses.replace(cfg.train, seed=seed)
        run_dir = Path(root) / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        fit(bench, cfg, run_dir)
        dirs.append(run_dir)
        if on_progress:
            on_progress((i + 1) / len(seeds), f"member {i + 1}/{len(seeds)} (seed {seed}) done")
    return dirs


@dataclass
class Ensemble:
    """Members loaded from their run directories (weights_only=True, like any run)."""

    members: list[LoadedRun]

    @classmethod
    def load(cls, run_dirs: Sequence[str | Path], device: str = "cpu") -> Ensemble:
        if len(run_dirs) < 2:
            raise ValueError(f"an ensemble needs at least 2 runs, got {len(run_dirs)}")
        return cls([load_run(d, device) for d in run_dirs])

    def member_scores(self, data: RankingData) -> np.ndarray:
        """Raw scores [K, N] of every member."""
        return np.stack([score_data(run, data) for run in self.members])

    def score_data(self, data: RankingData) -> tuple[np.ndarray, np.ndarray]:
        """(mean [N], std [N]) of member scores, each member z-scored over `data` first:
        ranking losses leave each member's score scale and offset free."""
        s = self.member_scores(data)
        z = (s - s.mean(axis=1, keepdims=True)) / np.maximum(s.std(axis=1, keepdims=True), 1e-12)
        return z.mean(axis=0), z.std(axis=0)

    def probabilities(self, data: RankingData) -> tuple[np.ndarray, np.ndarray]:
        """(mean [N], std [N]) of the members' calibrated P(relevant)."""
        p = np.stack([run.probabilities(s) for run, s in zip(self.members, self.member_scores(data))])
        return p.mean(axis=0), p.std(axis=0)
