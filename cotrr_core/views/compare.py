"""Per-query comparison of the original and reranked lists, headline comparisons, wins/ties/losses."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cotrr_core.artifacts import LoadedRun
from cotrr_core.data.dataset import RankingData
from cotrr_core.evaluation.compare import (
    compare_rankings,
    evaluate_scores,
    original_scores,
    per_query_metrics,
    rank_in_list,
)
from cotrr_core.scoring import mc_samples_data, score_data

__all__ = ["SplitScores", "score_split", "movement_arrow", "query_lists", "query_metrics",
           "wins_ties_losses", "find_queries", "headline", "timed_scoring"]

_DISPLAY_EXTRAS = ("cocktail", "candidate_kind", "first_stage_score", "image", "render_spec")


@dataclass
class SplitScores:
    """Model outputs for every candidate of a split, in its row order."""

    scores: np.ndarray  # raw scores [N]
    std: np.ndarray | None  # MC-dropout std of the raw score [N]
    prob: np.ndarray  # calibrated P(relevant) [N] (uncalibrated when the run has no calibrator)
    prob_std: np.ndarray | None  # MC-dropout std propagated to the probability scale [N]
    calibrated: bool
    mc_samples: int


def score_split(run: LoadedRun, data: RankingData, mc_samples: int = 10) -> SplitScores:
    """Raw scores, calibrated probabilities and MC-dropout uncertainty for all candidates."""
    scores = score_data(run, data)
    prob = run.probabilities(scores)
    std = prob_std = None
    if mc_samples > 0:
        samples = mc_samples_data(run, data, mc_samples)  # [S, N]
        std = samples.std(axis=0)
        prob_std = run.probabilities(samples).std(axis=0)
    return SplitScores(scores, std, prob, prob_std, run.calibrator is not None, mc_samples)


def movement_arrow(delta: int) -> str:
    """+3 -> '↑3', -2 -> '↓2', 0 -> '='."""
    return f"↑{delta}" if delta > 0 else (f"↓{-delta}" if delta < 0 else "=")


def query_lists(data: RankingData, q: int, scored: SplitScores) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(original order, reranked order) tables for list q, one row per candidate."""
    r = data.rows(q)
    s = scored.scores[r]
    new = rank_in_list(s)
    orig = np.arange(1, len(s) + 1)
    df = pd.DataFrame({"candidate_id": data.candidate_ids[r].astype(str), "original_rank": orig,
                       "reranked_rank": new, "movement": orig - new,
                       "arrow": [movement_arrow(int(d)) for d in orig - new],
                       "compliance": data.labels[r].astype(float), "relevant": data.relevant()[r],
                       "score": s, "p_relevant": scored.prob[r],
                       "p_uncertainty": scored.prob_std[r] if scored.prob_std is not None else np.nan})
    extras = data.extras.iloc[r.start:r.stop].reset_index(drop=True)
    for col in _DISPLAY_EXTRAS:
        if col in extras:
            df[col] = extras[col].to_numpy()
    return df, df.sort_values("reranked_rank").reset_index(drop=True)


def query_metrics(data: RankingData, q: int, scores: np.ndarray) -> pd.DataFrame:
    """Metrics of list q: original order vs reranked (queries without a relevant candidate score 0)."""
    sub = data.subset([q])
    r = data.rows(q)
    a = per_query_metrics(sub, scores[r], no_relevant="zero")
    b = per_query_metrics(sub, original_scores(sub), no_relevant="zero")
    keys = [k for k in ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "c@1", "c@3", "mrr", "map") if k in a]
    return pd.DataFrame({"metric": keys, "original": [float(b[k][0]) for k in keys],
                         "reranked": [float(a[k][0]) for k in keys],
                         "change": [float(a[k][0] - b[k][0]) for k in keys]})


