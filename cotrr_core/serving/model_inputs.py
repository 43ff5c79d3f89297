"""The model a Reranker serves and its input: the model in the serving precision, and raw token arrays of K
lists -> one Ragged batch on the run's device (no padding is built, nothing is standardised here: the
model does it).

fp32 serves a copy with the standardisation folded into the token projections (serving/fold.py); bf16 a
bfloat16 copy whose Standardise layer stays float32, so the inputs are rounded after standardising.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from cotrr_core.model import Ragged
from cotrr_core.serving.blended import BlendedModel
from cotrr_core.serving.fold import fold_standardisation

__all__ = ["PRECISIONS", "ModelInputs", "served_model"]

# int8 dynamic quantisation is measured in bench/serve.py (steps.precision) but not offered: it has been
# checked on the demo only, and quantised on raw-scale inputs it lost nDCG@10 there.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def served_model(model: torch.nn.Module, precision: str, fold: bool = True) -> tuple[torch.nn.Module, frozenset[str]]:
    """(the copy a Reranker serves in eval mode, the tokens whose standardisation is folded into it).
    fp32: folded when `fold`; bf16: a bfloat16 copy, its standardisation in float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return fold_standardisation(model) if fold else (model, frozenset())
    served = copy.deepcopy(model).to(torch.bfloat16).eval()
    served.standardise.float()
    return served, frozenset()


class ModelInputs:
    """The model a Reranker serves (`model`) and the Ragged batches it scores."""

    def __init__(self, run: Any, precision: str = "fp32", fold: bool = True) -> None:
        self.model, self.folded = served_model(run.model, precision, fold)  # checks the precision
        if getattr(run, "blend", None) is not None:  # the run serves a blend: this copy is its network part
            self.model = BlendedModel(self.model, run.blend)
        self.device = run.device
        self.row_tokens = [t.name for t in run.spec.tokens if not t.list_constant]
        self.list_tokens = [t.name for t in run.spec.tokens if t.list_constant]

    def __call__(self, features: dict[str, np.ndarray], offsets: np.ndarray,
                 starts: np.ndarray | None = None) -> Ragged:
        """K lists' rows as one Ragged batch of raw float32 features; offsets [K + 1].

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
        rows = {name: self._tensor(features[name][take]) for name in self.row_tokens}
        lists = {name: self._tensor(features[name][first]) for name in self.list_tokens}
        return Ragged.from_lengths(rows, lists, lengths, self.device)

    def compact(self, features: dict[str, np.ndarray], offsets: np.ndarray,
                starts: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The K lists as `__call__` reads them without `starts`: row tokens laid end to end [n, d], list-constant
        tokens one row per list [K, d] (views where the rows already lie so; what the batcher concatenates)."""
        names = self.row_tokens + self.list_tokens
        if starts is None:
            return {name: features[name] for name in names}
        lengths = np.diff(offsets)
        n = int(offsets[-1])
        if np.array_equal(starts, offsets[:-1]):
            take = slice(0, n)
        else:
            take = np.repeat(starts - offsets[:-1], lengths) + np.arange(n)
        out = {name: features[name][take] for name in self.row_tokens}
        out.update({name: features[name][starts] for name in self.list_tokens})
        return out

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        """Raw rows [n, d] -> float32 on the device."""
        x = np.asarray(x, dtype=np.float32)
        if not x.flags.writeable:  # torch.from_numpy wants a writable array; nothing writes to it
            x = x.copy()
        t = torch.from_numpy(x)
        if self.device.type == "cuda":  # pinned host memory: an asynchronous copy
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)
