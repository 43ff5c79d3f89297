"""PaddedLists: B lists padded to a common length, their token arrays gathered per batch, never all at once.

`RankingData.padded()` returns one. Mask and labels ([B, L], small) are built at once; tokens ([b, L', d]
per batch) are read from the features (in memory or the memmapped cache) and padded with 0. The features
stay raw: the model standardises them itself (model.Standardise).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from cotrr_core.data.rowread import read_rows

__all__ = ["PaddedLists", "to_device"]


def to_device(a: np.ndarray, device: str | object = "cpu"):
    """A numpy array as a torch tensor on `device` (pinned for CUDA)."""
    import torch  # lazily: the data layer must not pull in torch

    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.pin_memory().to(device, non_blocking=True) if torch.device(device).type == "cuda" else t.to(device)


class PaddedLists:
    """Padded lists `query_index` of `data` (a RankingData; cut to `max_len`). labels, mask: [B, L] numpy;
    `batch` gives torch tensors of a slice of lists, `tokens` all of them at once."""

    def __init__(self, data: Any, query_index: np.ndarray | None = None, max_len: int = 0) -> None:
        qi = np.arange(data.num_queries) if query_index is None else np.asarray(query_index, dtype=np.int64)
        lengths = data.list_lengths[qi]
        if max_len > 0:
            lengths = np.minimum(lengths, max_len)
        L = int(lengths.max()) if len(qi) else 0
        mask = np.arange(L)[None, :] < lengths[:, None]  # [B, L]
        idx = np.where(mask, data.offsets[qi][:, None] + np.arange(L)[None, :], 0)
        self.labels = np.where(mask, data.labels[idx], 0.0).astype(np.float32)
        self.mask, self.query_index = mask, qi
        self._data, self._lengths, self._tokens = data, lengths, None

    @property
    def tokens(self) -> dict[str, np.ndarray]:
        """All lists padded, {name: [B, L, d] float32}: materialised on first access."""
        if self._tokens is None:
            self._tokens = self.gather(np.arange(len(self.mask)), self.mask.shape[1])
        return self._tokens

    @tokens.setter
    def tokens(self, value: dict[str, np.ndarray]) -> None:
        self._tokens = value

    def gather(self, lists: np.ndarray, L: int) -> dict[str, np.ndarray]:
        """Lists `lists` (positions in this view) padded to L: {name: [b, L, d] float32}."""
        lengths = np.minimum(self._lengths[lists], L)
        starts = self._data.offsets[self.query_index[lists]]
        rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)]) if len(lists) else \
            np.zeros(0, dtype=np.int64)
        mask = np.arange(L)[None, :] < lengths[:, None]
        out = {}
        for k, arr in self._data.features.items():
            block = np.zeros((len(lists), L, arr.shape[1]), dtype=np.float32)
            block[mask] = read_rows(arr, rows)  # row-major mask order = list by list, rank by rank
            out[k] = block
        return out

    def batch(self, idx: np.ndarray | slice, device: str | object = "cpu"):
        """Lists `idx` trimmed to their longest real list, as torch tensors on `device`.

        Returns (tokens {name: [b, L', d] float32}, mask [b, L'] bool, labels [b, L'] float32).
        """
        lists = np.arange(len(self.mask))[idx]
        mask = self.mask[lists]
        L = max(int(mask.sum(1).max()), 1) if len(mask) else 0
        if self._tokens is not None:
            tokens = {k: v[lists][:, :L] for k, v in self._tokens.items()}
        else:
            tokens = self.gather(lists, L)
        tokens = {k: to_device(v, device) for k, v in tokens.items()}
        return tokens, to_device(mask[:, :L], device), to_device(self.labels[lists, :L], device)

    def chunks(self, batch_lists: int):
        """Slices of at most `batch_lists` lists covering all B lists in order."""
        return [slice(a, a + batch_lists) for a in range(0, self.mask.shape[0], batch_lists)]
