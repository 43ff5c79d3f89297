"""LazyPaddedLists: the padded view whose token arrays are gathered per batch, never all at once.

`RankingData.padded()` returns one. Mask and labels ([B, L], small) are built at once; tokens
([b, L', d] per batch) are read from the features (in memory or the memmapped cache), padded and,
with a scaler, standardised exactly as the eager path did (pad with 0, then standardise the block in
float64), so batches are bit-identical to padding everything first.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from cotrr_core.data.dataset import PaddedLists, to_device
from cotrr_core.data.rowread import read_rows

__all__ = ["LazyPaddedLists"]


class LazyPaddedLists(PaddedLists):
    """Padded lists `query_index` of `data` (cut to `max_len`), standardised by `scaler` if given."""

    def __init__(self, data: Any, query_index: np.ndarray | None = None, max_len: int = 0,
                 scaler: Any = None) -> None:
        qi = np.arange(data.num_queries) if query_index is None else np.asarray(query_index, dtype=np.int64)
        lengths = data.list_lengths[qi]
        if max_len > 0:
            lengths = np.minimum(lengths, max_len)
        L = int(lengths.max()) if len(qi) else 0
        mask = np.arange(L)[None, :] < lengths[:, None]  # [B, L]
        idx = np.where(mask, data.offsets[qi][:, None] + np.arange(L)[None, :], 0)
        self.labels = np.where(mask, data.labels[idx], 0.0).astype(np.float32)
        self.mask, self.query_index = mask, qi
        self._data, self._scaler, self._lengths, self._tokens = data, scaler, lengths, None

    @property
    def tokens(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        """All lists padded, {name: [B, L, d] float32}: materialised on first access (compatibility)."""
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
        return self._scaler.transform(out) if self._scaler is not None else out

    def batch(self, idx: np.ndarray | slice, device: str | object = "cpu"):
        """Lists `idx` trimmed to their longest real list, as torch tensors on `device`.

        Returns (tokens {name: [b, L', d] float32}, mask [b, L'] bool, labels [b, L'] float32).
        """
        if self._tokens is not None:
            return super().batch(idx, device)
        lists = np.arange(len(self.mask))[idx]
        mask = self.mask[lists]
        L = max(int(mask.sum(1).max()), 1) if len(mask) else 0
        tokens = {k: to_device(v, device) for k, v in self.gather(lists, L).items()}
        return tokens, to_device(mask[:, :L], device), to_device(self.labels[lists, :L], device)
