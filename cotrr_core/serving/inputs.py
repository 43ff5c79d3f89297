"""The model a Reranker serves and its input: the model in the serving precision, and token arrays of K
lists -> one Ragged batch on the run's device, in that precision (no padding is built).

In fp32 the served model is a copy whose token projections absorb the run's standardisation
(proj(standardise(x)) = (W / std) x + b - (W / std) mean, as BatchNorm is folded into a convolution),
so a request's features go to the model as they come: no pass over them before the forward.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from cotrr_core.data.scaling import signed_log1p, standardise
from cotrr_core.model import Ragged
from cotrr_core.training.runs import LoadedRun

__all__ = ["PRECISIONS", "FOLD_MAX_SHIFT", "ModelInputs", "model_in", "fold_standardisation"]

# int8 dynamic quantisation is measured in bench/serve.py (steps.precision) but not offered: it has been
# checked on the demo only, and quantised after folding (raw-scale inputs) it lost 0.15 nDCG@10 there.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
# A token whose |mean| / std exceeds this keeps explicit standardisation: folded, W'x and W'mean would
# cancel in float32 and lose ~FOLD_MAX_SHIFT x float32's 6e-8 relative precision.
FOLD_MAX_SHIFT = 100.0


def model_in(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """fp32: the model as is; bf16: a bfloat16 copy in eval mode (its inputs are bfloat16, see ModelInputs)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    return model if precision == "fp32" else copy.deepcopy(model).to(torch.bfloat16).eval()


def fold_standardisation(model: torch.nn.Module, scale: dict[str, tuple[torch.Tensor, torch.Tensor]],
                         ) -> tuple[torch.nn.Module, frozenset[str]]:
    """(a copy of `model` whose projection of each foldable token takes the token before standardisation,
    the tokens folded). scale: token -> (mean [d], std [d]); folded in float64 and rounded once, so
    scores move by float32 rounding only (~1e-6)."""
    model = copy.deepcopy(model).eval()
    folded = set()
    with torch.no_grad():
        for name, proj in model.encoder.proj.items():
            mean, std = (t.double() for t in scale[name])
            if float((mean.abs() / std).max()) > FOLD_MAX_SHIFT:
                continue
            weight = proj.weight.double() / std  # [H, d]: column j scaled by 1 / std_j
            proj.bias.copy_(proj.bias.double() - weight @ mean)
            proj.weight.copy_(weight)
            folded.add(name)
    return model, frozenset(folded)


class ModelInputs:
    """The model a Reranker serves (`model`) and the Ragged batches it scores."""

    def __init__(self, run: LoadedRun, precision: str = "fp32") -> None:
        self.model = model_in(run.model, precision)  # checks the precision
        self.device, self.dtype = run.device, PRECISIONS[precision]
        self.log_transform = run.scaler.log_transform
        self.scale = run.scaler.tensors(run.device)  # token -> (mean [d], std [d])
        self.folded: frozenset[str] = frozenset()
        if precision == "fp32":  # bf16 rounds the inputs after standardising, where rounding costs least
            self.model, self.folded = fold_standardisation(self.model, self.scale)
        self.row_tokens = [t.name for t in run.spec.tokens if not t.list_constant]
        self.list_tokens = [t.name for t in run.spec.tokens if t.list_constant]

    def __call__(self, features: dict[str, np.ndarray], offsets: np.ndarray,
                 starts: np.ndarray | None = None) -> Ragged:
        """K lists' rows as one Ragged batch; offsets [K + 1].

        With `starts` (the columnar path: every token [N, d]), list k is rows starts[k] : starts[k] +
        (offsets[k + 1] - offsets[k]) of `features` and its list-constant tokens are read from row
        starts[k]. Without (the Featurizer's output), the rows are laid end to end and list-constant
        tokens hold one row per list.
        """
        lengths = np.diff(offsets)
        n = int(offsets[-1])
        if starts is None or np.array_equal(starts, offsets[:-1]):
            take = slice(0, n)  # rows already laid end to end are used in place
        else:
            take = np.repeat(starts - offsets[:-1], lengths) + np.arange(n)
        first = slice(0, len(lengths)) if starts is None else starts
        rows = {name: self._scaled(name, features[name][take]) for name in self.row_tokens}
        lists = {name: self._scaled(name, features[name][first]) for name in self.list_tokens}
        return Ragged.from_lengths(rows, lists, lengths, self.device)

    def _scaled(self, name: str, x: np.ndarray) -> torch.Tensor:
        """Raw rows [n, d] -> the model's input on the device, in the serving dtype: standardised, or for
        a folded token as is (signed log1p when the run uses it)."""
        x = np.asarray(x, dtype=np.float32)
        if not x.flags.writeable:  # torch.from_numpy wants a writable array; nothing writes to it
            x = x.copy()
        x = self._to_device(torch.from_numpy(x))
        if name in self.folded:
            return signed_log1p(x) if self.log_transform else x
        return standardise(x, *self.scale[name], self.log_transform).to(self.dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":  # pinned host memory: an asynchronous copy
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)
