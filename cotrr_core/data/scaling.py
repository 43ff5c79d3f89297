"""Per-token feature statistics fitted on the training split, stored as JSON (the run's scaler.json).

The data layer only FITS them: the model applies them (model.Standardise holds them as buffers in its
state dict), so training, offline scoring, serving and ONNX export standardise in one place.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cotrr_core.data.rowread import CHUNK_ROWS, iter_chunks, read_rows

__all__ = ["FeatureScaler", "signed_log1p"]


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """sign(x) * log1p(|x|) (model.signed_log1p is the same for tensors)."""
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class FeatureScaler:
    """mean and std per feature of f(x), f = signed log1p when `log_transform` (raw LETOR counts); the model
    standardises with them: (f(x) - mean) / std."""

    log_transform: bool = False
    mean_: dict[str, np.ndarray] | None = None
    std_: dict[str, np.ndarray] | None = None

    def fit(self, features: dict[str, np.ndarray]) -> FeatureScaler:
        """features: token -> [N, d] (in memory or memmapped; read in row chunks, so memory stays flat)."""
        self.mean_, self.std_ = {}, {}
        for k, v in features.items():
            self.mean_[k], std = self._moments(v)
            self.std_[k] = np.where(std > 1e-8, std, 1.0)  # constant features stay finite
        return self

    def _moments(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean [d] and std [d] of f(v) in float64; two passes over row chunks when v is large."""
        if len(v) <= CHUNK_ROWS:
            fx = self._f(read_rows(v, slice(None)))
            return fx.mean(axis=0), fx.std(axis=0)
        f = self._f
        mean = sum(f(c).sum(axis=0) for c in iter_chunks(v)) / len(v)
        var = sum(((f(c) - mean) ** 2).sum(axis=0) for c in iter_chunks(v)) / len(v)
        return mean, np.sqrt(var)

    def _f(self, x: np.ndarray) -> np.ndarray:
        """f(x) in float64."""
        x = x.astype(np.float64)
        return signed_log1p(x) if self.log_transform else x

    def _check_fitted(self) -> None:
        if self.mean_ is None:
            raise RuntimeError("FeatureScaler is not fitted")

    def to_state(self) -> dict:
        """{log_transform, mean: {token: [d]}, std: {token: [d]}}: scaler.json, and what
        CoTRRModel.set_standardisation takes."""
        self._check_fitted()
        return {"log_transform": self.log_transform, "mean": {k: v.tolist() for k, v in self.mean_.items()},
                "std": {k: v.tolist() for k, v in self.std_.items()}}

    @classmethod
    def from_state(cls, state: dict) -> FeatureScaler:
        return cls(bool(state["log_transform"]), {k: np.asarray(v) for k, v in state["mean"].items()},
                   {k: np.asarray(v) for k, v in state["std"].items()})
