"""The prior's bank and the choices made on validation: which similarity feature is the prior, and which
mode a run serves (the network's residual on the prior, the prior alone, or the first-stage order)."""
from __future__ import annotations

import numpy as np
import torch

from cotrr_core.data.dataset import PaddedLists, RankingData
from cotrr_core.evaluation.compare import evaluate_scores
from cotrr_core.evaluation.qbnorm import query_bank
from cotrr_core.model import CoTRRModel
from cotrr_core.prior import MODES, TEMPERATURES
from cotrr_core.scoring import score_padded

__all__ = ["set_query_bank", "choose_prior_column", "choose_mode", "MAX_BANK"]

MAX_BANK = 4096  # bank entries: a serving forward computes one cosine per (candidate, entry)
COLUMNS = ("cosine", *(f"qbnorm@{t}" for t in TEMPERATURES))


def set_query_bank(model: CoTRRModel, train: RankingData, seed: int = 0) -> int:
    """Give a model with a similarity pair its bank of training queries; returns the bank size (0: none)."""
    if model.prior.similarity is None:
        return 0
    queries, positives = query_bank(train, model.prior.pair, MAX_BANK, seed)
    model.prior.similarity.set_bank(torch.from_numpy(queries), torch.from_numpy(positives))
    model.prior.similarity.exclude_positives.fill_(True)  # until the run is chosen (choose_mode)
    return len(queries)


def _scored_queries(data: RankingData) -> int:
    """Queries with a relevant candidate: those nDCG@10 averages over."""
    return int((np.add.reduceat(data.relevant(), data.offsets[:-1]) > 0).sum()) if data.num_queries else 0


def _val_ndcg(model: CoTRRModel, padded: PaddedLists, data: RankingData, device: torch.device) -> float:
    return float(evaluate_scores(data, score_padded(model, padded, device)[padded.mask])["ndcg@10"])


def choose_prior_column(model: CoTRRModel, splits: list[tuple[PaddedLists, RankingData]],
                        device: torch.device) -> dict[str, float]:
    """Keep the similarity feature whose order (as the prior alone) has the best nDCG@10 over `splits` (the
    training and validation lists: the prior fits nothing, and a small validation split alone picks its
    temperature by noise); ties: the first, the plain cosine. Returns {feature: nDCG@10}."""
    if model.prior.similarity is None:
        return {}
    mode = model.prior.mode_name
    model.prior.set_mode("prior")
    table = {}
    weights = [max(_scored_queries(d), 1) for _, d in splits]
    for i, name in enumerate(COLUMNS):
        model.prior.column.fill_(i)
        table[name] = float(np.average([_val_ndcg(model, p, d, device) for p, d in splits], weights=weights))
    model.prior.column.fill_(int(np.argmax(list(table.values()))))
    model.prior.set_mode(mode)
    return table


def choose_mode(model: CoTRRModel, padded: PaddedLists, val: RankingData, device: torch.device,
                guard: bool = True) -> dict:
    """Serve the mode with the best validation nDCG@10; a tie goes to the simpler (first stage, then the
    prior), so a run never ranks below the first stage on validation. Without `guard` the network is served
    whatever the table says (a debugging run). Returns the table and the choice."""
    table = {}
    for mode in MODES:
        if mode == "prior" and model.prior.source is None:
            continue
        model.prior.set_mode(mode)
        table[mode] = _val_ndcg(model, padded, val, device)
    chosen = max(reversed(list(table)), key=lambda m: table[m]) if guard else "network"  # ties: the simplest
    model.prior.set_mode(chosen)
    if model.prior.similarity is not None:
        model.prior.similarity.exclude_positives.fill_(False)  # served: the whole bank counts
    return {"mode": chosen, "val_ndcg@10": table, "prior": model.prior.source,
            "prior_feature": COLUMNS[int(model.prior.column)] if model.prior.similarity is not None else None}
