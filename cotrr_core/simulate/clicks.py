"""Click models: turn the graded labels of a served list into simulated clicks.

Attractiveness of a result with grade g (the same gain as nDCG):
    a(g) = eps + (1 - 2 eps) * (2**g - 1) / (2**gmax - 1)
so grade 0 still gets an occasional click (eps) and the best grade is never a
sure click (1 - eps). Compliance scores in [0, 1] use the same formula with
gmax = 1, i.e. a(s) = eps + (1 - 2 eps) * (2**s - 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["attractiveness", "cascade_clicks", "pbm_clicks", "ClickModel"]


def attractiveness(labels: np.ndarray, gmax: float = 1.0, eps: float = 0.05) -> np.ndarray:
    """Click probability given examination, [n, L] float in [eps, 1 - eps]."""
    g = np.clip(np.asarray(labels, dtype=np.float64), 0.0, gmax)
    gain = (np.exp2(g) - 1.0) / (np.exp2(gmax) - 1.0)
    return eps + (1.0 - 2.0 * eps) * gain


def cascade_clicks(rel_probs: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cascade model: scan top-down, click with prob rel_probs, stop after the first click.

    rel_probs, mask: [n, L]. Returns clicks [n, L] bool with at most one click per row.
    """
    would_click = (rng.random(rel_probs.shape) < rel_probs) & mask
    first = np.argmax(would_click, axis=1)
    clicks = np.zeros_like(would_click)
    rows = np.flatnonzero(would_click.any(axis=1))
    clicks[rows, first[rows]] = True
    return clicks


def pbm_clicks(rel_probs: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
               eta: float = 1.0) -> np.ndarray:
    """Position-based model: P(click at rank r) = (1 / r**eta) * rel_probs, independently.

    rel_probs, mask: [n, L]. Returns clicks [n, L] bool (several clicks per row possible).
    """
    ranks = np.arange(1, rel_probs.shape[1] + 1, dtype=np.float64)
    examine = ranks ** -float(eta)
    return (rng.random(rel_probs.shape) < rel_probs * examine) & mask


@dataclass(frozen=True)
class ClickModel:
    """A click model and its parameters (asdict() is what the app shows)."""

    name: Literal["cascade", "pbm"] = "cascade"
    gmax: float = 1.0  # top grade of the labels (1 for compliance scores in [0, 1])
    eps: float = 0.05  # attractiveness floor / ceiling margin
    eta: float = 1.0  # PBM examination decay 1 / rank**eta

    def __post_init__(self) -> None:
        if self.name not in ("cascade", "pbm"):
            raise ValueError(f"ClickModel.name: {self.name!r} is not one of ['cascade', 'pbm']")
        if not self.gmax > 0:
            raise ValueError(f"ClickModel.gmax: must be > 0, got {self.gmax}")
        if not 0.0 <= self.eps < 0.5:
            raise ValueError(f"ClickModel.eps: must be in [0, 0.5), got {self.eps}")
        if not self.eta >= 0:
            raise ValueError(f"ClickModel.eta: must be >= 0, got {self.eta}")

    def params(self) -> dict[str, Any]:
        return asdict(self)

    def attractiveness(self, labels: np.ndarray) -> np.ndarray:
        return attractiveness(labels, self.gmax, self.eps)

    def clicks(self, labels: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Simulated clicks [n, L] bool for served lists of graded labels [n, L]."""
        probs = self.attractiveness(labels)
        if self.name == "cascade":
            return cascade_clicks(probs, mask, rng)
        return pbm_clicks(probs, mask, rng, self.eta)

    def ctr(self, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Exact P(at least one click) per row [n]; lets tests know the true CTR."""
        probs = np.where(mask, self.attractiveness(labels), 0.0)
        if self.name == "pbm":
            probs = probs * np.arange(1, probs.shape[1] + 1, dtype=np.float64) ** -float(self.eta)
        return 1.0 - np.prod(1.0 - probs, axis=1)
