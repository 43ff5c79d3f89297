"""CoTRR reranker: per-candidate cross-attention over feature tokens, pooled and scored.

Pure nn.Modules, no I/O. A batch is B lists padded to L candidates: ``tokens`` maps each feature
group to raw features [B, L, d_t] (the model standardises them itself: `Standardise`), ``mask``
[B, L] is True for real candidates. Each candidate is a sequence of T tokens (one per feature
group) that attend to each other; optionally the pooled candidates of a list then attend to each
other (list context). Internally (and for serving, which has no padding to begin with) a batch is
`Ragged`: only the real candidates' rows, so padding is never gathered, read or computed, and
`CoTRRModel.score` returns one score per real row.

Dropout follows the module's train/eval mode, or is forced per call (`dropout=True`), so MC dropout
never changes the state of a model that other threads share (cotrr_core/mc.py samples with it).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cotrr_core.config import ModelConfig
from cotrr_core.prior import FirstStagePrior
from cotrr_core.ragged import Ragged

__all__ = ["Ragged", "Standardise", "Attention", "Block", "TokenEncoder", "CoTRRModel", "count_parameters",
           "row_bucket"]


SHORT_SEQUENCE = 8  # sequences up to this long (a candidate's tokens) use broadcast attention


def signed_log1p(x: Tensor) -> Tensor:
    """sign(x) * log1p(|x|): raw LETOR counts to a scale a linear layer can use."""
    return x.sign() * x.abs().log1p()


def signed_expm1(x: Tensor) -> Tensor:
    """The inverse of signed_log1p."""
    return x.sign() * x.abs().expm1()


class Standardise(nn.Module):
    """Raw token features -> (f(x) - mean) / std per token, f = signed log1p when `log1p`.

    The statistics (fitted on the training split by data/scaling.FeatureScaler) are buffers mean_<token>
    and std_<token> [d], the log1p flag is the buffer log1p_flag: all travel in the state dict with the
    weights. Until set they are mean 0, std 1 (identity). A token without statistics only passes through f
    (serving folds a token's statistics into its projection: serving/fold.py). The output keeps the
    buffers' dtype (float32, also in a bfloat16 model: rounding after standardising costs least).
    """

    def __init__(self, token_dims: Mapping[str, int], log1p: bool = False) -> None:
        super().__init__()
        self.register_buffer("log1p_flag", torch.tensor(False))
        self.log1p = log1p
        self.names = tuple(token_dims)
        for name, d in token_dims.items():
            self.register_buffer(f"mean_{name}", torch.zeros(d))
            self.register_buffer(f"std_{name}", torch.ones(d))

    def set(self, mean: Mapping[str, Any], std: Mapping[str, Any], log1p: bool) -> None:
        """Take the statistics {token: [d]} (numpy, lists or tensors) and the log1p flag."""
        self.log1p = bool(log1p)
        with torch.no_grad():
            for name in self.names:
                for stat, values in (("mean", mean[name]), ("std", std[name])):
                    buf = getattr(self, f"{stat}_{name}")
                    buf.copy_(torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=buf.dtype))

    def stats(self, name: str) -> tuple[Tensor, Tensor]:
        """(mean [d], std [d]) of a token."""
        return getattr(self, f"mean_{name}"), getattr(self, f"std_{name}")

    def centre(self, name: str) -> Tensor:
        """The raw value [d] of a token that standardises to 0 (its training mean): what an ablated token reads."""
        mean = self.stats(name)[0]
        return signed_expm1(mean) if self.log1p else mean.clone()

    def without(self, names: Sequence[str]) -> Standardise:
        """A copy that no longer standardises `names` (they only pass through f)."""
        keep = [n for n in self.names if n not in set(names)]
        out = Standardise({n: self.stats(n)[0].numel() for n in keep}, self.log1p).to(self.stats(keep[0])[0].device) \
            if keep else Standardise({}, self.log1p)
        for n in keep:
            out.stats(n)[0].copy_(self.stats(n)[0])
            out.stats(n)[1].copy_(self.stats(n)[1])
        return out

    def jitter(self, tokens: Mapping[str, Tensor], sigma: float, generator: torch.Generator) -> dict[str, Tensor]:
        """Training augmentation: raw tokens {name: [..., d]} moved by Gaussian noise of std `sigma` in
        standardised units (drawn on `generator`, a CPU generator, then moved to the tokens' device)."""
        out = {}
        for name, x in tokens.items():
            noise = sigma * torch.randn(x.shape, generator=generator).to(x.device) * self.stats(name)[1]
            out[name] = signed_expm1(signed_log1p(x) + noise) if self.log1p else x + noise
        return out

    @property
    def log1p(self) -> bool:
        return self._log1p

    @log1p.setter
    def log1p(self, value: bool) -> None:
        # a Python bool for the forward (no device sync, a constant when traced), a buffer for the state dict
        self._log1p = bool(value)
        self.log1p_flag.fill_(self._log1p)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._log1p = bool(self.log1p_flag)

    def forward(self, batch: Ragged) -> Ragged:
        """A Ragged batch of raw features -> the same lists standardised."""
        if not self.names and not self.log1p:
            return batch
        tokens = {**batch.rows, **batch.lists}
        return batch.with_tokens({name: self._one(name, x) for name, x in tokens.items()})

    def _one(self, name: str, x: Tensor) -> Tensor:
        if name not in self.names:
            return signed_log1p(x) if self.log1p else x
        mean, std = self.stats(name)
        x = x.to(mean.dtype)
        return ((signed_log1p(x) if self.log1p else x) - mean) / std


def _active(module: nn.Module, dropout: bool | None) -> bool:
    """Dropout on? `dropout` None follows the module's train/eval mode; True/False force it per call."""
    return module.training if dropout is None else dropout


def _drop(x: Tensor, p: float) -> Tensor:
    return F.dropout(x, p, training=True) if p > 0.0 else x


class Attention(nn.Module):
    """Multi-head self-attention: x [N, S, H], key_mask [N, S] (True = may be attended) -> [N, S, H]."""

    def __init__(self, hidden: int, heads: int, attn_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * attn_dim)
        self.out = nn.Linear(attn_dim, hidden)
        self.attn_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor | None = None, return_attention: bool = False,
                dropout: bool | None = None) -> tuple[Tensor, Tensor | None]:
        """Returns (y [N, S, H], attention weights [N, heads, S, S] or None on the fused path)."""
        p = self.attn_drop.p if _active(self, dropout) else 0.0
        n, s, _ = x.shape
        qkv = self.qkv(x).view(n, s, 3, self.heads, -1)
        if s <= SHORT_SEQUENCE:
            y, att = _broadcast_attention(qkv, key_mask, p)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [N, h, S, d]
            allowed = None if key_mask is None else key_mask[:, None, None, :]  # [N, 1, 1, S]
            if return_attention:
                att = attention_weights(q, k, allowed)
                y = _drop(att, p) @ v
            else:
                y, att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p), None
            y = y.transpose(1, 2)
        return self.out(y.reshape(n, s, -1)), att if return_attention else None