def wins_ties_losses(data: RankingData, scores: np.ndarray, metric: str = "ndcg@10",
                     tol: float = 1e-9) -> tuple[dict[str, int], pd.DataFrame]:
    """Per query: reranked vs original on `metric`. Every query is counted: one without a relevant
    candidate scores 0 in both orders (a tie). Returns counts and the per-query table, worst first."""
    a = per_query_metrics(data, scores, no_relevant="zero")[metric]
    b = per_query_metrics(data, original_scores(data), no_relevant="zero")[metric]
    has_rel = np.array([data.relevant()[data.rows(q)].any() for q in range(data.num_queries)])
    delta = a - b
    outcome = np.where(delta > tol, "win", np.where(delta < -tol, "loss", "tie"))
    table = pd.DataFrame({"query_index": np.arange(data.num_queries), "query_id": data.query_ids.astype(str),
                          "query": data.queries.astype(str), "candidates": data.list_lengths,
                          "has_relevant": has_rel, f"{metric}_original": b, f"{metric}_reranked": a,
                          "change": delta, "outcome": outcome})
    counts = {k: int((outcome == k).sum()) for k in ("win", "tie", "loss")}
    counts["queries"] = int(data.num_queries)
    counts["no_relevant"] = int((~has_rel).sum())
    return counts, table.sort_values(["change", "query_index"], kind="stable").reset_index(drop=True)


def find_queries(data: RankingData, text: str) -> np.ndarray:
    """Indices of queries whose text or id contains `text` (case-insensitive); all when empty."""
    text = (text or "").strip().lower()
    if not text:
        return np.arange(data.num_queries)
    hay = [f"{i} {t}".lower() for i, t in zip(data.query_ids, data.queries)]
    return np.array([k for k, h in enumerate(hay) if text in h], dtype=np.int64)


def headline(data: RankingData, scores: np.ndarray, metrics: tuple[str, ...] = ("ndcg@10", "c@1", "mrr"),
             seed: int = 0, stored: dict | None = None) -> pd.DataFrame:
    """Reranked vs original means with paired bootstrap 95% CIs of the difference (excluded: no relevant).

    stored: the run's metrics.json "test" section ({"cotrr": {...}, "original": {...}}). When given, the
    means shown are those recorded numbers (one source for every page, the sidebar and the CLI) and
    `matches_stored` says whether re-scoring reproduces them (to 1e-6).
    """
    orig = original_scores(data)
    ci = compare_rankings(data, scores, orig, metrics=metrics, seed=seed)
    ev_a, ev_b = evaluate_scores(data, scores), evaluate_scores(data, orig)
    rows = []
    for m in metrics:
        row = {"metric": m, "original": ev_b[m], "reranked": ev_a[m]}
        if stored and m in stored.get("cotrr", {}) and m in stored.get("original", {}):
            rec = {"original": stored["original"][m], "reranked": stored["cotrr"][m]}
            row["matches_stored"] = all(abs(row[k] - rec[k]) <= 1e-6 for k in rec)
            row.update(rec)
        else:
            row["matches_stored"] = stored is None
        rows.append({**row, "change": row["reranked"] - row["original"], "ci_low": ci[m]["lo"],
                     "ci_high": ci[m]["hi"], "p_value": ci[m].get("p_value"), "queries": ci[m]["n"]})
    return pd.DataFrame(rows)


def timed_scoring(run: LoadedRun, data: RankingData, repeats: int = 3) -> dict[str, float]:
    """Wall time of score_data on the whole split (best of `repeats`), per query and per candidate."""
    from cotrr_core.simulate.inputs import serving_threads

    with serving_threads(1):
        score_data(run, data)  # warm-up
        best = min(_time_once(run, data) for _ in range(max(1, repeats)))
    return {"seconds": best, "ms_per_query": 1000 * best / max(data.num_queries, 1),
            "us_per_candidate": 1e6 * best / max(data.num_candidates, 1), "queries": data.num_queries,
            "candidates": data.num_candidates, "device": str(run.device), "threads": 1}


def _time_once(run: LoadedRun, data: RankingData) -> float:
    t0 = time.perf_counter()
    score_data(run, data)
    return time.perf_counter() - t0
