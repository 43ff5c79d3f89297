"""Per-token feature standardisation fitted on the training split, stored as JSON."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureScaler"]


@dataclass
class FeatureScaler:
    """x -> (f(x) - mean) / std per feature, f = signed log1p when `log_transform` (raw LETOR counts)."""

    log_transform: bool = False
    mean_: dict[str, np.ndarray] | None = None
    std_: dict[str, np.ndarray] | None = None

    def _f(self, x: np.ndarray) -> np.ndarray:
        return np.sign(x) * np.log1p(np.abs(x)) if self.log_transform else x

    def fit(self, features: dict[str, np.ndarray]) -> "FeatureScaler":
        """features: token -> [N, d]."""
        self.mean_, self.std_ = {}, {}
        for k, v in features.items():
            fx = self._f(v.astype(np.float64))
            self.mean_[k] = fx.mean(axis=0)
            std = fx.std(axis=0)
            self.std_[k] = np.where(std > 1e-8, std, 1.0)  # constant features stay finite
        return self

    def transform(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.mean_ is None:
            raise RuntimeError("FeatureScaler is not fitted")
        return {k: ((self._f(v.astype(np.float64)) - self.mean_[k]) / self.std_[k]).astype(np.float32)
                for k, v in features.items()}

    def to_state(self) -> dict:
        return {"log_transform": self.log_transform, "mean": {k: v.tolist() for k, v in self.mean_.items()},
                "std": {k: v.tolist() for k, v in self.std_.items()}}

    @classmethod
    def from_state(cls, state: dict) -> "FeatureScaler":
        return cls(bool(state["log_transform"]), {k: np.asarray(v) for k, v in state["mean"].items()},
                   {k: np.asarray(v) for k, v in state["std"].items()})
