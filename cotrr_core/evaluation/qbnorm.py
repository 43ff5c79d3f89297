"""The QB-Norm anchor: a first stage's cosine renormalised over a bank of training queries, no training.

Bogolin et al., "Cross Modal Retrieval with Querybank Normalisation" (CVPR 2022), inverted softmax:
score(q, c) = cos(q, c) / t - logsumexp_b cos(b, c) / t over the bank b of training queries. The anchor
uses the whole bank as the paper does; t is chosen on validation nDCG@10, where a bank entry does not count
for the image it was labelled relevant for: the model's prior makes its choices the same way
(cotrr_core/prior.py), since a gallery image discounted by its own training caption flatters small t on
lists over the training gallery and never happens to an unseen image.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from cotrr_core.data.dataset import RankingData
from cotrr_core.data.rowread import read_rows
from cotrr_core.evaluation.compare import evaluate_scores
from cotrr_core.prior import SAME_ITEM_COSINE, TEMPERATURES

__all__ = ["query_bank", "qbnorm_scores", "qbnorm_anchor"]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def query_bank(data: RankingData, pair: tuple[str, str], max_size: int | None = None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(queries [nb, d], their most relevant candidate's vector [nb, d], zeros where none is relevant) of
    the training lists (the bank of QB-Norm and of the model's prior); a seeded sample of `max_size` lists
    when there are more."""
    query, candidate = pair
    lists = np.arange(data.num_queries)
    if max_size is not None and len(lists) > max_size:
        lists = np.sort(np.random.default_rng(seed).choice(lists, max_size, replace=False))
    starts = data.offsets[lists]
    best = np.array([data.offsets[q] + int(np.argmax(data.labels[data.rows(q)])) for q in lists], dtype=np.int64)
    relevant = data.labels[best] >= data.spec.relevance_threshold
    positives = read_rows(data.features[candidate], best).astype(np.float32) * relevant[:, None]
    return read_rows(data.features[query], starts).astype(np.float32), positives


def qbnorm_scores(bank: np.ndarray, data: RankingData, pair: tuple[str, str], t: float,
                  positives: np.ndarray | None = None) -> np.ndarray:
    """[N] inverted-softmax scores of data's candidates against `bank` [nb, d] (unit rows); with `positives`
    [nb, d] (each entry's relevant image, unit rows), an entry does not count for its own image."""
    query, candidate = pair
    out = np.empty(data.num_candidates)
    for start in range(0, data.num_candidates, 8192):
        rows = np.arange(start, min(start + 8192, data.num_candidates))
        c, q = _unit(read_rows(data.features[candidate], rows)), _unit(read_rows(data.features[query], rows))
        sims = c @ bank.T
        if positives is not None:
            sims = np.where(c @ positives.T > SAME_ITEM_COSINE, -np.inf, sims)
        out[rows] = (c * q).sum(1) / t - logsumexp(sims / t, axis=1)
    return out


def qbnorm_anchor(train: RankingData, val: RankingData, test: RankingData) -> dict:
    """{"t": the temperature chosen on val (entries not counting for their own image), "val": [N_val] scores
    so, "test": [N_test] scores (the whole bank), "val_ndcg@10": {t: nDCG@10}} for data whose spec names a
    similarity pair."""
    pair = train.spec.similarity
    bank, positives = (_unit(x) for x in query_bank(train, pair))
    val_scores = {t: qbnorm_scores(bank, val, pair, t, positives) for t in TEMPERATURES}
    table = {t: float(evaluate_scores(val, s)["ndcg@10"]) for t, s in val_scores.items()}
    t = max(TEMPERATURES, key=lambda x: table[x])
    return {"t": t, "val": val_scores[t], "test": qbnorm_scores(bank, test, pair, t), "val_ndcg@10": table}
