"""Score lists with a model: device choice, model construction, batched (and MC-dropout) scoring.

Everything here is a pure function of (model, data); loading a run from disk is
`cotrr_core.artifacts.load_run`.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from cotrr_core.config import RunConfig
from cotrr_core.data.dataset import PaddedLists, RankingData
from cotrr_core.data.scaling import FeatureScaler
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.mc import mc_dropout_scores
from cotrr_core.model import CoTRRModel

FIRST_STAGE_TOKEN = "first_stage"  # the token an inferred spec makes of first_stage_score

__all__ = ["ScoringRun", "pick_device", "build_model", "score_padded", "score_data", "mc_samples_data",
           "scaled_padded"]


class ScoringRun(Protocol):
    """What scoring reads from a run (an artifacts.LoadedRun): declared here so scoring sits below it."""

    config: RunConfig
    scaler: FeatureScaler
    model: CoTRRModel
    device: torch.device


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA > Apple MPS > CPU for 'auto'; an explicit choice is checked, not silently replaced."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but CUDA is not available")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' was requested but Apple MPS is not available")
    return device


def build_model(config: RunConfig, spec: FeatureSpec, token_dims: dict[str, int],
                scaler: FeatureScaler | None = None) -> CoTRRModel:
    """An untrained CoTRRModel for the spec's tokens (list-constant tokens read once per list), standardising
    its inputs with `scaler` (a fitted FeatureScaler; else until its state dict is loaded: identity). The
    spec's similarity pair, else its "first_stage" token, is the prior the network adds a residual to.

    Tokens are taken in the SPEC's order whatever the order of `token_dims` (config.json stores it with
    sorted keys): the token-type embedding is indexed by position.
    """
    dims = {t.name: int(token_dims[t.name]) for t in spec.tokens}
    model = CoTRRModel(config.model, dims, [t.name for t in spec.tokens if t.list_constant],
                       similarity=getattr(spec, "similarity", None), prior_token=FIRST_STAGE_TOKEN)
    if scaler is not None:
        model.set_standardisation(scaler.to_state())
    return model


def scaled_padded(run: ScoringRun, data: RankingData, query_index=None) -> PaddedLists:
    """Padded lists of raw features, read per batch: what the run's model takes (it standardises them)."""
    return data.padded(query_index)


@torch.inference_mode()
def score_padded(model: CoTRRModel, padded: PaddedLists, device: torch.device, batch_lists: int = 64) -> np.ndarray:
    """Eval-mode scores [B, L] (0 at padding) of padded lists of raw features."""
    model.eval()
    out = np.zeros(padded.mask.shape, dtype=np.float64)
    for sl in padded.chunks(batch_lists):
        tokens, mask, _ = padded.batch(sl, device)
        out[sl, :mask.shape[1]] = model(tokens, mask).float().cpu().numpy()
    return out


def score_data(run: ScoringRun, data: RankingData) -> np.ndarray:
    """Raw scores [N] for every candidate of `data`, in its row order.

    Args:
        run: a loaded run (model, scaler, device).
        data: validated lists.
    Returns:
        float64 [N] raw scores (the served score: blended when the run holds a blend); higher ranks first.
    """
    padded = scaled_padded(run, data)
    return _served(run, data, score_padded(run.model, padded, run.device)[padded.mask])


def _served(run: ScoringRun, data: RankingData, network: np.ndarray) -> np.ndarray:
    """The network's scores [..., N] as the run serves them: blended with its peers (serving/blended.py) or as is."""
    blend = getattr(run, "blend", None)
    return network if blend is None else blend.combine(network, blend.committee_split(data.features, data.num_candidates))


@torch.inference_mode()
def mc_samples_data(run: ScoringRun, data: RankingData, n_samples: int, batch_lists: int = 64) -> np.ndarray:
    """MC-dropout raw scores [S, N] for every candidate of `data` (one batched forward per chunk)."""
    padded = scaled_padded(run, data)
    out = np.zeros((n_samples,) + padded.mask.shape, dtype=np.float64)
    for sl in padded.chunks(batch_lists):
        tokens, mask, _ = padded.batch(sl, run.device)
        out[:, sl, :mask.shape[1]] = mc_dropout_scores(run.model, tokens, mask, n_samples,
                                                       run.config.calibration.mc_scope).float().cpu().numpy()
    return _served(run, data, out[:, padded.mask])  # a blend's samples vary in the network part only
