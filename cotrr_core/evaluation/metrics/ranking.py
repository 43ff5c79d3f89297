"""Per-query ranking metrics on padded arrays.

Inputs are padded: ``labels [Q, L]`` (graded relevance, e.g. a LETOR grade 0..4
or a compliance score in [0, 1]), ``scores [Q, L]`` and ``mask [Q, L]`` (bool,
True = real candidate). Padding positions are ignored completely, whatever
their label or score (they may even be NaN). 1-D inputs are treated as a single
query (``Q == 1``); ``mask=None`` means every position is real.

Ordering: candidates are sorted by descending score with a *stable* sort, so
ties are broken by original index (earlier index ranks first); padding always
goes last.

A candidate is *relevant* when ``label >= relevance_threshold`` (1.0 suits
LETOR grades, 0.8 suits compliance scores).

Queries with no relevant candidate (including empty queries) follow the
``no_relevant`` policy, applied identically by every metric so that all
metrics are averaged over the same set of queries:

* ``"exclude"`` (default): the metric is NaN; ``summarize`` uses nanmean.
* ``"one"``: the metric is 1.0 (LightGBM / allRank convention for nDCG).
* ``"zero"``: the metric is 0.0 (scikit-learn's ``ndcg_score`` convention).

nDCG uses gain ``2**label - 1`` and discount ``1 / log2(rank + 1)``; the ideal
DCG sorts all real candidates' labels of the query, truncated at ``k``. If the
ideal DCG is 0 although a relevant candidate exists (only possible with a
threshold <= 0), the query also follows the ``no_relevant`` policy.

``precision_at_k`` divides by ``k`` (short lists are penalised), whereas
``compliance_at_k`` divides by ``min(k, n)`` (the share of what was shown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

NoRelevant = Literal["exclude", "one", "zero"]
_POLICY_VALUE = {"exclude": np.nan, "one": 1.0, "zero": 0.0}

__all__ = [
    "NoRelevant", "rank_order", "ndcg_at_k", "compliance_at_k", "precision_at_k",
    "reciprocal_rank", "average_precision", "evaluate", "summarize", "paired_bootstrap_ci",
]


@dataclass(frozen=True)
class _Ranked:
    """Rows re-ordered by rank: ``labels``/``rel`` are [Q, L], padding last."""

    labels: np.ndarray  # sorted labels, 0 at padding
    mask: np.ndarray  # sorted mask (a True prefix of length n)
    rel: np.ndarray  # sorted relevance indicator (False at padding)
    n: np.ndarray  # [Q] number of real candidates
    n_rel: np.ndarray  # [Q] number of relevant candidates


def _as_2d(
    labels: np.ndarray | None, scores: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        scores = scores[None, :]
    if scores.ndim != 2:
        raise ValueError(f"scores must be 1-D or 2-D [Q, L], got shape {scores.shape}")
    if mask is None:
        mask = np.ones(scores.shape, dtype=bool)
    else:
        mask = np.asarray(mask)
        if mask.ndim == 1:
            mask = mask[None, :]
        if mask.dtype != bool:
            if not np.isin(mask, (0, 1)).all():
                raise ValueError("mask must be boolean (or 0/1)")
            mask = mask.astype(bool)
    if mask.shape != scores.shape:
        raise ValueError(f"mask shape {mask.shape} != scores shape {scores.shape}")
    if not np.isfinite(scores[mask]).all():
        raise ValueError("scores of real (masked-in) candidates must be finite")
    if labels is not None:
        labels = np.asarray(labels, dtype=float)
        if labels.ndim == 1:
            labels = labels[None, :]
        if labels.shape != scores.shape:
            raise ValueError(f"labels shape {labels.shape} != scores shape {scores.shape}")
        if not np.isfinite(labels[mask]).all():
            raise ValueError("labels of real (masked-in) candidates must be finite")
    return labels, scores, mask


def _check_policy(no_relevant: str) -> float:
    if no_relevant not in _POLICY_VALUE:
        raise ValueError(f"no_relevant must be one of {sorted(_POLICY_VALUE)}, got {no_relevant!r}")
    return _POLICY_VALUE[no_relevant]


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _order(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # lexsort is stable; last key is primary: real candidates first, then -score.
    neg = np.where(mask, -scores, 0.0)
    return np.lexsort((neg, ~mask), axis=-1)


def rank_order(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Indices that sort each row by descending score (stable), padding last.

    scores, mask: [Q, L] (or [L]) -> int array of the same shape, where
    ``out[q, r]`` is the original position of the candidate ranked ``r``.
    """
    one_d = np.ndim(scores) == 1
    _, s, m = _as_2d(None, scores, mask)
    order = _order(s, m)
    return order[0] if one_d else order


