"""Baselines on the same RankingData the reranker sees: LightGBM lambdarank on flattened tokens.

Fairness: the baseline sees exactly the reranker's inputs, the token features in spec order,
and nothing else (not the first-stage rank or score, which only define the `original` order).
Two ways to present wide embedding tokens (the demo's 2 x 1024 CLIP dims):

* ``clip="raw"``: every dimension as its own column (identical information; trees cannot
  form dot products, so this is the weaker presentation).
* ``clip="cosine_pca"`` (default): for each list-constant token paired with a per-candidate
  token of the same width, their cosine similarity (what a dual encoder's first stage computes),
  plus a PCA (fitted on train) of each wide token. This only *derives* features from the same
  inputs and gives the trees the interaction they cannot learn, so it is the stronger baseline.

Tokens narrower than ``wide`` (LETOR features, visual/conflict statistics) are always raw.
Labels: LETOR grades are integers and used as-is. Continuous labels (compliance in [0, 1]) are
quantised to ``grades`` integer levels and ``label_gain[i] = 2**(i / scale) - 1`` reproduces the
evaluation gain ``2**label - 1``, so lambdarank optimises the metric we report.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cotrr_core.data.dataset import RankingData
from cotrr_core.io import atomic_write, write_json

__all__ = ["FeatureBuilder", "LightGBMRanker", "DEFAULT_GRID"]

# Small, fair grid: chosen on validation nDCG@10, the same criterion the reranker's early stop uses.
DEFAULT_GRID: dict[str, tuple] = {
    "num_leaves": (7, 15, 31),
    "learning_rate": (0.05, 0.1),
    "min_data_in_leaf": (10, 30),
}


@dataclass
class FeatureBuilder:
    """RankingData -> dense [N, F] matrix (see module docstring). Fitted on train, JSON state."""

    clip: str = "cosine_pca"
    wide: int = 64  # tokens at least this wide count as embeddings
    pca_dims: int = 16
    names_: list[str] = field(default_factory=list)
    pairs_: list[tuple[str, str]] = field(default_factory=list)
    pca_: dict[str, dict[str, list]] = field(default_factory=dict)
    tokens_: list[tuple[str, int]] = field(default_factory=list)  # (name, width) in spec order, set by fit

    def fit(self, data: RankingData) -> FeatureBuilder:
        if self.clip not in ("raw", "cosine_pca"):
            raise ValueError(f"clip must be 'raw' or 'cosine_pca', got {self.clip!r}")
        dims = data.token_dims
        self.tokens_ = [(t.name, int(dims[t.name])) for t in data.spec.tokens]
        self.pairs_, self.pca_ = [], {}
        if self.clip == "cosine_pca":
            const = set(data.list_constant)
            wide = [t.name for t in data.spec.tokens if dims[t.name] >= self.wide]
            self.pairs_ = [(a, b) for a, b in itertools.permutations(wide, 2)
                           if a not in const and b in const and dims[a] == dims[b]]
            for name in wide:
                x = data.features[name].astype(np.float64)
                if name in const:  # one row per list, not per candidate
                    x = x[data.offsets[:-1]]
                mean = x.mean(axis=0)
                _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
                k = min(self.pca_dims, vt.shape[0])
                self.pca_[name] = {"mean": mean.tolist(), "components": vt[:k].tolist()}
        self.names_ = [n for n, _ in self._blocks(data, dry=True)]
        return self

    def _blocks(self, data: RankingData, dry: bool = False):
        dims = data.token_dims
        for tok in data.spec.tokens:
            name = tok.name
            if name in self.pca_:
                k = len(self.pca_[name]["components"])
                for j in range(k):
                    yield f"{name}_pc{j}", None
            elif self.clip == "raw" or dims[name] < self.wide:
                for j in range(dims[name]):
                    yield f"{name}_{j}", None
        for a, b in self.pairs_:
            yield f"cos_{a}_{b}", None

    def transform(self, data: RankingData) -> np.ndarray:
        """The split's candidates [N, F] (list-constant tokens are stored per candidate row)."""
        tokens = self.tokens_ or [(t.name, int(data.token_dims[t.name])) for t in data.spec.tokens]
        return self._columns(data.features, tokens, data.num_candidates)

    def transform_tokens(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Raw token rows {name: [n, d]} (list-constant tokens repeated per row, as in RankingData) -> [n, F]:
        what serving builds from a request's rows."""
        if not self.tokens_:
            raise ValueError("this FeatureBuilder state has no token list (fitted by an older version)")
        n = len(features[self.tokens_[0][0]]) if self.tokens_ else 0
        return self._columns(features, self.tokens_, n)

    def _columns(self, features: Mapping[str, np.ndarray], tokens: list[tuple[str, int]], n: int) -> np.ndarray:
        cols: list[np.ndarray] = []
        for name, dim in tokens:
            x = np.asarray(features[name]).astype(np.float64)
            if name in self.pca_:
                p = self.pca_[name]
                cols.append((x - np.asarray(p["mean"])) @ np.asarray(p["components"]).T)
            elif self.clip == "raw" or dim < self.wide:
                cols.append(x)
        for a, b in self.pairs_:
            xa, xb = np.asarray(features[a]).astype(np.float64), np.asarray(features[b]).astype(np.float64)
            na, nb = np.linalg.norm(xa, axis=1), np.linalg.norm(xb, axis=1)
            cols.append(((xa * xb).sum(1) / np.maximum(na * nb, 1e-12))[:, None])
        out = np.concatenate(cols, axis=1) if cols else np.zeros((n, 0))
        if self.names_ and out.shape[1] != len(self.names_):
            raise ValueError(f"feature width {out.shape[1]} != fitted width {len(self.names_)}")
        return out.astype(np.float32)

    def to_state(self) -> dict[str, Any]:
        return {"clip": self.clip, "wide": self.wide, "pca_dims": self.pca_dims, "names": self.names_,
                "pairs": [list(p) for p in self.pairs_], "pca": self.pca_,
                "tokens": [list(t) for t in self.tokens_]}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> FeatureBuilder:
        return cls(s["clip"], s["wide"], s["pca_dims"], list(s["names"]), [tuple(p) for p in s["pairs"]], s["pca"],
                   [(str(n), int(d)) for n, d in s.get("tokens", [])])


def _int_labels(labels: np.ndarray, grades: int) -> tuple[np.ndarray, list[float] | None, float]:
    """Labels for lambdarank: integers as-is; continuous labels -> round(label * scale)."""
    if np.allclose(labels, np.round(labels)) and labels.min() >= 0 and labels.max() <= 30:
        return np.round(labels).astype(np.int32), None, 1.0
    lo, hi = float(labels.min()), float(labels.max())
    scale = (grades - 1) / max(hi, 1e-12)
    if lo < 0:
        raise ValueError("lambdarank needs non-negative labels")
    gain = [2.0 ** (i / scale) - 1.0 for i in range(grades)]
    return np.round(labels * scale).astype(np.int32), gain, scale


class LightGBMRanker:
    """lightgbm.LGBMRanker(objective="lambdarank") with early stopping and a small grid on val."""

    def __init__(self, *, grid: dict[str, tuple] | None = None, clip: str = "cosine_pca", n_estimators: int = 1000,
                 early_stopping_rounds: int = 50, grades: int = 21, seed: int = 0, n_jobs: int = 2,
                 no_relevant: str = "exclude") -> None:
        self.grid = grid  # None: DEFAULT_GRID
        self.clip = clip
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.grades = grades
        self.seed = seed
        self.n_jobs = n_jobs
        self.no_relevant = no_relevant

    def _params(self, **grid_point) -> dict[str, Any]:
        return dict(objective="lambdarank", seed=self.seed, num_threads=self.n_jobs, verbose=-1,
                    deterministic=True, force_row_wise=True, metric="ndcg", eval_at=[10], **grid_point)

    def fit(self, train: RankingData, val: RankingData) -> LightGBMRanker:
        """Grid over `grid`, each point early-stopped on val nDCG@10; keep the point best on val."""
        import lightgbm as lgb

        from cotrr_core.evaluation.compare import evaluate_scores

        self.features_ = FeatureBuilder(clip=self.clip).fit(train)
        x_tr, x_va = self.features_.transform(train), self.features_.transform(val)
        y_tr, gain, scale = _int_labels(train.labels, self.grades)
        y_va = (np.clip(np.round(val.labels * scale), 0, self.grades - 1).astype(np.int32) if gain is not None
                else np.round(val.labels).astype(np.int32))
        extra = {"label_gain": gain} if gain is not None else {}
        d_tr = lgb.Dataset(x_tr, y_tr, group=train.list_lengths, free_raw_data=False)
        d_va = lgb.Dataset(x_va, y_va, group=val.list_lengths, reference=d_tr, free_raw_data=False)
        best = None
        self.search_ = []
        grid = DEFAULT_GRID if self.grid is None else self.grid
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values))
            booster = lgb.train({**self._params(**point), **extra}, d_tr, num_boost_round=self.n_estimators,
                                valid_sets=[d_va], valid_names=["val"],
                                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
            it = int(booster.best_iteration or booster.current_iteration())
            scores = booster.predict(x_va, num_iteration=it)
            ndcg = evaluate_scores(val, scores, self.no_relevant)["ndcg@10"]
            self.search_.append({**point, "best_iteration": it, "val_ndcg@10": ndcg})
            if best is None or ndcg > best[0] + 1e-9:
                best = (ndcg, point, booster, it)
        _, point, booster, it = best
        self.best_iteration_ = it
        self.best_params_ = {**point, "num_boost_round": it}
        # keep only the trees up to the early-stopping point: the saved text model is what predicts
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=it))
        return self

    def predict(self, data: RankingData) -> np.ndarray:
        """Scores [N] in the data's row order (higher ranks first)."""
        self._check_fitted()
        return np.asarray(self.booster_.predict(self.features_.transform(data)), dtype=np.float64)

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise RuntimeError("LightGBMRanker is not fitted")

    def to_state(self) -> dict[str, Any]:
        """JSON-able state: LightGBM's own text model format plus the feature builder."""
        self._check_fitted()
        return {"format": "lightgbm-text", "model": self.booster_.model_to_string(),
                "features": self.features_.to_state(), "best_params": self.best_params_, "search": self.search_}

    def save(self, path: str | Path) -> Path:
        """Write `path` (LightGBM text model, booster.save_model) and `path`.features.json beside it."""
        state = self.to_state()
        path = Path(path)
        atomic_write(path, lambda p: p.write_text(state["model"]))
        write_json(path.with_name(path.name + ".features.json"), {k: v for k, v in state.items() if k != "model"})
        return path

    @classmethod
    def load(cls, path: str | Path) -> LightGBMRanker:
        import lightgbm as lgb

        path = Path(path)
        meta = json.loads(path.with_name(path.name + ".features.json").read_text())
        obj = cls()
        obj.features_ = FeatureBuilder.from_state(meta["features"])
        obj.clip = obj.features_.clip
        obj.best_params_, obj.search_ = meta.get("best_params", {}), meta.get("search", [])
        obj.booster_ = lgb.Booster(model_file=str(path))
        return obj
