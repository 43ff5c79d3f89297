"""CoTRR reranker: per-candidate cross-attention over feature tokens, pooled and scored.

Pure nn.Modules, no I/O. A batch is B lists padded to L candidates:
``tokens`` maps each feature group to [B, L, d_t], ``mask`` [B, L] is True for real candidates.
Each candidate is a sequence of T tokens (one per feature group) that attend to each other;
optionally the pooled candidates of a list then attend to each other (list context).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cotrr_core.config import ModelConfig

__all__ = ["mc_scores", "Attention", "Block", "TokenEncoder", "CoTRRModel", "mc_dropout_scores", "count_parameters"]


def _active(module: nn.Module, dropout: bool | None) -> bool:
    """Dropout on? `dropout` None follows the module's train/eval mode; True/False force it per call,
    so MC dropout never changes shared module state (a served model is shared by threads)."""
    return module.training if dropout is None else dropout


class Attention(nn.Module):
    """Multi-head self-attention: x [N, S, H], key_mask [N, S] (True = may be attended) -> [N, S, H]."""

    def __init__(self, hidden: int, heads: int, attn_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * attn_dim)
        self.out = nn.Linear(attn_dim, hidden)
        self.attn_drop = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, key_mask: Tensor | None = None, return_attention: bool = False, dropout: bool | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Returns (y [N, S, H], attention weights [N, heads, S, S] or None on the fused path)."""
        p = self.attn_drop.p if _active(self, dropout) else 0.0
        n, s, _ = x.shape
        q, k, v = self.qkv(x).view(n, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # [N, h, S, d]
        allowed = None if key_mask is None else key_mask[:, None, None, :]  # [N, 1, 1, S]
        att = None
        if return_attention:
            logits = (q @ k.transpose(-2, -1)) * q.size(-1) ** -0.5
            if allowed is not None:
                logits = logits.masked_fill(~allowed, float("-inf"))
            att = logits.softmax(dim=-1)
            y = F.dropout(att, p, training=p > 0) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        return self.out(y.transpose(1, 2).reshape(n, s, -1)), att


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

    def forward(
        self, x: Tensor, key_mask: Tensor | None = None, return_attention: bool = False, dropout: bool | None = None
    ) -> tuple[Tensor, Tensor | None]:
        on = _active(self, dropout)
        a, att = self.attn(self.ln1(x), key_mask, return_attention, on)
        x = x + F.dropout(a, self.drop.p, training=on)
        x = x + F.dropout(self.ff(self.ln2(x)), self.drop.p, training=on)
        return x, att


class TokenEncoder(nn.Module):
    """Feature groups -> token states of the real candidates: dict of [B, L, d_t] + rows [n] -> [n, T, H].

    `rows` are the flat positions (b * L + l) of the candidates to encode, so padding is never read
    or computed. One Linear per group, plus a learned token-type embedding, then LayerNorm.
    List-constant groups are projected once per list (candidate 0's vector) and gathered per row.
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

    def forward(self, tokens: Mapping[str, Tensor], mask: Tensor, rows: Tensor) -> Tensor:
        b, l = mask.shape
        states = []
        for name in self.names:
            x = tokens[name]
            if name in self.list_constant:  # only candidate 0's vector is read (zeroed if it is padding)
                first = torch.where(mask[:, :1], x[:, 0], 0.0)  # [B, d]
                states.append(self.proj[name](first)[rows // l])
            else:
                states.append(self.proj[name](x.reshape(b * l, -1)[rows]))
        return self.ln(torch.stack(states, dim=1) + self.type_emb)


class CoTRRModel(nn.Module):
    """Cross-attention reranker: (tokens {name: [B, L, d_t]}, mask [B, L]) -> scores [B, L].

    Padding positions score 0.0. With ``return_attention=True`` the attention weights are
    computed explicitly and returned as ``(scores, {"token": [B, L, layers, heads, T, T],
    "list": [B, list_layers, heads, L, L] or None})``; otherwise the fused SDPA kernel is used.
    """

    def __init__(self, config: ModelConfig, token_dims: Mapping[str, int], list_constant: Sequence[str] = ()) -> None:
        super().__init__()
        self.config = config
        h, heads = config.hidden, config.heads
        # Half-width attention: a candidate has only T~4-6 tokens, so Q/K/V need little width;
        # this keeps the default model (dims 1024, 1024, 8, 5) at ~1.3M parameters.
        attn_dim = max(1, h // heads // 2) * heads

        def block() -> Block:
            return Block(h, heads, attn_dim, config.ff_mult, config.dropout)

        self.encoder = TokenEncoder(token_dims, h, list_constant)
        self.blocks = nn.ModuleList(block() for _ in range(config.layers))
        self.ln_tokens = nn.LayerNorm(h)
        self.list_blocks = nn.ModuleList(block() for _ in range(config.list_context_layers if config.list_context else 0))
        self.ln_list = nn.LayerNorm(h) if config.list_context else nn.Identity()
        self.head = nn.Sequential(nn.Linear(h, h // 2), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(h // 2, 1))

    def candidates(self, tokens: Mapping[str, Tensor], mask: Tensor, return_attention: bool = False,
                   dropout: bool | None = None) -> tuple[Tensor, list[Tensor | None]]:
        """Token trunk: (tokens, mask) -> candidate vectors [B, L, H] (+ per-layer attention [B*L, heads,
        T, T]). Only real candidates go through it (padding would be ~20% of a batch's work); padding
        positions get zero vectors, which the list context masks out and the head scores 0."""
        b, l = mask.shape
        rows = mask.reshape(-1).nonzero().squeeze(1)  # [n]
        x = self.encoder(tokens, mask, rows)  # [n, T, H]
        token_att = []
        for blk in self.blocks:
            x, att = blk(x, return_attention=return_attention, dropout=dropout)
            token_att.append(None if att is None else _unpack(att, rows, b * l))
        c = _unpack(self.ln_tokens(x).mean(dim=1), rows, b * l)
        return c.view(b, l, -1), token_att

    def score_candidates(self, c: Tensor, mask: Tensor, return_attention: bool = False,
                         dropout: bool | None = None) -> tuple[Tensor, list[Tensor | None]]:
        """List context (when on) and head: candidate vectors [B, L, H] -> scores [B, L]."""
        list_att = []
        if len(self.list_blocks) > 0:
            # An all-padding list would have no key to attend to (NaN softmax): let it attend to
            # everything instead; its scores are masked to 0 below anyway.
            key_mask = mask | ~mask.any(dim=-1, keepdim=True)
            for blk in self.list_blocks:
                c, att = blk(c, key_mask, return_attention, dropout)
                list_att.append(att)
        lin1, act, drop, lin2 = self.head
        h = F.dropout(act(lin1(self.ln_list(c))), drop.p, training=_active(self, dropout))
        return lin2(h).squeeze(-1).masked_fill(~mask, 0.0), list_att

    def forward(
        self, tokens: Mapping[str, Tensor], mask: Tensor, return_attention: bool = False, dropout: bool | None = None
    ) -> Tensor | tuple[Tensor, dict[str, Tensor | None]]:
        """`dropout` None: as the module's mode; True: sample (MC dropout) even in eval mode."""
        b, l = mask.shape
        c, token_att = self.candidates(tokens, mask, return_attention, dropout)
        scores, list_att = self.score_candidates(c, mask, return_attention, dropout)  # [B, L]
        if not return_attention:
            return scores
        t = token_att[0].size(-1)
        maps: dict[str, Tensor | None] = {
            "token": torch.stack(token_att, dim=1).view(b, l, len(self.blocks), -1, t, t),
            "list": torch.stack(list_att, dim=1) if list_att else None,
        }
        return scores, maps


def _unpack(x: Tensor, rows: Tensor, n: int) -> Tensor:
    """Rows [k, ...] at flat positions `rows` [k] -> [n, ...], zeros elsewhere."""
    return x.new_zeros(n, *x.shape[1:]).index_copy(0, rows, x)


def mc_dropout_scores(model: nn.Module, tokens: Mapping[str, Tensor], mask: Tensor, n_samples: int,
                      scope: str = "all") -> Tensor:
    """MC-dropout scores [S, B, L]: S stochastic passes drawn in ONE batched forward.

    Dropout is switched on per call (forward's `dropout=True`), never by changing module modes, so
    other threads scoring with the same model are unaffected. Runs under torch.inference_mode.
    scope="all": dropout everywhere. scope="head": the token trunk runs once, deterministic,
    and only the list-context block and the head are sampled (last-layers MC dropout), which
    costs a fraction of a forward per sample.
    """
    return mc_scores(model, tokens, mask, n_samples, scope, with_mean=False)[1]


def mc_scores(model: nn.Module, tokens: Mapping[str, Tensor], mask: Tensor, n_samples: int,
              scope: str = "all", with_mean: bool = True) -> tuple[Tensor | None, Tensor]:
    """(deterministic scores [B, L] or None, MC-dropout samples [S, B, L]); see mc_dropout_scores.

    With scope="head" the deterministic scores share the trunk pass with the samples.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if scope not in ("all", "head"):
        raise ValueError(f"scope must be 'all' or 'head', got {scope!r}")
    scores = None
    with torch.inference_mode():
        rep_mask = mask.repeat(n_samples, 1)  # row s * B + b is sample s of list b
        if scope == "head":
            c, _ = model.candidates(tokens, mask, dropout=False)
            if with_mean:
                scores, _ = model.score_candidates(c, mask, dropout=False)
            samples, _ = model.score_candidates(c.repeat(n_samples, 1, 1), rep_mask, dropout=True)
        else:
            if with_mean:
                scores = model(tokens, mask, dropout=False)
            rep = {k: v.repeat(n_samples, *([1] * (v.dim() - 1))) for k, v in tokens.items()}
            samples = model(rep, rep_mask, dropout=True)
    return scores, samples.view(n_samples, *mask.shape)


def count_parameters(model: nn.Module) -> int:
    """Total number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
