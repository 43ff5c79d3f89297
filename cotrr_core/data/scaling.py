"""Per-token feature standardisation fitted on the training split, stored as JSON.

One formula, `standardise`, serves numpy (training, offline scoring) and torch (serving, the
ONNX graph), so the model sees the same inputs on every path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cotrr_core.data.rowread import CHUNK_ROWS, iter_chunks, read_rows

__all__ = ["FeatureScaler", "signed_log1p", "standardise"]


def standardise(x: Any, mean: Any, std: Any, log_transform: bool) -> Any:
    """(f(x) - mean) / std with f = signed log1p when `log_transform`, else identity.

    x [..., d], mean [d], std [d]: all numpy arrays or all torch tensors.
    """
    return ((signed_log1p(x) if log_transform else x) - mean) / std


def signed_log1p(x: Any) -> Any:
    """sign(x) * log1p(|x|) of a numpy array or a torch tensor."""
    return np.sign(x) * np.log1p(np.abs(x)) if isinstance(x, np.ndarray) else x.sign() * x.abs().log1p()


@dataclass
class FeatureScaler:
    """x -> (f(x) - mean) / std per feature, f = signed log1p when `log_transform` (raw LETOR counts)."""

    log_transform: bool = False
    mean_: dict[str, np.ndarray] | None = None
    std_: dict[str, np.ndarray] | None = None

    def fit(self, features: dict[str, np.ndarray]) -> "FeatureScaler":
        """features: token -> [N, d] (in memory or memmapped; read in row chunks, so memory stays flat)."""
        self.mean_, self.std_ = {}, {}
        for k, v in features.items():
            self.mean_[k], std = self._moments(v)
            self.std_[k] = np.where(std > 1e-8, std, 1.0)  # constant features stay finite
        return self

    def _moments(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean [d] and std [d] of f(v) in float64; two passes over row chunks when v is large."""
        if len(v) <= CHUNK_ROWS:
            fx = standardise(read_rows(v, slice(None)).astype(np.float64), 0.0, 1.0, self.log_transform)
            return fx.mean(axis=0), fx.std(axis=0)
        f = lambda c: standardise(c.astype(np.float64), 0.0, 1.0, self.log_transform)  # noqa: E731
        mean = sum(f(c).sum(axis=0) for c in iter_chunks(v)) / len(v)
        var = sum(((f(c) - mean) ** 2).sum(axis=0) for c in iter_chunks(v)) / len(v)
        return mean, np.sqrt(var)

    def transform(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """token -> [..., d] raw features to float32 standardised features (computed in float64)."""
        self._check_fitted()
        return {k: standardise(v.astype(np.float64), self.mean_[k], self.std_[k], self.log_transform)
                .astype(np.float32) for k, v in features.items()}

    def tensors(self, device: Any = "cpu") -> dict[str, tuple[Any, Any]]:
        """token -> (mean [d], std [d]) as float32 torch tensors on `device`, for `standardise`."""
        import torch  # lazily: the data layer must not pull in torch

        self._check_fitted()
        return {k: (torch.as_tensor(self.mean_[k], dtype=torch.float32, device=device),
                    torch.as_tensor(self.std_[k], dtype=torch.float32, device=device)) for k in self.mean_}

    def _check_fitted(self) -> None:
        if self.mean_ is None:
            raise RuntimeError("FeatureScaler is not fitted")

    def to_state(self) -> dict:
        return {"log_transform": self.log_transform, "mean": {k: v.tolist() for k, v in self.mean_.items()},
                "std": {k: v.tolist() for k, v in self.std_.items()}}

    @classmethod
    def from_state(cls, state: dict) -> "FeatureScaler":
        return cls(bool(state["log_transform"]), {k: np.asarray(v) for k, v in state["mean"].items()},
                   {k: np.asarray(v) for k, v in state["std"].items()})