def _prepare(labels, scores, mask, relevance_threshold: float) -> _Ranked:
    lab, s, m = _as_2d(labels, scores, mask)
    lab = np.where(m, lab, 0.0)
    order = _order(s, m)
    sl = np.take_along_axis(lab, order, axis=1)
    sm = np.take_along_axis(m, order, axis=1)
    srel = sm & (sl >= relevance_threshold)
    return _Ranked(labels=sl, mask=sm, rel=srel, n=m.sum(axis=1), n_rel=srel.sum(axis=1))


def _apply_policy(values: np.ndarray, undefined: np.ndarray, fill: float) -> np.ndarray:
    out = np.asarray(values, dtype=float).copy()
    out[undefined] = fill
    return out


def _top_k(r: _Ranked, k: int) -> np.ndarray:
    """[Q, L] bool: real candidates within the top k."""
    return r.mask & (np.arange(r.mask.shape[1]) < k)


def _ndcg(r: _Ranked, k: int, fill: float) -> np.ndarray:
    L = r.mask.shape[1]
    disc = 1.0 / np.log2(np.arange(2, L + 2))
    in_k = np.arange(L) < k
    gains = np.where(r.mask, np.exp2(r.labels) - 1.0, 0.0)
    dcg = (gains * disc * in_k).sum(axis=1)
    ideal = -np.sort(-gains, axis=1)  # padding has gain 0; sorts after positive gains
    idcg = (ideal * disc * in_k).sum(axis=1)
    undefined = (r.n_rel == 0) | (idcg <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = dcg / idcg
    return _apply_policy(vals, undefined, fill)


def _compliance(r: _Ranked, k: int, fill: float) -> np.ndarray:
    hits = (r.rel & _top_k(r, k)).sum(axis=1)
    denom = np.minimum(k, r.n)
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = hits / denom
    return _apply_policy(vals, r.n_rel == 0, fill)


def _precision(r: _Ranked, k: int, fill: float) -> np.ndarray:
    hits = (r.rel & _top_k(r, k)).sum(axis=1)
    return _apply_policy(hits / k, r.n_rel == 0, fill)


def _rr(r: _Ranked, fill: float) -> np.ndarray:
    first = np.argmax(r.rel, axis=1)  # 0 when no relevant; overwritten by policy
    return _apply_policy(1.0 / (first + 1.0), r.n_rel == 0, fill)


def _ap(r: _Ranked, fill: float) -> np.ndarray:
    ranks = np.arange(1, r.rel.shape[1] + 1)
    prec = np.cumsum(r.rel, axis=1) / ranks
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = (prec * r.rel).sum(axis=1) / r.n_rel
    return _apply_policy(vals, r.n_rel == 0, fill)


def ndcg_at_k(
    labels: np.ndarray, scores: np.ndarray, mask: np.ndarray | None, k: int,
    relevance_threshold: float = 1.0, no_relevant: NoRelevant = "exclude",
) -> np.ndarray:
    """nDCG@k per query -> [Q] (gain 2**label - 1, IDCG over the whole query)."""
    fill, k = _check_policy(no_relevant), _check_k(k)
    return _ndcg(_prepare(labels, scores, mask, relevance_threshold), k, fill)


def compliance_at_k(
    labels: np.ndarray, scores: np.ndarray, mask: np.ndarray | None, k: int,
    relevance_threshold: float = 1.0, no_relevant: NoRelevant = "exclude",
) -> np.ndarray:
    """Share of the top-min(k, n) candidates that are relevant -> [Q]."""
    fill, k = _check_policy(no_relevant), _check_k(k)
    return _compliance(_prepare(labels, scores, mask, relevance_threshold), k, fill)


def precision_at_k(
    labels: np.ndarray, scores: np.ndarray, mask: np.ndarray | None, k: int,
    relevance_threshold: float = 1.0, no_relevant: NoRelevant = "exclude",
) -> np.ndarray:
    """Relevant candidates in the top k divided by k (not min(k, n)) -> [Q]."""
    fill, k = _check_policy(no_relevant), _check_k(k)
    return _precision(_prepare(labels, scores, mask, relevance_threshold), k, fill)


def reciprocal_rank(
    labels: np.ndarray, scores: np.ndarray, mask: np.ndarray | None,
    relevance_threshold: float = 1.0, no_relevant: NoRelevant = "exclude",
) -> np.ndarray:
    """1 / rank of the first relevant candidate (MRR per query) -> [Q]."""
    fill = _check_policy(no_relevant)
    return _rr(_prepare(labels, scores, mask, relevance_threshold), fill)


def average_precision(
    labels: np.ndarray, scores: np.ndarray, mask: np.ndarray | None,
    relevance_threshold: float = 1.0, no_relevant: NoRelevant = "exclude",
) -> np.ndarray:
    """Mean precision at each relevant position over #relevant (MAP per query) -> [Q]."""
    fill = _check_policy(no_relevant)
    return _ap(_prepare(labels, scores, mask, relevance_threshold), fill)


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    mask: np.ndarray | None = None,
    ks: tuple[int, ...] = (1, 3, 5, 10),
    relevance_threshold: float = 1.0,
    no_relevant: NoRelevant = "exclude",
) -> dict[str, np.ndarray]:
    """All metrics per query: keys "ndcg@k", "c@k", "p@k" for k in ks, "mrr", "map"; values [Q]."""
    fill = _check_policy(no_relevant)
    ks = tuple(_check_k(k) for k in ks)
    r = _prepare(labels, scores, mask, relevance_threshold)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"ndcg@{k}"] = _ndcg(r, k, fill)
    for k in ks:
        out[f"c@{k}"] = _compliance(r, k, fill)
    for k in ks:
        out[f"p@{k}"] = _precision(r, k, fill)
    out["mrr"] = _rr(r, fill)
    out["map"] = _ap(r, fill)
    return out


