"""The blend `train` adds on top of the served network when it wins on validation (serving/blended.py serves it).

After choose_mode has picked what the network part serves, the runtime peers (LightGBM lambdarank and a ridge
regression on the same features, evaluation/baselines.py and peers.py) are fitted on the same training split
with the quality bench's tuning budget (their 12-point grids, GBDT points early-stopped on validation), every
part is z-scored with statistics fitted on validation, and the blend weight w is chosen on validation nDCG@10
among BLEND_WEIGHTS (w = 0: the network alone; ties go to the smaller w). XGBoost and CatBoost stay in the
bench: they are not runtime dependencies.

The run directory then holds blend.json (which parts it holds and why: each part's val nDCG@10, the blend's
per weight, the z statistics, w) and, when w > 0, lightgbm.txt (LightGBM's own text format); the ridge
model is JSON inside blend.json. Nothing is pickled.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from cotrr_core.artifacts import LoadedRun
from cotrr_core.data.benchmarks import Benchmark
from cotrr_core.evaluation.baselines import LightGBMRanker
from cotrr_core.evaluation.compare import evaluate_scores
from cotrr_core.evaluation.peers import RidgeRanker
from cotrr_core.io import atomic_write, write_json
from cotrr_core.scoring import score_data
from cotrr_core.serving.blended import BLEND_FILE, LIGHTGBM_FILE, load_blend

__all__ = ["BLEND_WEIGHTS", "COMMITTEE", "fit_blend", "fit_peers", "z_stats", "choose_weight"]

BLEND_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
COMMITTEE = ("lightgbm", "ridge")


def fit_peers(bench: Benchmark, seed: int = 0, n_jobs: int = 1) -> dict[str, object]:
    """LightGBM and Ridge fitted on 'train', tuned on 'val' exactly as bench/quality.py tunes its peers."""
    train, val = bench.splits["train"], bench.splits["val"]
    return {"lightgbm": LightGBMRanker(n_estimators=1000, seed=seed, n_jobs=n_jobs).fit(train, val),
            "ridge": RidgeRanker(n_estimators=1000, seed=seed, n_jobs=n_jobs).fit(train, val)}


def z_stats(scores: np.ndarray) -> tuple[float, float]:
    """(mean, std) of scores [n], the std floored so a constant part cannot divide by zero."""
    return float(np.mean(scores)), max(float(np.std(scores)), 1e-12)


def choose_weight(val, network_z: np.ndarray, committee_z: np.ndarray) -> tuple[float, dict[float, float]]:
    """w in BLEND_WEIGHTS with the best val nDCG@10 of network_z + w * committee_z (ties: the smaller w)."""
    table = {w: float(evaluate_scores(val, network_z + w * committee_z)["ndcg@10"]) for w in BLEND_WEIGHTS}
    return max(BLEND_WEIGHTS, key=lambda w: (round(table[w], 10), -w)), table


def fit_blend(run: LoadedRun, bench: Benchmark, seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Fit the peers, choose w on validation, write blend.json (+ lightgbm.txt when w > 0) and set run.blend
    to what load_run will rebuild (None when w = 0). Returns blend.json's summary for metrics.json."""
    val = bench.splits["val"]
    if val is bench.splits["train"]:
        info = {"kind": "network", "parts": ["network"], "weight": 0.0,
                "why": "validation is the training split here: a blend weight chosen on it would favour the "
                       "trees' fit to their own training data, so the network is served alone"}
        write_json(run.run_dir / BLEND_FILE, info)
        run.blend = None
        return info
    network = score_data(dataclasses.replace(run, blend=None), val)
    peers = fit_peers(bench, seed)
    raw = {name: peer.predict(val) for name, peer in peers.items()}
    z = {"network": z_stats(network), **{name: z_stats(s) for name, s in raw.items()}}
    mean = np.mean([(raw[n] - z[n][0]) / z[n][1] for n in COMMITTEE], axis=0)
    z["committee"] = z_stats(mean)
    committee = (mean - z["committee"][0]) / z["committee"][1]
    weight, table = choose_weight(val, (network - z["network"][0]) / z["network"][1], committee)
    scores = {"network": _ndcg(val, network), **{n: _ndcg(val, s) for n, s in raw.items()},
              "committee": _ndcg(val, committee), "blend": table[weight]}
    info = _blend_info(peers, z, weight, table, scores)
    if weight > 0:
        state = peers["lightgbm"].to_state()
        atomic_write(run.run_dir / LIGHTGBM_FILE, lambda p: p.write_text(state["model"]))
    write_json(run.run_dir / BLEND_FILE, info)
    run.blend = load_blend(run.run_dir)  # serve what is stored
    log(f"blend: w = {weight} ({info['why']})")
    return {k: v for k, v in info.items() if k not in ("features", "ridge", "lightgbm")}


def _ndcg(val, scores: np.ndarray) -> float:
    return float(evaluate_scores(val, scores)["ndcg@10"])


def _blend_info(peers: dict, z: dict, weight: float, table: dict[float, float], scores: dict[str, float]) -> dict:
    """blend.json: the parts held, why, the z statistics and the peers' JSON state."""
    held = ["network", *COMMITTEE] if weight > 0 else ["network"]
    why = (f"validation nDCG@10 {scores['blend']:.4f} with w = {weight} against {scores['network']:.4f} for the "
           f"network alone" if weight > 0 else
           f"no blend weight beat the network alone on validation ({scores['network']:.4f})")
    ridge = {k: v for k, v in peers["ridge"].to_state().items() if k != "features"}
    lgb = peers["lightgbm"]
    return {"kind": "blend" if weight > 0 else "network", "parts": held, "weight": float(weight),
            "committee": list(COMMITTEE), "val_ndcg@10": scores,
            "weights_tried": {str(w): v for w, v in table.items()},
            "z": {k: list(v) for k, v in z.items()}, "why": why,
            "features": lgb.features_.to_state(), "ridge": ridge,
            "lightgbm": {"file": LIGHTGBM_FILE, "best_params": lgb.best_params_},
            "note": "z statistics fitted on validation; MC dropout uncertainty covers the network part only"}
