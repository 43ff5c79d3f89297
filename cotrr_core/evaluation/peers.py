"""Peer rankers for the quality bench: Ridge, XGBoost and CatBoost on LightGBMRanker's features.

Each peer sees exactly LightGBM's inputs (``FeatureBuilder``, fitted on train) and is tuned the
same way with the same budget: ``len(grid) == 12`` points, each GBDT point early-stopped on the
validation split (50 rounds, at most ``n_estimators``), the point with the best validation
nDCG@10 kept. Nothing is ever chosen on test. XGBoost and CatBoost are optional imports.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from cotrr_core.data.dataset import RankingData
from cotrr_core.evaluation.baselines import FeatureBuilder, _int_labels

__all__ = ["RidgeRanker", "XGBoostRanker", "CatBoostRanker", "PEERS", "ridge_scores"]


class _GridRanker:
    """Shared grid search: subclasses implement _fit_point(point) -> (model, iterations) and _predict."""

    grid: dict[str, tuple] = {}

    def __init__(self, *, n_estimators: int = 1000, early_stopping_rounds: int = 50, seed: int = 0,
                 n_jobs: int = 2, grid: dict[str, tuple] | None = None, no_relevant: str = "exclude") -> None:
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.n_jobs = n_jobs
        self.grid = grid if grid is not None else type(self).grid
        self.no_relevant = no_relevant

    def fit(self, train: RankingData, val: RankingData) -> _GridRanker:
        from cotrr_core.evaluation.compare import evaluate_scores

        self.features_ = FeatureBuilder().fit(train)
        self._train, self._val = train, val
        self._x_tr, self._x_va = self.features_.transform(train), self.features_.transform(val)
        self.search_, best = [], None
        keys = list(self.grid)
        for values in itertools.product(*(self.grid[k] for k in keys)):
            point = dict(zip(keys, values))
            model, it = self._fit_point(point)
            ndcg = evaluate_scores(val, self._predict(model, self._x_va), self.no_relevant)["ndcg@10"]
            self.search_.append({**point, "iterations": it, "val_ndcg@10": ndcg})
            if best is None or ndcg > best[0] + 1e-9:
                best = (ndcg, point, model, it)
        _, point, self.model_, it = best
        self.best_params_ = {**point, "iterations": it}
        del self._x_tr, self._x_va, self._train, self._val
        return self

    def predict(self, data: RankingData) -> np.ndarray:
        """Scores [N] in the data's row order."""
        if not hasattr(self, "model_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return np.asarray(self._predict(self.model_, self.features_.transform(data)), dtype=np.float64)

    def _fit_point(self, point: dict) -> tuple[Any, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        return model.predict(x)


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


class RidgeRanker(_GridRanker):
    """Pointwise ridge regression of the label on standardised (optionally signed-log1p) features."""

    grid = {"alpha": (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0), "log1p": (False, True)}

    def _fit_point(self, point: dict) -> tuple[Any, int]:
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        steps = ([FunctionTransformer(_signed_log)] if point["log1p"] else []) + [StandardScaler(), Ridge(point["alpha"])]
        return make_pipeline(*steps).fit(self._x_tr, self._train.labels), 0

    def to_state(self) -> dict[str, Any]:
        """The chosen pipeline as JSON (no pickle): signed log1p or not, the scaler's mean and scale [F], the
        ridge coefficients [F] and intercept; `ridge_scores` predicts from it."""
        if not hasattr(self, "model_"):
            raise RuntimeError("RidgeRanker is not fitted")
        scaler, ridge = self.model_[-2], self.model_[-1]
        return {"format": "ridge-json", "log1p": len(self.model_.steps) == 3, "mean": scaler.mean_.tolist(),
                "scale": scaler.scale_.tolist(), "coef": np.ravel(ridge.coef_).tolist(),
                "intercept": float(np.ravel(ridge.intercept_)[0]), "features": self.features_.to_state(),
                "best_params": self.best_params_}


def ridge_scores(state: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """RidgeRanker.to_state's pipeline on features [n, F] -> scores [n] (float64)."""
    x = np.asarray(x, dtype=np.float64)
    if state["log1p"]:
        x = _signed_log(x)
    z = (x - np.asarray(state["mean"])) / np.asarray(state["scale"])
    return z @ np.asarray(state["coef"]) + state["intercept"]


class XGBoostRanker(_GridRanker):
    """xgboost rank:ndcg (LambdaMART) with early stopping on validation nDCG@10."""

    grid = {"max_depth": (3, 6, 8), "learning_rate": (0.05, 0.1), "min_child_weight": (1.0, 10.0)}

    def _fit_point(self, point: dict) -> tuple[Any, int]:
        import xgboost as xgb

        y_tr, gain, scale = _int_labels(self._train.labels, 21)
        y_va = np.clip(np.round(self._val.labels * scale), 0, 20).astype(np.int32) if gain is not None \
            else np.round(self._val.labels).astype(np.int32)
        d_tr = xgb.DMatrix(self._x_tr, y_tr, group=self._train.list_lengths)
        d_va = xgb.DMatrix(self._x_va, y_va, group=self._val.list_lengths)
        # quantised continuous labels (0..20) get linear gain: 2^x - 1 on [0, 1] is close to linear
        params = {"objective": "rank:ndcg", "eval_metric": "ndcg@10", "tree_method": "hist", "seed": self.seed,
                  "nthread": self.n_jobs, "ndcg_exp_gain": gain is None, "max_depth": point["max_depth"],
                  "eta": point["learning_rate"], "min_child_weight": point["min_child_weight"]}
        booster = xgb.train(params, d_tr, self.n_estimators, evals=[(d_va, "val")],
                            early_stopping_rounds=self.early_stopping_rounds, verbose_eval=False)
        return booster, int(booster.best_iteration) + 1

    def _predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        return model.predict(xgb.DMatrix(x), iteration_range=(0, model.best_iteration + 1))


class CatBoostRanker(_GridRanker):
    """CatBoost YetiRank / LambdaMart with early stopping on validation NDCG@10."""

    grid = {"loss_function": ("YetiRank", "LambdaMart"), "depth": (4, 6, 8), "learning_rate": (0.05, 0.1)}

    def _fit_point(self, point: dict) -> tuple[Any, int]:
        from catboost import CatBoost, Pool

        def pool(x: np.ndarray, data: RankingData) -> Pool:
            return Pool(x, data.labels.astype(np.float64), group_id=np.repeat(np.arange(data.num_queries),
                                                                               data.list_lengths))

        params = {"loss_function": point["loss_function"], "depth": point["depth"],
                  "learning_rate": point["learning_rate"], "iterations": self.n_estimators,
                  "eval_metric": "NDCG:top=10", "random_seed": self.seed, "thread_count": self.n_jobs,
                  "od_type": "Iter", "od_wait": self.early_stopping_rounds, "use_best_model": True,
                  "verbose": False, "allow_writing_files": False}
        model = CatBoost(params).fit(pool(self._x_tr, self._train), eval_set=pool(self._x_va, self._val))
        return model, int(model.get_best_iteration() or 0) + 1


PEERS = {"ridge": RidgeRanker, "xgboost": XGBoostRanker, "catboost": CatBoostRanker}
