"""Optional fp32 speed step: the model's standardisation folded into its token projections.

proj(standardise(x)) = (W / std) x + b - (W / std) mean, as BatchNorm is folded into a convolution, so a
request's features go to the served copy as they come: no pass over them before the first Linear. The
statistics are read from the model's own Standardise layer; the folded tokens leave it (it is replaced by
an identity when none is left and there is no log transform).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from cotrr_core.model import CoTRRModel, Standardise

__all__ = ["FOLD_MAX_SHIFT", "fold_standardisation"]

# A token whose |mean| / std exceeds this keeps explicit standardisation: folded, W'x and W'mean would
# cancel in float32 and lose ~FOLD_MAX_SHIFT x float32's 6e-8 relative precision.
FOLD_MAX_SHIFT = 100.0


def fold_standardisation(model: CoTRRModel) -> tuple[CoTRRModel, frozenset[str]]:
    """(a copy of `model` in eval mode whose projection of each foldable token takes the raw token, the tokens
    folded). Folded in float64 and rounded once, so scores move by float32 rounding only (~1e-6)."""
    model = copy.deepcopy(model).eval()
    layer: Standardise = model.standardise
    folded = []
    with torch.no_grad():
        for name in layer.names:
            mean, std = (t.double() for t in layer.stats(name))
            if float((mean.abs() / std).max()) > FOLD_MAX_SHIFT:
                continue
            proj = model.encoder.proj[name]
            weight = proj.weight.double() / std  # [H, d]: column j scaled by 1 / std_j
            proj.bias.copy_(proj.bias.double() - weight @ mean)
            proj.weight.copy_(weight)
            folded.append(name)
    rest = layer.without(folded)
    model.standardise = (nn.Identity() if not rest.names and not rest.log1p else rest).eval()
    return model, frozenset(folded)
