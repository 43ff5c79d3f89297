"""The model a Reranker serves and its input: the model in the serving precision, and token arrays of K
lists -> one standardised Ragged batch on the run's device, in that precision (no padding is built)."""
from __future__ import annotations

import copy

import numpy as np
import torch

from cotrr_core.data.scaling import standardise
from cotrr_core.model import Ragged
from cotrr_core.training.runs import LoadedRun

__all__ = ["PRECISIONS", "ModelInputs", "model_in"]

# int8 dynamic quantisation is measured in bench/serve.py but not offered: it is slower per list
# than fp32 on this CPU and only pays for batch throughput.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def model_in(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """fp32: the model as is; bf16: a bfloat16 copy in eval mode (its inputs are bfloat16, see ModelInputs)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    return model if precision == "fp32" else copy.deepcopy(model).to(torch.bfloat16).eval()


class ModelInputs:
    """Builds the Ragged batch a Reranker scores; holds the run's standardisation on its device."""

    def __init__(self, run: LoadedRun, precision: str = "fp32") -> None:
        self.device, self.dtype = run.device, PRECISIONS[precision]
        self.log_transform = run.scaler.log_transform
        self.scale = run.scaler.tensors(run.device)  # token -> (mean [d], std [d])
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
        return Ragged.from_lengths(rows, lists, torch.from_numpy(lengths), self.device)

    def _scaled(self, name: str, x: np.ndarray) -> torch.Tensor:
        """Raw rows [n, d] -> standardised tensor on the device, in the serving dtype."""
        x = np.asarray(x, dtype=np.float32)
        if not x.flags.writeable:  # torch.from_numpy wants a writable array; nothing writes to it
            x = x.copy()
        x = self._to_device(torch.from_numpy(x))
        return standardise(x, *self.scale[name], self.log_transform).to(self.dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":  # pinned host memory: an asynchronous copy
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)
