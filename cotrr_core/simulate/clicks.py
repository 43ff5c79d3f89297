"""Click models: turn the graded labels of a served list into simulated clicks.

Attractiveness of a result with grade g (the same gain as nDCG):
    a(g) = eps + (1 - 2 eps) * (2**g - 1) / (2**gmax - 1)
so grade 0 still gets an occasional click (eps) and the best grade is never a
sure click (1 - eps). Compliance scores in [0, 1] use the same formula with
gmax = 1, i.e. a(s) = eps + (1 - 2 eps) * (2**s - 1).

Note: with patience 1 (the plain cascade) P(at least one click) = 1 - prod(1 - a)
does not depend on the order, so a reranking of the same candidates cannot move
CTR; it moves which result gets clicked (success). patience < 1 (the user may
give up after each skipped result) or the PBM make CTR order-sensitive too.
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


def cascade_clicks(rel_probs: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                   patience: float = 1.0) -> np.ndarray:
    """Cascade model: scan top-down, click with prob rel_probs, stop after the first click;
    after a skipped result go on to the next with prob `patience` (1: scan to the end).

    rel_probs, mask: [n, L]. Returns clicks [n, L] bool with at most one click per row.
    """
    would_click = (rng.random(rel_probs.shape) < rel_probs) & mask
    if patience < 1.0:
        goes_on = rng.random(rel_probs.shape) < patience
        examined = np.logical_and.accumulate(np.concatenate([np.ones_like(goes_on[:, :1]), goes_on[:, :-1]],
                                                            axis=1), axis=1)
        would_click &= examined
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
    patience: float = 1.0  # cascade: P(look at the next result after skipping one)
    depth: int | None = 10  # results shown (one page); nothing below is examined. None: the whole list

    def __post_init__(self) -> None:
        if self.name not in ("cascade", "pbm"):
            raise ValueError(f"ClickModel.name: {self.name!r} is not one of ['cascade', 'pbm']")
        if not self.gmax > 0:
            raise ValueError(f"ClickModel.gmax: must be > 0, got {self.gmax}")
        if not 0.0 <= self.eps < 0.5:
            raise ValueError(f"ClickModel.eps: must be in [0, 0.5), got {self.eps}")
        if not self.eta >= 0:
            raise ValueError(f"ClickModel.eta: must be >= 0, got {self.eta}")
        if not 0.0 < self.patience <= 1.0:
            raise ValueError(f"ClickModel.patience: must be in (0, 1], got {self.patience}")
        if self.depth is not None and self.depth < 1:
            raise ValueError(f"ClickModel.depth: must be >= 1 or None, got {self.depth}")

    def shown(self, mask: np.ndarray) -> np.ndarray:
        """[n, L] the real results on the page: the mask cut at `depth`."""
        mask = np.asarray(mask, dtype=bool)
        return mask if self.depth is None else mask & (np.arange(mask.shape[1]) < self.depth)

    def params(self) -> dict[str, Any]:
        return asdict(self)

    def attractiveness(self, labels: np.ndarray) -> np.ndarray:
        return attractiveness(labels, self.gmax, self.eps)

    def clicks(self, labels: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Simulated clicks [n, L] bool for served lists of graded labels [n, L]."""
        probs = self.attractiveness(labels)
        mask = self.shown(mask)
        if self.name == "cascade":
            return cascade_clicks(probs, mask, rng, self.patience)
        return pbm_clicks(probs, mask, rng, self.eta)

    def ctr(self, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Exact P(at least one click) per row [n]; lets tests know the true CTR."""
        probs = np.where(self.shown(mask), self.attractiveness(labels), 0.0)
        ranks = np.arange(probs.shape[1], dtype=np.float64)
        if self.name == "pbm":
            return 1.0 - np.prod(1.0 - probs * (ranks + 1) ** -float(self.eta), axis=1)
        # P(reach rank r without a click) = prod_{j<r} (1 - p_j) * patience**r
        reach = np.cumprod(np.concatenate([np.ones_like(probs[:, :1]), (1.0 - probs[:, :-1]) * self.patience],
                                          axis=1), axis=1)
        return (reach * probs).sum(axis=1)