def attention_weights(q: Tensor, k: Tensor, allowed: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(d)) over the allowed keys: q, k [N, h, S, d] -> [N, h, S, S]."""
    logits = q @ k.transpose(-1, -2) * q.size(-1) ** -0.5
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return logits.softmax(dim=-1)


def _broadcast_attention(qkv: Tensor, key_mask: Tensor | None, p: float) -> tuple[Tensor, Tensor]:
    """qkv [N, S, 3, h, d] -> (y [N, S, h, d], weights [N, h, S, S]) by broadcasting: for a candidate's few
    tokens faster than SDPA's kernel (bench/serve.py)."""
    q, k, v = qkv.unbind(2)  # [N, S, h, d]
    logits = (q[:, :, None] * k[:, None]).sum(-1) * q.size(-1) ** -0.5  # [N, S_query, S_key, h]
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None, :, None], float("-inf"))
    att = logits.softmax(dim=2)
    y = (_drop(att, p)[..., None] * v[:, None]).sum(2)
    return y, att.permute(0, 3, 1, 2)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + ff(ln(x)). [N, S, H] -> [N, S, H]."""

    def __init__(self, hidden: int, heads: int, attn_dim: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = Attention(hidden, heads, attn_dim, dropout)
        self.ln2 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(
            nn.Linear(hidden, hidden * ff_mult), nn.GELU(), nn.Linear(hidden * ff_mult, hidden)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor | None = None, return_attention: bool = False,
                dropout: bool | None = None) -> tuple[Tensor, Tensor | None]:
        """[N, S, H] -> ([N, S, H], attention weights or None)."""
        p = self.drop.p if _active(self, dropout) else 0.0
        a, att = self.attn(self.ln1(x), key_mask, return_attention, _active(self, dropout))
        x = x + _drop(a, p)
        x = x + _drop(self.ff(self.ln2(x)), p)
        return x, att


class TokenEncoder(nn.Module):
    """Feature groups -> token states: Ragged batch -> [n, T, H].

    One Linear per group, plus a learned token-type embedding, then LayerNorm. List-constant
    groups are projected once per list and gathered per candidate.
    """

    def __init__(self, token_dims: Mapping[str, int], hidden: int, list_constant: Sequence[str] = ()) -> None:
        super().__init__()
        unknown = sorted(set(list_constant) - set(token_dims))
        if unknown:
            raise ValueError(f"list_constant names {unknown} are not token groups {list(token_dims)}")
        self.names = list(token_dims)
        self.list_constant = frozenset(list_constant)
        self.proj = nn.ModuleDict({name: nn.Linear(d, hidden) for name, d in token_dims.items()})
        self.type_emb = nn.Parameter(torch.randn(len(self.names), hidden) * 0.02)
        self.ln = nn.LayerNorm(hidden)

    def forward(self, batch: Ragged, slack: int = 0) -> Tensor:
        """Token states [n + slack, T, H]: the real candidates', then `slack` rows of padding."""
        list_of_row = batch.list_of_row() if batch.lists else None
        dtype = self.type_emb.dtype
        states = [self.proj[name](batch.lists[name].to(dtype))[list_of_row] if name in self.list_constant
                  else self.proj[name](batch.rows[name].to(dtype)) for name in self.names]
        x = torch.stack(states, dim=1)
        return self.ln((F.pad(x, (0, 0, 0, 0, 0, slack)) if slack else x) + self.type_emb)


