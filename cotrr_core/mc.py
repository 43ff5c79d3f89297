"""MC-dropout sampling of a CoTRRModel: S stochastic scorings in one batched pass, for serving and offline scoring.

Dropout is requested per call, never by switching module modes, so other threads scoring with the same
model are unaffected; everything runs under torch.inference_mode.
- scope="all": dropout everywhere (the batch repeated S times through the model with dropout=True).
- scope="head": the token trunk runs once, deterministic; only the list-context blocks and the head are
  sampled (last-layers MC dropout), a fraction of a forward per sample.

The sampled pass over the list blocks and the head is written out here (from the blocks' own layers), so
the speed tricks stay out of the model: the first list block's attention weights are computed once and
each copy draws its own dropout over them (`copies`); the deterministic scores are copy 0 of the same
batch, exempt from dropout (`exempt`); dropout masks are drawn as 16-bit integers (`_keep_scale`).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from cotrr_core.model import Block, CoTRRModel, Ragged, attention_weights, list_key_mask

__all__ = ["mc_scores", "mc_dropout_scores"]

SCOPES = ("all", "head")


def mc_scores(model: CoTRRModel, batch: Ragged, n_samples: int, scope: str = "all",
              with_mean: bool = True, first_list: int = 0) -> tuple[Tensor | None, Tensor]:
    """(deterministic scores [n] or None, MC-dropout samples [S, n']) of a Ragged batch's rows; n' = the rows of
    lists first_list.. (all by default): the lists before it are scored without samples in the same pass.

    With scope="head" the deterministic scores share the trunk pass and the head's batch with the samples.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be 'all' or 'head', got {scope!r}")
    n = batch.positions.numel()
    with torch.inference_mode():
        batch, prior = model.prepare(batch)
        if first_list > 0:
            return _scores_and_tail_samples(model, batch, prior, n_samples, scope, first_list)
        if scope == "head":
            c, _ = model.candidates(batch, dropout=False)
            out = sampled_head(model, c, batch, copies=n_samples + with_mean, exempt=with_mean)
            out = model.prior.combine(out, prior, batch)
            return (out[0], out[1:]) if with_mean else (None, out)
        scores = None
        if with_mean:
            c, _ = model.candidates(batch, dropout=False)
            scores = model.prior.combine(model.head_scores(model.in_context(c, batch, dropout=False)[0], False),
                                         prior, batch)
        copies = batch.repeat(n_samples)
        c, _ = model.candidates(copies, dropout=True)
        samples = sampled_head(model, c, copies, copies=1, exempt=False).view(n_samples, n)
        return scores, model.prior.combine(samples, prior, batch)


def _scores_and_tail_samples(model: CoTRRModel, batch: Ragged, prior: Tensor | None, n_samples: int, scope: str,
                             first_list: int) -> tuple[Tensor, Tensor]:
    """A prepared batch -> (deterministic scores [n] of every list, samples [S, n'] of lists first_list.. only):
    one trunk pass for all; with scope="all" the sampled lists' trunk runs again with dropout."""
    c, _ = model.candidates(batch, dropout=False)
    scores = model.prior.combine(model.head_scores(model.in_context(c, batch, dropout=False)[0], False), prior, batch)
    tail, row = batch.tail(first_list)
    if scope == "head":
        samples = sampled_head(model, c[row:], tail, copies=n_samples, exempt=False)
    else:
        copies = tail.repeat(n_samples)
        sampled, _ = model.candidates(copies, dropout=True)
        samples = sampled_head(model, sampled, copies, copies=1, exempt=False).view(n_samples, -1)
    return scores, model.prior.combine(samples, None if prior is None else prior[row:], tail)


def mc_dropout_scores(model: CoTRRModel, tokens: Mapping[str, Tensor], mask: Tensor, n_samples: int,
                      scope: str = "all") -> Tensor:
    """MC-dropout scores [S, B, L] of a padded batch of raw tokens (0.0 at padding); see mc_scores."""
    batch = Ragged.from_padded(tokens, mask, model.encoder.list_constant)
    samples = mc_scores(model, batch, n_samples, scope, with_mean=False)[1]
    return torch.stack([batch.to_padded(s) for s in samples])


def sampled_head(model: CoTRRModel, c: Tensor, batch: Ragged, copies: int, exempt: bool) -> Tensor:
    """Candidate vectors [n, H] -> `copies` dropout samples of the list context and head, [copies, n];
    copy 0 without dropout when `exempt`."""
    if len(model.list_blocks) > 0:
        k = len(batch.mask)
        x, key_mask = batch.to_padded(c), list_key_mask(batch.mask)
        for i, blk in enumerate(model.list_blocks):
            x = sampled_block(blk, x, key_mask, exempt * k, copies if i == 0 else 1)
            key_mask = key_mask.repeat(copies, 1) if i == 0 else key_mask
        x, n = x.view(copies, -1, x.size(-1)), batch.positions.numel()
        rows = x if isinstance(n, int) and n == x.size(1) else x[:, batch.positions]  # [copies, n, H]
    else:
        rows = c.expand(copies, *c.shape)
    lin1, act, drop, lin2 = model.head
    return lin2(_dropout(act(lin1(model.ln_list(rows))), drop.p, int(exempt))).squeeze(-1)


def sampled_block(blk: Block, x: Tensor, key_mask: Tensor | None, exempt: int = 0, copies: int = 1) -> Tensor:
    """Block.forward with dropout on, for `copies` copies of x: [N, S, H] -> [copies * N, S, H] (row j * N + i
    is copy j of sequence i); the first `exempt` rows never drop."""
    p = blk.drop.p
    a = sampled_attention(blk.attn, blk.ln1(x), key_mask, exempt, copies)
    x = (x.repeat(copies, 1, 1) if copies > 1 else x) + _dropout(a, p, exempt)
    return x + _dropout(blk.ff(blk.ln2(x)), p, exempt)


def sampled_attention(attn, x: Tensor, key_mask: Tensor | None, exempt: int = 0, copies: int = 1) -> Tensor:
    """Attention.forward with dropout on: the weights [N, h, S, S] are computed once, each copy draws its own
    dropout over them. [N, S, H] -> [copies * N, S, H]."""
    n, s, _ = x.shape
    q, k, v = attn.qkv(x).view(n, s, 3, attn.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # [N, h, S, d]
    att = attention_weights(q, k, None if key_mask is None else key_mask[:, None, None, :])
    if copies > 1:
        att, v = att.repeat(copies, 1, 1, 1), v.repeat(copies, 1, 1, 1)
    y = (_dropout(att, attn.attn_drop.p, exempt) @ v).transpose(1, 2)
    return attn.out(y.reshape(copies * n, s, -1))


def _dropout(x: Tensor, p: float, exempt: int = 0) -> Tensor:
    """Inverted dropout with drop probability p (0: x itself); x[:exempt] passes unchanged."""
    if p == 0.0:
        return x
    keep = _keep_scale(x, p)
    if exempt:
        keep[:exempt] = 1.0
    return x * keep


def _keep_scale(x: Tensor, p: float) -> Tensor:
    """Inverted-dropout multipliers like x: 0 with probability p' = round(p * 2**16) / 2**16 (p to within
    8e-6), else 1 / (1 - p'). Drawn as 16-bit integers, four per 64-bit draw: cheaper than rand_like or
    F.dropout's bernoulli_ on CPU (bench/serve.py measures MC latency)."""
    n, dropped = x.numel(), round(p * 65536)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2**63, None)  # every 64-bit value
    keep = bits.view(torch.int16)[:n].view(x.shape) >= dropped - 32768
    return keep.to(x.dtype).mul_(65536 / (65536 - dropped))