def summarize(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    """nanmean of each per-query array, plus "queries" = #queries finite in every metric."""
    out: dict[str, float] = {}
    valid: np.ndarray | None = None
    for key, vals in per_query.items():
        v = np.asarray(vals, dtype=float)
        fin = np.isfinite(v)
        out[key] = float(v[fin].mean()) if fin.any() else float("nan")
        valid = fin if valid is None else valid & fin
    out["queries"] = int(valid.sum()) if valid is not None else 0
    return out


def paired_bootstrap_ci(
    a: np.ndarray,
    b: np.ndarray,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int | np.random.Generator = 0,
) -> dict:
    """Paired bootstrap over queries for mean(a - b).

    a, b: [Q] per-query metric values; pairs with a NaN on either side are
    dropped. Returns {"diff", "lo", "hi" (percentile CI at level 1 - alpha),
    "n" (pairs used), "p_value"}. The two-sided p-value uses the bootstrap
    distribution shifted to the null (mean 0):
    p = (1 + #{|d* - diff| >= |diff|}) / (1 + n_boot).
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length, got {a.size} and {b.size}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    n = d.size
    if n == 0:
        raise ValueError("no query is valid (finite) in both a and b")
    rng = np.random.default_rng(seed)
    diff = float(d.mean())
    # Chunk the boots so the [boots, n] index matrix stays ~<= 4M entries.
    chunk = max(1, min(n_boot, 4_000_000 // n))
    sizes = [min(chunk, n_boot - start) for start in range(0, n_boot, chunk)]
    means = np.concatenate([d[rng.integers(0, n, size=(m, n))].mean(axis=1) for m in sizes])
    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    # Small tolerance so exact-zero differences (identical a, b) count as extreme.
    extreme = np.abs(means - diff) >= abs(diff) - 1e-12
    p_value = (1.0 + extreme.sum()) / (1.0 + n_boot)
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "n": int(n), "p_value": float(p_value)}
