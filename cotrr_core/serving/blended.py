"""The served blend: the run's network plus a committee of tree / linear peers, as `train` chose it on validation.

    score = (network - mu_n) / sd_n + w * committee,  committee = z(mean over peers p of z_p(peer_p))

Every z uses statistics fitted on the validation split and stored in blend.json, so a list's score does not
depend on what else is in the request. The peers (training/blend.py) are LightGBM (its own text model,
lightgbm.txt) and a ridge regression (coefficients and scaler as JSON): never a pickle. They read the same
raw token rows as the network, as evaluation.baselines.FeatureBuilder's features (built from a served batch by
BatchFeatures, in torch), and run on the CPU; the network part is whatever copy the Reranker serves (fp32
folded or bf16).

MC dropout covers the network part only: the peers are deterministic, so a blended sample is a network
sample plus the same committee score (the uncertainty of the trees is not in it).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cotrr_core.config import ConfigError
from cotrr_core.evaluation.baselines import FeatureBuilder
from cotrr_core.evaluation.peers import ridge_scores
from cotrr_core.io import read_json
from cotrr_core.mc import mc_scores as network_mc_scores
from cotrr_core.model import Ragged

__all__ = ["Blend", "BlendedModel", "load_blend", "blend_summary", "served_model", "sampled_scores", "BLEND_FILE",
           "LIGHTGBM_FILE"]

BLEND_FILE = "blend.json"
LIGHTGBM_FILE = "lightgbm.txt"


@dataclass
class Blend:
    """The peers a run holds and how their scores join the network's (see the module docstring)."""

    weight: float
    committee: tuple[str, ...]  # peer names, e.g. ("lightgbm", "ridge")
    z: dict[str, tuple[float, float]]  # part -> (mean, std) on validation: network, each peer, committee
    features: FeatureBuilder
    booster: Any = None  # lightgbm.Booster when "lightgbm" is in the committee
    ridge: dict | None = None  # RidgeRanker.to_state() when "ridge" is in the committee
    info: dict = field(default_factory=dict)  # blend.json
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def peer_scores(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Each peer's raw score [n] of feature rows x [n, F]."""
        out = {}
        if "lightgbm" in self.committee:
            with self._lock:  # one Booster shared by the serving threads
                out["lightgbm"] = np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64)
        if "ridge" in self.committee:
            out["ridge"] = ridge_scores(self.ridge, x)
        return out

    def committee_scores(self, tokens: dict[str, np.ndarray]) -> np.ndarray:
        """Raw token rows {name: [n, d]} (list-constant tokens repeated per row) -> committee z-score [n]."""
        return self.committee_of(self.features.transform_tokens(tokens))

    def committee_of(self, x: np.ndarray) -> np.ndarray:
        """The peers' feature rows [n, F] (FeatureBuilder's) -> committee z-score [n]."""
        if len(x) == 0:
            return np.zeros(0)
        parts = self.peer_scores(x)
        mean = np.mean([self._z(name, parts[name]) for name in self.committee], axis=0)
        return self._z("committee", mean)

    def committee_split(self, features: dict[str, np.ndarray], n: int, chunk: int = 8192) -> np.ndarray:
        """committee_scores of a whole split's rows (RankingData.features, possibly memory-mapped) [n], read in
        row chunks so memory stays a chunk."""
        names = [name for name, _ in self.features.tokens_]
        out = [self.committee_scores({k: np.asarray(features[k][i:i + chunk]) for k in names})
               for i in range(0, n, chunk)]
        return np.concatenate(out) if out else np.zeros(0)

    def combine(self, network: Any, committee: Any) -> Any:
        """Network scores [..., n] (numpy or torch) + w * committee [n] -> blended scores [..., n]."""
        mu, sd = self.z["network"]
        return (network - mu) / sd + self.weight * committee

    def _z(self, part: str, s: np.ndarray) -> np.ndarray:
        mu, sd = self.z[part]
        return (s - mu) / sd


def load_blend(run_dir: str | Path) -> Blend | None:
    """The run's blend (blend.json + lightgbm.txt), or None when the run serves its network alone (no blend.json
    or a chosen weight of 0). A damaged or unknown blend.json is a ConfigError naming the file and field."""
    path = Path(run_dir) / BLEND_FILE
    if not path.exists():
        return None
    info = read_json(path)
    try:
        weight = float(info["weight"])
        if weight == 0.0:
            return None
        committee = tuple(info["committee"])
        z = {k: (float(v[0]), float(v[1])) for k, v in info["z"].items()}
        features = FeatureBuilder.from_state(info["features"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"{path}: field {exc} is missing or malformed") from exc
    unknown = set(committee) - {"lightgbm", "ridge"}
    if unknown:
        raise ConfigError(f"{path}: field 'committee': unknown part(s) {sorted(unknown)}")
    booster = None
    if "lightgbm" in committee:
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(Path(run_dir) / info["lightgbm"]["file"]))
    return Blend(weight, committee, z, _as_arrays(features), booster, _ridge_arrays(info.get("ridge")), info)


def _as_arrays(features: FeatureBuilder) -> FeatureBuilder:
    """The builder with its PCA state as float64 arrays: a request then converts no JSON lists."""
    features.pca_ = {k: {"mean": np.asarray(v["mean"], dtype=np.float64),
                         "components": np.asarray(v["components"], dtype=np.float64)} for k, v in features.pca_.items()}
    return features