class CoTRRModel(nn.Module):
    """Cross-attention reranker: (raw tokens {name: [B, L, d_t]}, mask [B, L]) -> scores [B, L].

    Padding positions score 0.0; `score` takes a Ragged batch and returns scores [n] of its rows. With
    ``return_attention=True`` the attention weights are computed explicitly and returned as ``(scores,
    {"token": [B, L, layers, heads, T, T], "list": [B, list_layers, heads, L, L] or None})``; otherwise
    the fused SDPA kernel is used.
    """

    def __init__(self, config: ModelConfig, token_dims: Mapping[str, int], list_constant: Sequence[str] = (),
                 similarity: tuple[str, str] | None = None, prior_token: str | None = None) -> None:
        super().__init__()
        self.config = config
        h, heads = config.hidden, config.heads
        # Half-width attention: a candidate has only T~4-6 tokens, so Q/K/V need little width;
        # this keeps the default model (dims 1024, 1024, 8, 5) at ~1.3M parameters.
        attn_dim = max(1, h // heads // 2) * heads

        def block() -> Block:
            return Block(h, heads, attn_dim, config.ff_mult, config.dropout)

        self.standardise: nn.Module = Standardise(token_dims)
        self.prior = FirstStagePrior(token_dims, similarity, prior_token)
        self.encoder = TokenEncoder(self.prior.token_dims(token_dims), h, list_constant)
        self.blocks = nn.ModuleList(block() for _ in range(config.layers))
        self.ln_tokens = nn.LayerNorm(h)
        self.list_blocks = nn.ModuleList(block() for _ in range(config.list_context_layers if config.list_context else 0))
        self.ln_list = nn.LayerNorm(h) if config.list_context else nn.Identity()
        self.head = nn.Sequential(nn.Linear(h, h // 2), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(h // 2, 1))
        if self.prior.source is not None:  # start at the prior's order: the network learns a residual on it
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    # ------------------------------------------------------------------ standardisation in the state dict
    def set_standardisation(self, scaler_state: Mapping[str, Any]) -> None:
        """Take the standardisation of a FeatureScaler state (scaler.json: log_transform, mean, std)."""
        self.standardise.set(scaler_state["mean"], scaler_state["std"], scaler_state["log_transform"])

    def load_weights(self, state: Mapping[str, Tensor], scaler_state: Mapping[str, Any] | None = None) -> None:
        """load_state_dict, also for a state saved before the standardisation lived in the model (no
        'standardise.' keys): its statistics are then read from `scaler_state` (the run's scaler.json)."""
        if not any(key.startswith("standardise.") for key in state):
            if scaler_state is None:
                raise ValueError("this state dict has no standardisation: pass the run's scaler.json state")
            self.set_standardisation(scaler_state)
            state = {**state, **{f"standardise.{k}": v for k, v in self.standardise.state_dict().items()}}
        state = self.prior.fit_state(state, prefix="prior.")
        self.load_state_dict(state)

    # ------------------------------------------------------------------ the forward, in named steps
    def prepare(self, batch: Ragged) -> tuple[Ragged, Tensor | None]:
        """Raw Ragged batch -> (the batch standardised, plus the similarity token when the model has one;
        prior scores [n] or None)."""
        similarity = self.prior.similarity_features(batch)  # from the raw vectors: cosine geometry
        std = self.standardise(batch)
        return self.prior.add_token(std, similarity), self.prior.scores(std, similarity)

    def candidates(self, batch: Ragged, return_attention: bool = False,
                   dropout: bool | None = None) -> tuple[Tensor, list[Tensor | None]]:
        """Token trunk: a prepared Ragged batch -> candidate vectors [n, H] and per-layer attention
        [n, heads, T, T] (or None)."""
        n = batch.positions.numel()
        slack = row_bucket(n) - n if isinstance(n, int) else 0  # traced for export, n is symbolic
        x = self.encoder(batch, slack)  # [n + slack, T, H]
        token_att = []
        for blk in self.blocks:
            x, att = blk(x, return_attention=return_attention, dropout=dropout)
            token_att.append(None if att is None else att[:n])
        return self.ln_tokens(x).mean(dim=1)[:n], token_att

    def in_context(self, c: Tensor, batch: Ragged, return_attention: bool = False,
                   dropout: bool | None = None) -> tuple[Tensor, list[Tensor | None]]:
        """List context (when on): candidate vectors [n, H] attend to their list's -> [n, H], and per-layer
        attention [K, heads, L, L] (or None)."""
        if len(self.list_blocks) == 0:
            return c, []
        x, key_mask, list_att = batch.to_padded(c), list_key_mask(batch.mask), []
        for blk in self.list_blocks:
            x, att = blk(x, key_mask, return_attention, dropout)
            list_att.append(att)
        return batch.to_rows(x), list_att

    def head_scores(self, c: Tensor, dropout: bool | None = None) -> Tensor:
        """Candidate vectors [..., H] -> scores [...]."""
        lin1, act, drop, lin2 = self.head
        h = _drop(act(lin1(self.ln_list(c))), drop.p if _active(self, dropout) else 0.0)
        return lin2(h).squeeze(-1)

    def score(self, batch: Ragged, dropout: bool | None = None) -> Tensor:
        """Scores [n] of a Ragged batch's rows (raw features)."""
        batch, prior = self.prepare(batch)
        c, _ = self.candidates(batch, dropout=dropout)
        return self.prior.combine(self.head_scores(self.in_context(c, batch, dropout=dropout)[0], dropout), prior, batch)

    def forward(
        self, tokens: Mapping[str, Tensor], mask: Tensor, return_attention: bool = False, dropout: bool | None = None
    ) -> Tensor | tuple[Tensor, dict[str, Tensor | None]]:
        """Raw tokens {name: [B, L, d_t]}, mask [B, L] -> scores [B, L] (0.0 at padding). `dropout` None: as
        the module's mode; True: sample (MC dropout) even in eval mode."""
        b, l = mask.shape
        batch, prior = self.prepare(Ragged.from_padded(tokens, mask, self.encoder.list_constant))
        c, token_att = self.candidates(batch, return_attention, dropout)
        c, list_att = self.in_context(c, batch, return_attention, dropout)
        scores = batch.to_padded(self.prior.combine(self.head_scores(c, dropout), prior, batch))  # [B, L]
        if not return_attention:
            return scores
        t = token_att[0].size(-1)
        token = torch.stack([batch.to_padded(a) for a in token_att], dim=2)  # [B, L, layers, heads, T, T]
        maps: dict[str, Tensor | None] = {
            "token": token.view(b, l, len(self.blocks), -1, t, t),
            "list": torch.stack(list_att, dim=1) if list_att else None,
        }
        return scores, maps


def list_key_mask(mask: Tensor) -> Tensor:
    """[K, L] keys a list's candidates may attend to. An all-padding list would have no key to attend to
    (NaN softmax): it attends to everything instead (its rows are never read)."""
    return mask | ~mask.any(dim=-1, keepdim=True)


def row_bucket(n: int) -> int:
    """n rounded up to one of 16 sizes per octave (at most 1/16 more).

    The token trunk runs on this many rows (the extra are padding): batches of every size then reuse a
    few block sizes of the heap. With exact sizes glibc's heap fragments (bench/data.py measures the
    peak memory of a training epoch).
    """
    step = 1 << max(0, n.bit_length() - 5)
    return -(-n // step) * step


def count_parameters(model: nn.Module) -> int:
    """Total number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
