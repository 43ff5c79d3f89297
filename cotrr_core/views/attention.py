"""Attention maps, dataset-level attention by relevance, and token ablation for a loaded run.

All numbers come from running the run's model on real lists. Attention weights show where
the model routed information; they are not an explanation of its decisions (ablation, which
changes the input and measures the output, is the more direct test).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats

from cotrr_core.artifacts import LoadedRun
from cotrr_core.data.dataset import RankingData
from cotrr_core.evaluation.compare import original_scores, per_query_metrics, rank_in_list
from cotrr_core.prior import SIMILARITY_TOKEN
from cotrr_core.ragged import Ragged
from cotrr_core.scoring import scaled_padded, score_padded

__all__ = ["AttentionMaps", "attention_maps", "DatasetAttention", "attention_by_relevance",
           "AblationResult", "token_ablation", "ablation_over_queries"]


@dataclass
class AttentionMaps:
    """One list's attention. token: [L, layers, heads, T, T] (row = query token, sums to 1);
    list: [list_layers, heads, L, L] or None when the run has no list-context block."""

    query: str
    token_names: list[str]
    candidate_ids: list[str]
    relevant: np.ndarray  # [L] bool
    scores: np.ndarray  # [L]
    token: np.ndarray
    list: np.ndarray | None

    @property
    def layers(self) -> int:
        return self.token.shape[1]

    @property
    def heads(self) -> int:
        return self.token.shape[2]

    def token_matrix(self, candidate: int, layer: int | None = None, head: int | None = None) -> np.ndarray:
        """[T, T] for one candidate; layer/head None = average over layers/heads."""
        m = self.token[candidate]
        m = m.mean(axis=0) if layer is None else m[layer]
        return m.mean(axis=0) if head is None else m[head]

    def list_matrix(self, layer: int = 0, head: int | None = None) -> np.ndarray:
        """[L, L] candidate-to-candidate attention; head None = head average."""
        if self.list is None:
            raise ValueError("this run has no list-context block (model.list_context is off)")
        m = self.list[layer]
        return m.mean(axis=0) if head is None else m[head]

    def token_frame(self, candidate: int, layer: int | None = None, head: int | None = None) -> pd.DataFrame:
        """Long table (from_token, to_token, weight) of token_matrix, for download."""
        m = self.token_matrix(candidate, layer, head)
        names = self.token_names
        return pd.DataFrame([{"from_token": names[i], "to_token": names[j], "weight": float(m[i, j])}
                             for i in range(len(names)) for j in range(len(names))])


@torch.inference_mode()
def attention_maps(run: LoadedRun, data: RankingData, q: int) -> AttentionMaps:
    """Run the model on list `q` with explicit attention and return every map."""
    padded = scaled_padded(run, data, [q])
    tokens, mask, _ = padded.batch(slice(None), run.device)
    run.model.eval()
    scores, maps = run.model(tokens, mask, return_attention=True)
    rows = data.rows(q)
    lst = maps["list"]
    return AttentionMaps(
        query=str(data.queries[q]), token_names=list(run.model.encoder.names),
        candidate_ids=[str(c) for c in data.candidate_ids[rows]], relevant=data.relevant()[rows],
        scores=scores[0].float().cpu().numpy().astype(np.float64),
        token=maps["token"][0].float().cpu().numpy().astype(np.float64),
        list=None if lst is None else lst[0].float().cpu().numpy().astype(np.float64))


@dataclass
class DatasetAttention:
    """received: per token x group (relevant / non-relevant): mean attention the token receives
    (averaged over layers, heads and query tokens), its std and count; matrices: group -> [T, T]."""

    token_names: list[str]
    received: pd.DataFrame
    matrices: dict[str, np.ndarray]
    candidates: dict[str, int]


@torch.inference_mode()
def attention_by_relevance(run: LoadedRun, data: RankingData, batch_lists: int = 16,
                           on_progress=None) -> DatasetAttention:
    """Average token attention for relevant vs non-relevant candidates over all lists of `data`."""
    names = list(run.model.encoder.names)
    groups = {"relevant": [], "non-relevant": []}
    relevant = data.relevant()
    run.model.eval()
    start = 0
    for a in range(0, data.num_queries, batch_lists):
        qs = list(range(a, min(a + batch_lists, data.num_queries)))
        padded = scaled_padded(run, data, qs)
        tokens, mask, _ = padded.batch(slice(None), run.device)
        _, maps = run.model(tokens, mask, return_attention=True)
        att = maps["token"].float().mean(dim=(2, 3)).cpu().numpy()  # [B, L, T, T]
        real = att[padded.mask]  # [n, T, T] in row order
        rel = relevant[start:start + len(real)]
        start += len(real)
        groups["relevant"].append(real[rel])
        groups["non-relevant"].append(real[~rel])
        if on_progress:
            on_progress(min(1.0, (a + len(qs)) / data.num_queries), f"{a + len(qs)}/{data.num_queries} lists")
    rows, matrices, counts = [], {}, {}
    for group, parts in groups.items():
        mats = np.concatenate(parts) if parts else np.zeros((0, len(names), len(names)))
        counts[group] = len(mats)
        if len(mats) == 0:
            continue
        matrices[group] = mats.mean(axis=0)
        received = mats.mean(axis=1)  # [n, T]: mean over query tokens of the weight each key token gets
        for j, name in enumerate(names):
            rows.append({"token": name, "group": group, "mean_attention": float(received[:, j].mean()),
                         "std": float(received[:, j].std()), "candidates": len(mats)})
    return DatasetAttention(names, pd.DataFrame(rows), matrices, counts)


@dataclass
class AblationResult:
    """table: one row per candidate of the list (full vs ablated score and rank); summary: list-level changes."""

    token: str
    table: pd.DataFrame
    summary: dict[str, float]


def _ablated_scores(run: LoadedRun, padded, token: str) -> np.ndarray:
    """Eval-mode scores [B, L] of padded raw lists with `token` carrying no information: a spec token at its
    training mean; the derived similarity token (made by the model from a vector pair) at its list's mean,
    so it tells no candidate of a list apart (the prior still reads the similarity)."""
    if token == SIMILARITY_TOKEN and token in run.model.encoder.names:
        return score_padded(_FlatSimilarity(run.model), padded, run.device)
    return score_padded(run.model, _ablated(padded, token, run.model), run.device)


class _FlatSimilarity:
    """The model as score_padded calls it, (raw tokens {name: [B, L, d]}, mask [B, L]) -> scores [B, L], through
    its named steps with the similarity token replaced by its list mean."""

    def __init__(self, model) -> None:
        self.model = model

    def eval(self) -> _FlatSimilarity:
        self.model.eval()
        return self

    def __call__(self, tokens, mask) -> torch.Tensor:
        model = self.model
        batch, prior = model.prepare(Ragged.from_padded(tokens, mask, model.encoder.list_constant))
        sim = batch.to_padded(batch.rows[SIMILARITY_TOKEN])  # [K, L, F], 0 at padding
        mean = sim.sum(1) / batch.mask.sum(1, keepdim=True).clamp_min(1)  # [K, F]
        batch = Ragged({**batch.rows, SIMILARITY_TOKEN: mean[batch.list_of_row()]}, batch.lists, batch.mask,
                       batch.positions)
        c, _ = model.in_context(model.candidates(batch)[0], batch)
        return batch.to_padded(model.prior.combine(model.head_scores(c), prior, batch))


def _ablated(padded, token: str, model):
    if token not in padded.tokens:
        raise ValueError(f"unknown token {token!r}; tokens: {sorted(padded.tokens) + list(_derived(model))}")
    tokens = dict(padded.tokens)
    # the raw value that standardises to 0 (the token's training mean): the group carries no information
    centre = model.standardise.centre(token).cpu().numpy()
    tokens[token] = np.broadcast_to(centre, tokens[token].shape).astype(np.float32)
    padded.tokens = tokens
    return padded


def _derived(model) -> tuple[str, ...]:
    """The encoder's tokens the model derives itself (not in the raw input)."""
    return (SIMILARITY_TOKEN,) if SIMILARITY_TOKEN in model.encoder.names else ()


