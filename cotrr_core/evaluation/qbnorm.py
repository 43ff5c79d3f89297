"""The QB-Norm anchor: a first stage's cosine renormalised over a bank of training queries, no training.

Bogolin et al., "Cross Modal Retrieval with Querybank Normalisation" (CVPR 2022), inverted softmax:
score(q, c) = cos(q, c) / t - logsumexp_b cos(b, c) / t over the bank b of training queries. The anchor
uses the whole bank as the paper does; t is chosen on validation nDCG@10.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from cotrr_core.data.dataset import RankingData
from cotrr_core.data.rowread import read_rows
from cotrr_core.evaluation.compare import evaluate_scores
from cotrr_core.prior import TEMPERATURES

__all__ = ["qbnorm_scores", "qbnorm_anchor"]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _bank(train: RankingData, query: str) -> np.ndarray:
    """[Q, d] the training lists' unit query vectors."""
    return _unit(read_rows(train.features[query], train.offsets[:-1]))


def qbnorm_scores(bank: np.ndarray, data: RankingData, pair: tuple[str, str], t: float) -> np.ndarray:
    """[N] inverted-softmax scores of data's candidates against `bank` [nb, d] (unit rows)."""
    query, candidate = pair
    out = np.empty(data.num_candidates)
    for start in range(0, data.num_candidates, 8192):
        rows = np.arange(start, min(start + 8192, data.num_candidates))
        c, q = _unit(read_rows(data.features[candidate], rows)), _unit(read_rows(data.features[query], rows))
        out[rows] = (c * q).sum(1) / t - logsumexp(c @ bank.T / t, axis=1)
    return out


def qbnorm_anchor(train: RankingData, val: RankingData, test: RankingData) -> dict:
    """{"t": the temperature chosen on val, "val": [N_val] scores, "test": [N_test] scores, "val_ndcg@10":
    {t: nDCG@10}} for data whose spec names a similarity pair."""
    pair = train.spec.similarity
    bank = _bank(train, pair[0])
    table = {t: float(evaluate_scores(val, qbnorm_scores(bank, val, pair, t))["ndcg@10"]) for t in TEMPERATURES}
    t = max(TEMPERATURES, key=lambda x: table[x])
    return {"t": t, "val": qbnorm_scores(bank, val, pair, t), "test": qbnorm_scores(bank, test, pair, t),
            "val_ndcg@10": table}
