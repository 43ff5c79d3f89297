"""Calibration metrics for P(relevant) probabilities.

Inputs are ``probs [N]`` in [0, 1] (predicted probability that a candidate is
relevant) and ``y [N]`` in {0, 1} (observed relevance). Every ECE-like quantity
here is the *positive-class* calibration error of P(relevant), i.e. bins are
formed on ``probs`` itself and compared with the frequency of ``y == 1`` -- not
the top-label (max-class confidence) ECE common in classification papers.

Binning conventions (identical to ``sklearn.calibration.calibration_curve``):
``"uniform"`` uses ``n_bins`` equal-width bins on [0, 1]; a value lying exactly
on an inner edge goes to the upper bin, and 1.0 falls in the last (closed) bin.
``"quantile"`` uses edges at the empirical quantiles of ``probs`` (equal mass);
tied probabilities always share a bin, so with many ties some bins are empty.
Empty bins are dropped everywhere (they carry zero weight).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Literal

import numpy as np

Strategy = Literal["uniform", "quantile"]

__all__ = [
    "ece",
    "adaptive_ece",
    "mce",
    "brier",
    "log_loss",
    "reliability_curve",
    "wilson_interval",
    "risk_coverage",
]


def _as_1d(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    return arr


def _validate(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = _as_1d(probs, "probs")
    t = _as_1d(y, "y")
    if p.shape != t.shape:
        raise ValueError(f"probs and y must have the same length, got {p.size} and {t.size}")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("probs must lie in [0, 1]")
    if not np.isin(t, (0.0, 1.0)).all():
        raise ValueError("y must be binary (0/1)")
    return p, t


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def _edges(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        return np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def _binned(p: np.ndarray, t: np.ndarray, n_bins: int, strategy: str) -> dict[str, np.ndarray]:
    """Per non-empty bin: lower/upper edge, count, mean prob, mean y."""
    n_bins = _check_n_bins(n_bins)
    edges = _edges(p, n_bins, strategy)
    ids = np.searchsorted(edges[1:-1], p, side="right")
    count = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=t, minlength=n_bins)
    keep = count > 0
    c = count[keep]
    return {
        "bin_lower": edges[:-1][keep],
        "bin_upper": edges[1:][keep],
        "count": c,
        "mean_confidence": sum_p[keep] / c,
        "observed_frequency": sum_y[keep] / c,
    }


def _gaps(probs, y, n_bins: int, strategy: str) -> tuple[np.ndarray, np.ndarray]:
    p, t = _validate(probs, y)
    b = _binned(p, t, n_bins, strategy)
    return np.abs(b["mean_confidence"] - b["observed_frequency"]), b["count"] / p.size


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Positive-class ECE of P(relevant) with equal-width bins on [0, 1].

    probs, y: [N]. Sum over non-empty bins of (bin share) * |mean prob - mean y|.
    """
    gap, share = _gaps(probs, y, n_bins, "uniform")
    return float((gap * share).sum())


def adaptive_ece(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Positive-class ECE of P(relevant) with equal-mass (quantile-edge) bins.

    probs, y: [N]. Tied probabilities share a bin, so bins can hold unequal mass.
    """
    gap, share = _gaps(probs, y, n_bins, "quantile")
    return float((gap * share).sum())


def mce(probs: np.ndarray, y: np.ndarray, n_bins: int = 15, strategy: Strategy = "uniform") -> float:
    """Positive-class maximum calibration error: max |mean prob - mean y| over non-empty bins."""
    gap, _ = _gaps(probs, y, n_bins, strategy)
    return float(gap.max())


def brier(probs: np.ndarray, y: np.ndarray) -> float:
    """Brier score mean((probs - y)**2) for probs, y: [N]."""
    p, t = _validate(probs, y)
    return float(np.mean((p - t) ** 2))


def log_loss(probs: np.ndarray, y: np.ndarray, eps: float = 1e-7) -> float:
    """Binary cross-entropy with probs clipped to [eps, 1 - eps]; probs, y: [N]."""
    p, t = _validate(probs, y)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"eps must be in [0, 0.5), got {eps}")
    p = np.clip(p, eps, 1.0 - eps)
    with np.errstate(divide="ignore"):
        # Only the term selected by y is evaluated, so eps=0 with p=y gives 0 not NaN.
        ll = np.where(t == 1.0, np.log(p), np.log1p(-p))
    return float(-ll.mean())


def wilson_interval(
    successes: np.ndarray, n: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion; arrays broadcast, n > 0."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    if (n <= 0).any() or (k < 0).any() or (k > n).any():
        raise ValueError("need n > 0 and 0 <= successes <= n")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    phat = k / n
    denom = 1.0 + z**2 / n
    center = (phat + z**2 / (2.0 * n)) / denom
    half = z / denom * np.sqrt(phat * (1.0 - phat) / n + z**2 / (4.0 * n**2))
    return np.clip(center - half, 0.0, 1.0), np.clip(center + half, 0.0, 1.0)


def reliability_curve(
    probs: np.ndarray,
    y: np.ndarray,
    n_bins: int = 15,
    strategy: Strategy = "uniform",
    confidence: float = 0.95,
) -> dict[str, np.ndarray]:
    """Reliability diagram data per NON-EMPTY bin (arrays of length B <= n_bins).

    Keys: "bin_lower", "bin_upper", "mean_confidence", "observed_frequency",
    "count", "ci_low", "ci_high" (Wilson score interval for the frequency).
    """
    p, t = _validate(probs, y)
    b = _binned(p, t, n_bins, strategy)
    lo, hi = wilson_interval(b["observed_frequency"] * b["count"], b["count"], confidence)
    return {**b, "ci_low": lo, "ci_high": hi}


def _risk_curve(sorted_errors: np.ndarray) -> np.ndarray:
    return np.cumsum(sorted_errors) / np.arange(1, sorted_errors.size + 1)


def risk_coverage(errors: np.ndarray, uncertainty: np.ndarray) -> dict:
    """Risk-coverage curve for selective prediction.

    errors, uncertainty: [N]. Candidates are kept most-confident first (stable
    sort on increasing uncertainty, so ties keep input order). Returns
    "coverage" [N] (i / N), "risk" [N] (mean error of the kept share), "aurc"
    (mean of risk), "random_aurc" (mean error: the expected AURC of a random
    order) and "oracle_aurc" (AURC when sorted by the error itself).
    """
    e = _as_1d(errors, "errors")
    u = _as_1d(uncertainty, "uncertainty")
    if e.shape != u.shape:
        raise ValueError(f"errors and uncertainty must have the same length, got {e.size} and {u.size}")
    n = e.size
    risk = _risk_curve(e[np.argsort(u, kind="stable")])
    return {
        "coverage": np.arange(1, n + 1) / n,
        "risk": risk,
        "aurc": float(risk.mean()),
        "random_aurc": float(e.mean()),
        "oracle_aurc": float(_risk_curve(np.sort(e)).mean()),
    }
