"""Load a trained run from its directory and score lists with it (batched, optional MC dropout)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cotrr_core.config import RunConfig
from cotrr_core.data.dataset import PaddedLists, RankingData
from cotrr_core.data.scaling import FeatureScaler
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.io import read_json
from cotrr_core.model import CoTRRModel, mc_dropout_scores

__all__ = ["pick_device", "LoadedRun", "load_run", "build_model", "score_padded", "score_data", "mc_samples_data", "flatten"]


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


def build_model(config: RunConfig, spec: FeatureSpec, token_dims: dict[str, int]) -> CoTRRModel:
    return CoTRRModel(config.model, token_dims, [t.name for t in spec.tokens if t.list_constant])


@dataclass
class LoadedRun:
    """Everything needed to score with a run, rebuilt from its directory alone."""

    run_dir: Path
    config: RunConfig
    spec: FeatureSpec
    scaler: FeatureScaler
    model: CoTRRModel
    temperature: float  # the loss's learned temperature: sigmoid(score / T) is the uncalibrated P(relevant)
    calibrator: object | None
    device: torch.device
    meta: dict


def load_run(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    """Rebuild model, config, spec, scaler and calibrator. Weights load with weights_only=True."""
    from cotrr_core.calibration import load_calibrator

    run_dir = Path(run_dir)
    meta = read_json(run_dir / "config.json")
    config = RunConfig.from_dict(meta["run"], where=f"{run_dir}/config.json")
    spec = FeatureSpec.from_dict(meta["spec"], where=f"{run_dir}/config.json spec")
    dev = pick_device(device)
    model = build_model(config, spec, meta["token_dims"])
    state = torch.load(run_dir / "model.pt", map_location=dev, weights_only=True)
    model.load_state_dict(state["model"])
    model.to(dev).eval()
    cal_path = run_dir / "calibrator.json"
    calibrator = load_calibrator(cal_path) if cal_path.exists() else None
    return LoadedRun(run_dir, config, spec, FeatureScaler.from_state(read_json(run_dir / "scaler.json")), model,
                     float(state.get("temperature", 1.0)), calibrator, dev, meta)


@torch.inference_mode()
def score_padded(model: CoTRRModel, padded: PaddedLists, device: torch.device, batch_lists: int = 64,
                 mc_samples: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores [B, L] (eval mode) and, with mc_samples > 0, the MC-dropout std [B, L]."""
    model.eval()
    B = padded.mask.shape[0]
    scores, stds = [], []
    for a in range(0, B, batch_lists):
        sl = slice(a, a + batch_lists)
        L = int(padded.mask[sl].sum(1).max())
        tokens = {k: torch.from_numpy(v[sl, :L]).to(device) for k, v in padded.tokens.items()}
        mask = torch.from_numpy(padded.mask[sl, :L]).to(device)
        s = model(tokens, mask).float()
        out = np.zeros(padded.mask[sl].shape, dtype=np.float64)
        out[:, :L] = s.cpu().numpy()
        scores.append(out)
        if mc_samples > 0:
            mc = mc_dropout_scores(model, tokens, mask, mc_samples).float()  # [S, b, L]
            sd = np.zeros_like(out)
            sd[:, :L] = mc.std(dim=0).cpu().numpy()
            stds.append(sd)
    return np.concatenate(scores), (np.concatenate(stds) if mc_samples > 0 else None)


def flatten(padded_values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[B, L] -> [N] real candidates in the data's row order."""
    return padded_values[mask]


@torch.inference_mode()
def mc_samples_data(run: LoadedRun, data: RankingData, n_samples: int, batch_lists: int = 64) -> np.ndarray:
    """MC-dropout raw scores [S, N] for every candidate of `data` (one batched forward per chunk)."""
    padded = data.padded()
    tokens_np = run.scaler.transform(padded.tokens)
    out = np.zeros((n_samples,) + padded.mask.shape, dtype=np.float64)
    for a in range(0, padded.mask.shape[0], batch_lists):
        sl = slice(a, a + batch_lists)
        L = int(padded.mask[sl].sum(1).max())
        tokens = {k: torch.from_numpy(v[sl, :L]).to(run.device) for k, v in tokens_np.items()}
        mask = torch.from_numpy(padded.mask[sl, :L]).to(run.device)
        out[:, sl, :L] = mc_dropout_scores(run.model, tokens, mask, n_samples,
                                           run.config.calibration.mc_scope).float().cpu().numpy()
    return out[:, padded.mask]


def score_data(run: LoadedRun, data: RankingData, mc_samples: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw scores [N] (and MC std [N]) for every candidate of `data`, in its row order."""
    padded = data.padded()
    padded.tokens = run.scaler.transform(padded.tokens)
    scores, std = score_padded(run.model, padded, run.device, mc_samples=mc_samples)
    return flatten(scores, padded.mask), (flatten(std, padded.mask) if std is not None else None)
