"""The run directory as an artifact: what a trained run writes, and `load_run`, which rebuilds it.

artifacts/runs/<run_id>/ holds
- config.json: the RunConfig, feature spec, token dims, versions and data fingerprints (`run_meta`);
- scaler.json: the training split's feature standardisation;
- model.pt: the best epoch's weights and the loss's temperature (read with weights_only=True);
- calibrator.json (JSON state, never a pickle) and metrics.json (written once, at the end);
- blend.json (+ lightgbm.txt): the peers the run blends with its network, when `train` chose a blend on
  validation (training/blend.py; served by serving/blended.py). The calibrator is fitted on the served score.
The registry around the directory (status, cancel, history, listing, dataset identity) is
`cotrr_core.training.runs`; this module is below training, so serving needs nothing from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cotrr_core import __version__
from cotrr_core.calibration.calibrators import Calibrator, load_calibrator, uncalibrated_probs
from cotrr_core.config import RunConfig
from cotrr_core.data.scaling import FeatureScaler
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.io import atomic_write, read_json, write_json
from cotrr_core.model import CoTRRModel
from cotrr_core.scoring import build_model, pick_device
from cotrr_core.serving.blended import Blend, load_blend

__all__ = ["LoadedRun", "load_run", "stored_config", "run_meta", "write_run_start", "weights_state",
           "save_weights", "write_metrics"]

# Keys of configs written by earlier versions that no longer exist; dropped when an old run is loaded.
_RETIRED_KEYS = {"calibration": ("mc_samples",), "loss": ("relevance_threshold",)}


@dataclass
class LoadedRun:
    """Everything needed to score with a run: rebuilt from its directory, or the trainer's run in memory."""

    run_dir: Path
    config: RunConfig
    spec: FeatureSpec
    scaler: FeatureScaler
    model: CoTRRModel  # in eval mode on `device`
    temperature: float  # the loss's learned temperature: sigmoid(score / T) is the uncalibrated P(relevant)
    calibrator: Calibrator | None
    device: torch.device
    meta: dict  # config.json
    blend: Blend | None = None  # the peers blended with the network's score (blend.json), None: the network alone

    def probabilities(self, scores: Any) -> np.ndarray:
        """Raw (served: blended when the run blends) scores [...] -> P(relevant) [...] in [0, 1]: the calibrator,
        else sigmoid(score / T)."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.calibrator is None:
            return uncalibrated_probs(scores, self.temperature)
        return np.clip(self.calibrator.predict(scores.reshape(-1)), 0.0, 1.0).reshape(scores.shape)


def stored_config(meta: dict, run_dir: Path) -> RunConfig:
    """The RunConfig of a run's config.json (keys retired by later versions dropped)."""
    raw = {section: {k: v for k, v in fields.items() if k not in _RETIRED_KEYS.get(section, ())}
           if isinstance(fields, dict) else fields for section, fields in meta["run"].items()}
    return RunConfig.from_dict(raw, where=f"{run_dir}/config.json")


def load_run(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    """Rebuild model, config, spec, scaler and calibrator from a run directory.

    Args:
        run_dir: artifacts/runs/<run_id> (config.json, model.pt, scaler.json, optional calibrator.json and
            blend.json + lightgbm.txt).
        device: "auto" (CUDA > MPS > CPU), "cpu", "cuda[:i]" or "mps".
    Returns:
        A LoadedRun. Weights load with torch.load(weights_only=True); the calibrator from JSON.
    """
    run_dir = Path(run_dir)
    meta = read_json(run_dir / "config.json")
    config = stored_config(meta, run_dir)
    spec = FeatureSpec.from_dict(meta["spec"], where=f"{run_dir}/config.json spec")
    dev = pick_device(device)
    model = build_model(config, spec, meta["token_dims"])
    state = torch.load(run_dir / "model.pt", map_location=dev, weights_only=True)
    scaler_state = read_json(run_dir / "scaler.json")
    model.load_weights(state["model"], scaler_state)  # an older model.pt: standardisation from scaler.json
    model.to(dev).eval()
    cal_path = run_dir / "calibrator.json"
    calibrator = load_calibrator(cal_path) if cal_path.exists() else None
    return LoadedRun(run_dir, config, spec, FeatureScaler.from_state(scaler_state), model,
                     float(state.get("temperature", 1.0)), calibrator, dev, meta, load_blend(run_dir))


def run_meta(bench: Any, config: RunConfig, model: CoTRRModel, device: torch.device, world: int) -> dict:
    """config.json of a new run on `bench` (a Benchmark): everything load_run needs, plus provenance."""
    train = bench.splits["train"]
    return {"run": config.to_dict(), "dataset": bench.name, "dataset_note": bench.note,
            "spec": train.spec.to_dict(), "token_dims": train.token_dims,
            "package_version": __version__, "torch_version": torch.__version__,
            "data_fingerprint": {k: d.fingerprint() for k, d in bench.splits.items()},
            "parameters": sum(p.numel() for p in model.parameters()), "device": str(device), "world_size": world}


def write_run_start(run_dir: Path, meta: dict, scaler: FeatureScaler) -> None:
    """What a run writes before its first step: config.json and scaler.json."""
    write_json(Path(run_dir) / "config.json", meta)
    write_json(Path(run_dir) / "scaler.json", scaler.to_state())


def weights_state(model: torch.nn.Module, temperature: float) -> dict:
    """model.pt's content, detached from training: {"model": state dict (CPU copies), "temperature"}."""
    return {"model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
            "temperature": float(temperature)}


def save_weights(run_dir: Path, state: dict) -> None:
    """Write model.pt (a weights_state) atomically."""
    atomic_write(Path(run_dir) / "model.pt", lambda p: torch.save(state, p))


def write_metrics(run_dir: Path, metrics: dict) -> None:
    """Write metrics.json atomically: best epoch, validation, test and calibration."""
    write_json(Path(run_dir) / "metrics.json", metrics)
