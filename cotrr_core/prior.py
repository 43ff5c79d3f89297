"""The first-stage prior: the order a model starts from and falls back to, and the similarity it reads.

A reranker on a small training set should not have to relearn what the first stage knows. When the
spec names a query-candidate vector pair (e.g. CLIP text and image), the prior is their cosine
normalised over a bank of training queries; when it only has a first-stage score token, the prior is
that score. The network adds a residual to the prior (its head starts at zero), and a run may keep
the prior alone, or the first-stage order, when that wins on validation (`mode`).

Hubness is what a CLIP first stage gets wrong most: a few images sit close to many queries. QB-Norm
(Bogolin et al., CVPR 2022) corrects it with an inverted softmax over a bank of training queries: an
image's score for a query is discounted by how well it matches the bank. The bank lives in the state
dict, so serving and export use exactly what training saw. A bank entry never counts for its own query
(matched by cosine). While a run is fitted and its choices are made on validation, an entry does not
count for the image it was labelled relevant for either (`exclude_positives`): a gallery image would
otherwise be discounted by its own training caption, which never happens to an unseen image, and the
choices would favour a discount that does not carry over. Served, the whole bank counts, as in QB-Norm.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from cotrr_core.ragged import Ragged

__all__ = ["SimilarityFeatures", "FirstStagePrior", "TEMPERATURES", "MODES", "SIMILARITY_TOKEN"]

TEMPERATURES = (0.01, 0.02, 0.03, 0.05, 0.1)
SAME_ITEM_COSINE = 0.999  # a bank entry about this very candidate (or query)
SIMILARITY_TOKEN = "similarity"
SIMILARITY_SCALE = 20.0  # feature differences of ~0.05 in cosine units -> ~1 for the token projection
MODES = ("network", "prior", "first_stage")  # prior + residual, the prior alone, the first-stage order


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class SimilarityFeatures(nn.Module):
    """(query [n, d], candidate [n, d]) raw vectors -> features [n, 1 + len(TEMPERATURES)]: the cosine,
    then cosine - t * logsumexp_b(cos(bank_b, candidate) / t) for each temperature t (QB-Norm in cosine
    units). With an empty bank every column is the cosine."""

    def __init__(self, dim: int, bank_size: int = 0) -> None:
        super().__init__()
        self.register_buffer("bank", torch.zeros(bank_size, dim))  # [nb, d] unit query vectors
        self.register_buffer("bank_positive", torch.zeros(bank_size, dim))  # [nb, d] unit, or 0
        self.register_buffer("temperatures", torch.tensor(TEMPERATURES))
        # while fitting and choosing: a bank entry never counts for its own positive (see the module doc)
        self.register_buffer("exclude_positives", torch.tensor(False))

    @property
    def num_features(self) -> int:
        return 1 + len(TEMPERATURES)

    def set_bank(self, queries: Tensor, positives: Tensor) -> None:
        """queries, positives [nb, d] raw (a row of zeros: no positive)."""
        device = self.bank.device
        self.bank = _unit(torch.as_tensor(queries, dtype=torch.float32)).to(device)
        self.bank_positive = _unit(torch.as_tensor(positives, dtype=torch.float32)).to(device)

    def forward(self, query: Tensor, candidate: Tensor) -> Tensor:
        q, c = _unit(query.float()), _unit(candidate.float())
        cos = (q * c).sum(-1)  # [n]
        bank = self.bank.float()
        if bank.shape[0] == 0:
            return cos[:, None].expand(-1, self.num_features)
        own = (q @ bank.T) > SAME_ITEM_COSINE
        if bool(self.exclude_positives):
            own = own | ((c @ self.bank_positive.float().T) > SAME_ITEM_COSINE)
        sims = (c @ bank.T).masked_fill(own, float("-inf"))  # [n, nb]
        t = self.temperatures.float()
        lse = torch.logsumexp(sims[:, None, :] / t[None, :, None], dim=-1) * t  # [n, T]
        return torch.cat([cos[:, None], cos[:, None] - lse.clamp_min(-1.0)], -1)  # all masked: no discount


class FirstStagePrior(nn.Module):
    """What the model adds its residual to, and which of MODES it serves.

    source: "similarity" (the spec's (query, candidate) vector pair), a scalar token's name (the
    first-stage score), or None (no prior: the network alone, or the first-stage order).
    Buffers: `column` (which similarity feature is the prior: 0 cosine, then one per temperature, chosen
    on validation), `mode` (index into MODES). Parameter `gain`: the prior's scale against the residual.
    """

    def __init__(self, token_dims: Mapping[str, int], similarity: tuple[str, str] | None = None,
                 prior_token: str | None = None) -> None:
        super().__init__()
        self.pair = tuple(similarity) if similarity else None
        self.source = "similarity" if self.pair else (prior_token if prior_token in token_dims else None)
        self.similarity = SimilarityFeatures(token_dims[self.pair[1]]) if self.pair else None
        self.register_buffer("column", torch.tensor(1 + TEMPERATURES.index(0.03)))
        self.register_buffer("mode", torch.tensor(0))
        # each similarity column's scale in logits: 0.03 for the plain cosine, then its temperature
        self.register_buffer("scales", torch.tensor((0.03, *TEMPERATURES)), persistent=False)
        self.gain = nn.Parameter(torch.tensor(1.0)) if self.source is not None else None

    def token_dims(self, token_dims: Mapping[str, int]) -> dict[str, int]:
        """The encoder's tokens: the spec's, plus the similarity features as one more token."""
        extra = {SIMILARITY_TOKEN: self.similarity.num_features} if self.similarity is not None else {}
        return {**token_dims, **extra}

    def set_mode(self, mode: str) -> None:
        if mode not in MODES or (mode == "prior" and self.source is None):
            raise ValueError(f"mode must be one of {MODES} ('prior' needs a prior), got {mode!r}")
        self.mode.fill_(MODES.index(mode))

    @property
    def mode_name(self) -> str:
        return MODES[int(self.mode)]

    def similarity_features(self, batch: Ragged) -> Tensor | None:
        """Raw batch -> [n, F] similarity features, or None without a vector pair."""
        if self.similarity is None:
            return None
        query, candidate = self.pair
        q = batch.lists[query][batch.list_of_row()] if query in batch.lists else batch.rows[query]
        return self.similarity(q, batch.rows[candidate])

    def add_token(self, batch: Ragged, similarity: Tensor | None) -> Ragged:
        """The standardised batch plus the similarity token: each feature relative to its list's best,
        so the token says how a candidate compares within its list."""
        if similarity is None:
            return batch
        padded = batch.to_padded(similarity).masked_fill(~batch.mask[..., None], float("-inf"))
        best = padded.amax(dim=1)[batch.list_of_row()]  # [n, F]
        rows = {**batch.rows, SIMILARITY_TOKEN: (similarity - best) * SIMILARITY_SCALE}
        return Ragged(rows, batch.lists, batch.mask, batch.positions)

    def scores(self, std_batch: Ragged, similarity: Tensor | None) -> Tensor | None:
        """Prior scores [n] (in logits), or None without a prior."""
        if self.source is None:
            return None
        if similarity is not None:
            return self.gain * similarity[:, self.column] / self.scales[self.column]
        return self.gain * std_batch.rows[self.source][:, 0].float()

    def combine(self, residual: Tensor, prior: Tensor | None, batch: Ragged) -> Tensor:
        """Network residual [..., n] -> the served scores [..., n] in this prior's mode. first_stage: minus
        each row's position in its list (lists arrive in first-stage order), so any stable sort keeps it."""
        mode = int(self.mode)
        # 0 * residual: a non-finite input still makes its candidate's score NaN in every mode (serving
        # finds bad request values by that NaN, see serving/reranker.py)
        if mode == 2:
            position = (batch.positions % batch.mask.size(1)).to(residual.dtype)
            return -position + 0.0 * residual
        if prior is None:
            return residual
        prior = prior.to(residual.dtype)
        return prior + (0.0 if mode == 1 else 1.0) * residual

    def fit_state(self, state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
        """A state dict made loadable: the bank resized to the saved one; a run saved before the prior
        existed gets this module's defaults (network mode; its head was trained without a prior)."""
        state = dict(state)
        if self.similarity is not None and f"{prefix}similarity.bank" in state:
            nb = state[f"{prefix}similarity.bank"].shape[0]
            d = self.similarity.bank.shape[1]
            self.similarity.bank = self.similarity.bank.new_zeros(nb, d)
            self.similarity.bank_positive = self.similarity.bank.new_zeros(nb, d)
        for key, value in self.state_dict().items():
            state.setdefault(prefix + key, value)
        return state