def token_ablation(run: LoadedRun, data: RankingData, q: int, token: str) -> AblationResult:
    """Set `token` to its training mean (the derived similarity token: its list mean) for every candidate of
    list q; compare scores and order."""
    full_p = scaled_padded(run, data, [q])
    full = score_padded(run.model, full_p, run.device)
    abl = _ablated_scores(run, scaled_padded(run, data, [q]), token)
    full, abl = full[0][full_p.mask[0]], abl[0][full_p.mask[0]]
    rows = data.rows(q)
    r_full, r_abl = rank_in_list(full), rank_in_list(abl)
    table = pd.DataFrame({
        "candidate_id": data.candidate_ids[rows].astype(str), "original_rank": np.arange(1, len(full) + 1),
        "label": data.labels[rows].astype(float), "relevant": data.relevant()[rows],
        "score_full": full, "score_ablated": abl, "score_change": abl - full,
        "rank_full": r_full, "rank_ablated": r_abl, "rank_change": r_full - r_abl})
    sub = data.subset([q])
    m_full = per_query_metrics(sub, full, no_relevant="zero")
    m_abl = per_query_metrics(sub, abl, no_relevant="zero")
    tau = stats.kendalltau(r_full, r_abl).statistic if len(full) > 1 else 1.0
    summary = {"mean_abs_score_change": float(np.abs(abl - full).mean()),
               "max_abs_score_change": float(np.abs(abl - full).max()),
               "kendall_tau": float(tau) if np.isfinite(tau) else 1.0,
               "top1_changed": float(np.argmax(full) != np.argmax(abl)),
               "candidates_moved": float((r_full != r_abl).sum()),
               "ndcg@10_full": float(m_full["ndcg@10"][0]), "ndcg@10_ablated": float(m_abl["ndcg@10"][0]),
               "c@1_full": float(m_full["c@1"][0]), "c@1_ablated": float(m_abl["c@1"][0])}
    return AblationResult(token, table.sort_values("rank_ablated").reset_index(drop=True), summary)


def ablation_over_queries(run: LoadedRun, data: RankingData, tokens: Sequence[str] | None = None) -> pd.DataFrame:
    """Per token: mean |score change| and mean nDCG@10 / C@1 with the token ablated, over all lists."""
    names = list(tokens or run.model.encoder.names)
    padded = scaled_padded(run, data)
    full = score_padded(run.model, padded, run.device)[padded.mask]
    base = per_query_metrics(data, full)
    orig = per_query_metrics(data, original_scores(data))
    rows = []
    for name in names:
        abl = _ablated_scores(run, scaled_padded(run, data), name)[padded.mask]
        m = per_query_metrics(data, abl)
        rows.append({"token": name, "mean_abs_score_change": float(np.abs(abl - full).mean()),
                     "ndcg@10_full": float(np.nanmean(base["ndcg@10"])),
                     "ndcg@10_ablated": float(np.nanmean(m["ndcg@10"])),
                     "ndcg@10_change": float(np.nanmean(m["ndcg@10"]) - np.nanmean(base["ndcg@10"])),
                     "c@1_ablated": float(np.nanmean(m["c@1"])),
                     "ndcg@10_original_order": float(np.nanmean(orig["ndcg@10"]))})
    return pd.DataFrame(rows)