def _ridge_arrays(state: dict | None) -> dict | None:
    if state is None:
        return None
    return {**state, **{k: np.asarray(state[k], dtype=np.float64) for k in ("mean", "scale", "coef")}}


class BatchFeatures:
    """FeatureBuilder.transform_tokens of a Ragged batch, in torch float64 on the CPU: the same features (to float32
    rounding), computed with less work and without holding the GIL that the serving threads share (numpy's
    small-array arithmetic holds it): a list-constant token's PCA runs once per list, a cosine with one is a
    [n, lists] product."""

    def __init__(self, builder: FeatureBuilder) -> None:
        def f64(values: Any) -> Tensor:
            return torch.as_tensor(np.asarray(values, dtype=np.float64))

        self.tokens = [name for name, dim in builder.tokens_
                       if name in builder.pca_ or builder.clip == "raw" or dim < builder.wide]
        # (x - mean) @ C^T as x @ C^T - mean @ C^T: no centred copy of the wide rows
        self.pca = {name: (f64(p["components"]).T, f64(p["mean"]) @ f64(p["components"]).T)
                    for name, p in builder.pca_.items()}
        self.pairs = list(builder.pairs_)  # (per-candidate token, list-constant token)

    def __call__(self, batch: Ragged) -> np.ndarray:
        """Raw Ragged batch -> feature rows [n, F] float32 (as transform_tokens)."""
        list_of_row = batch.list_of_row().cpu() if batch.lists else None
        values = {name: x.cpu().double() for name, x in {**batch.rows, **batch.lists}.items()}

        def per_row(name: str, x: Tensor) -> Tensor:
            return x[list_of_row] if name in batch.lists else x

        def projected(name: str) -> Tensor:
            return values[name] if name not in self.pca else values[name] @ self.pca[name][0] - self.pca[name][1]

        cols = [per_row(name, projected(name)) for name in self.tokens]
        for a, b in self.pairs:
            rows, other = _unit64(per_row(a, values[a])), _unit64(values[b])
            cols.append((rows @ other.T).gather(1, list_of_row[:, None]) if b in batch.lists
                        else (rows * per_row(b, other)).sum(1, keepdim=True))
        n = batch.positions.numel()
        return (torch.cat(cols, dim=1) if cols else torch.zeros(n, 0)).float().numpy()


def _unit64(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def served_model(blend: Blend | None) -> dict:
    """What scores a request: the network alone, or its blend with the peers (weight, committee)."""
    if blend is None:
        return {"kind": "network"}
    return {"kind": "blend", "weight": blend.weight, "committee": list(blend.committee)}


def blend_summary(run_dir: str | Path) -> dict | None:
    """blend.json's description without the models: parts held, the chosen weight and each part's val nDCG@10."""
    path = Path(run_dir) / BLEND_FILE
    if not path.exists():
        return None
    info = read_json(path)
    return {k: info.get(k) for k in ("kind", "parts", "weight", "val_ndcg@10", "weights_tried", "committee", "why")}


class BlendedModel(nn.Module):
    """The served network and the blend as one model with CoTRRModel's serving contract: score(Ragged) -> [n],
    forward(tokens [B, L, d], mask [B, L]) -> [B, L] (0 at padding). The trees read the batch's raw rows on the
    CPU; the result comes back on the batch's device in float32."""

    def __init__(self, network: nn.Module, blend: Blend) -> None:
        super().__init__()
        self.network = network
        self.blend = blend
        self.features = BatchFeatures(blend.features)
        self.list_constant = tuple(network.encoder.list_constant)

    def committee(self, batch: Ragged) -> Tensor:
        """The committee's z-score [n] of the batch's rows, on the batch's device."""
        c = self.blend.committee_of(self.features(batch))
        return torch.from_numpy(c.astype(np.float32)).to(batch.positions.device)

    def score(self, batch: Ragged) -> Tensor:
        """Blended scores [n] of a Ragged batch of raw features."""
        return self.blend.combine(self.network.score(batch).float(), self.committee(batch))

    def forward(self, tokens: dict[str, Tensor], mask: Tensor) -> Tensor:
        batch = Ragged.from_padded(tokens, mask, self.list_constant)
        out = torch.zeros(mask.numel(), device=mask.device)
        out[batch.positions] = self.score(batch)
        return out.view(mask.shape)


def sampled_scores(model: nn.Module, batch: Ragged, n_samples: int, scope: str = "all",
                   first_list: int = 0) -> tuple[Tensor, Tensor]:
    """(scores [n], MC-dropout samples [S, n'] of lists first_list..) of the served model (mc.mc_scores): for a
    BlendedModel the network's samples blended with the (deterministic) committee, so the spread covers the
    network part only."""
    if not isinstance(model, BlendedModel):
        return network_mc_scores(model, batch, n_samples, scope, first_list=first_list)
    scores, samples = network_mc_scores(model.network, batch, n_samples, scope, first_list=first_list)
    committee = model.committee(batch)
    return (model.blend.combine(scores.float(), committee),
            model.blend.combine(samples.float(), committee[batch.first_row(first_list):]))
