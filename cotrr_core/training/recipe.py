"""Training recipes: the app's first-launch config and the automatic recipe for a new dataset."""
from __future__ import annotations

import numpy as np

from cotrr_core.config import RunConfig
from cotrr_core.data.dataset import RankingData
from cotrr_core.data.rowread import iter_chunks

__all__ = ["fast_config", "auto_config"]


def fast_config() -> RunConfig:
    """The app's first-launch config: half-width model with list context, up to 20 epochs
    (auto_config's choice for embedding features; its quality is in bench/results/quality.md), the network
    alone: the blend's peers (training/blend.py: on the demo about as long again as the network) are in the
    recommended recipe, `train`'s default."""
    cfg = RunConfig()
    cfg.model.hidden = 128
    cfg.model.list_context = True
    cfg.train.epochs = 20
    cfg.train.patience = 5
    cfg.train.warmup_steps = 10
    cfg.train.blend = "off"
    return cfg


def auto_config(train: RankingData) -> tuple[RunConfig, str]:
    """Settings from the training split's size and feature kinds (no search, no test data).

    Returns (config, the rule as one line). The rule, measured on validation (bench/results):
    * embeddings (a token >= 64 wide, the demo's CLIP vectors): width 128, 2 layers, 8 heads,
      list context, dropout 0.15, up to 20 epochs with patience 5 (the app's fast config).
    * tabular (LETOR-style numeric features): a small model (width 64, 1 layer, 4 heads) with
      list context, dropout 0.1 (0.2 under 300 training lists), weight decay 0.05 under 300,
      batch 16, up to 40 epochs with patience 8.
    * heavy-tailed features (some feature's 99th percentile |x| > 10, e.g. raw counts): signed
      log1p before standardising, else the spec's choice.
    Both: ListMLE + focal (RankNet warm-up for epoch 1 only), cosine schedule, and the calibrator
    with the lowest out-of-fold ECE on the cal + val splits ("auto").
    """
    n_q = train.num_queries
    wide = any(d >= 64 for d in train.token_dims.values())
    cfg = RunConfig()
    small = n_q < 300
    if wide:
        cfg.model.hidden, cfg.model.layers, cfg.model.heads, cfg.model.dropout = 128, 2, 8, 0.15
        cfg.train.epochs, cfg.train.patience, cfg.train.batch_size, cfg.train.warmup_steps = 20, 5, 32, 10
        kind = "embeddings"
    else:
        cfg.model.hidden, cfg.model.layers, cfg.model.heads = 64, 1, 4
        cfg.model.dropout = 0.2 if small else 0.1
        cfg.train.weight_decay = 0.05 if small else 0.01
        cfg.train.epochs, cfg.train.patience, cfg.train.batch_size, cfg.train.warmup_steps = 40, 8, 16, 10
        kind = "tabular"
    cfg.model.list_context = True
    heavy = any(_share_above(v, 10.0) > 0.01 for v in train.features.values() if v.size)
    if heavy:
        cfg.train.log_features = "on"
    cfg.calibration.method = "auto"
    rule = (f"auto: {kind} features, {n_q} training lists ({'small' if small else 'large'}), "
            f"log1p {'on (heavy-tailed)' if heavy else 'as spec'}; width {cfg.model.hidden}, "
            f"{cfg.model.layers} layer(s), dropout {cfg.model.dropout}, list context, ListMLE+focal")
    return cfg, rule


def _share_above(values: np.ndarray, limit: float) -> float:
    """Share of the entries of `values` [N, d] with |x| > limit, read in row chunks (memmap-safe): the
    99th percentile of |x| exceeds `limit` when this share exceeds 1%."""
    return sum(int((np.abs(c) > limit).sum()) for c in iter_chunks(values)) / values.size
