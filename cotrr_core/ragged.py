"""A batch of K candidate lists without padding: only the real candidates' rows.

The model's trunk, the prior and MC sampling all work on it; serving builds it straight from token
arrays and list lengths (no padding to begin with), training from padded tensors and a mask.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Ragged"]


@dataclass
class Ragged:
    """K lists of candidates without padding.

    rows {name: [n, d]}: the per-candidate groups, list k's candidates consecutive (row-major order
    of `mask`); lists {name: [K, d]}: the list-constant groups, one vector per list; mask [K, L]:
    True at the n real candidates; positions [n]: each row's flat index into [K, L].
    """

    rows: dict[str, Tensor]
    lists: dict[str, Tensor]
    mask: Tensor
    positions: Tensor

    @classmethod
    def from_padded(cls, tokens: Mapping[str, Tensor], mask: Tensor, list_constant: Sequence[str] = ()) -> Ragged:
        """Padded tokens {name: [K, L, d]} + mask [K, L] -> the real rows (list-constant: candidate 0's
        vector, zeroed when it is padding)."""
        k, l = mask.shape
        positions = mask.reshape(-1).nonzero().squeeze(1)
        rows = {n: x.reshape(k * l, -1)[positions] for n, x in tokens.items() if n not in list_constant}
        lists = {n: torch.where(mask[:, :1], tokens[n][:, 0], 0.0) for n in list_constant}
        return cls(rows, lists, mask, positions)

    @classmethod
    def from_lengths(cls, rows: dict[str, Tensor], lists: dict[str, Tensor], lengths: Tensor | np.ndarray,
                     device: torch.device | str | None = None) -> Ragged:
        """Rows of K lists laid end to end; lengths [K] (>= 1 each). Mask and positions are built on the CPU
        (in numpy, cheaper than torch at this size) and copied to `device` (default: the rows'), so a CUDA
        batch costs no device-to-host sync."""
        lengths = lengths.cpu().numpy() if isinstance(lengths, Tensor) else np.asarray(lengths)
        mask = np.arange(lengths.max())[None, :] < lengths[:, None]
        positions = torch.from_numpy(np.flatnonzero(mask))
        device = device or next(iter((rows or lists).values())).device
        return cls(rows, lists, torch.from_numpy(mask).to(device, non_blocking=True),
                   positions.to(device, non_blocking=True))

    def padded(self) -> tuple[dict[str, Tensor], Tensor]:
        """The same lists padded: tokens {name: [K, L, d]} (zeros at padding) and mask [K, L]."""
        k, l = self.mask.shape
        tokens = {n: self.to_padded(x) for n, x in self.rows.items()}
        tokens.update({n: x[:, None].expand(k, l, -1) for n, x in self.lists.items()})
        return tokens, self.mask

    def to_padded(self, x: Tensor) -> Tensor:
        """Per-row values [n, ...] -> [K, L, ...], zeros at padding."""
        k, l = self.mask.shape
        n = self.positions.numel()
        flat = x if isinstance(n, int) and n == k * l else _unpack(x, self.positions, k * l)  # one full list: in place
        return flat.view(k, l, *x.shape[1:])

    def to_rows(self, x: Tensor) -> Tensor:
        """Padded values [K, L, ...] -> the real rows' [n, ...]."""
        n = self.positions.numel()
        flat = x.flatten(0, 1)
        return flat if isinstance(n, int) and n == flat.size(0) else flat[self.positions]

    def list_of_row(self) -> Tensor:
        """[n] the list each row belongs to."""
        return self.positions // self.mask.size(1)

    def repeat(self, times: int) -> Ragged:
        """The batch `times` times over: list s * K + k is copy s of list k."""
        size = self.mask.numel()
        offsets = torch.arange(times, device=self.positions.device).repeat_interleave(len(self.positions)) * size
        return Ragged({n: x.repeat(times, 1) for n, x in self.rows.items()},
                      {n: x.repeat(times, 1) for n, x in self.lists.items()},
                      self.mask.repeat(times, 1), self.positions.repeat(times) + offsets)

    def first_row(self, k: int) -> int:
        """The index of list k's first row (the rows of lists before it)."""
        return int(self.mask[:k].sum())

    def tail(self, first_list: int) -> tuple[Ragged, int]:
        """(lists first_list.. as a batch of their own, the index of their first row in this batch)."""
        row = self.first_row(first_list)
        width = self.mask.size(1)
        return Ragged({n: x[row:] for n, x in self.rows.items()}, {n: x[first_list:] for n, x in self.lists.items()},
                      self.mask[first_list:], self.positions[row:] - first_list * width), row

    def with_tokens(self, tokens: Mapping[str, Tensor]) -> Ragged:
        """The same lists with each group's values replaced by tokens[name] (rows [n, d] or lists [K, d])."""
        return Ragged({n: tokens[n] for n in self.rows}, {n: tokens[n] for n in self.lists}, self.mask, self.positions)


def _unpack(x: Tensor, rows: Tensor, n: int) -> Tensor:
    """Rows [k, ...] at flat positions `rows` [k] -> [n, ...], zeros elsewhere."""
    return x.new_zeros(n, *x.shape[1:]).index_copy(0, rows, x)
