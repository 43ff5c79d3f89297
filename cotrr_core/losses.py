"""Ranking losses on padded lists: ListMLE, sigmoid focal, RankNet, and their combination.

Every loss takes scores/labels [B, L] and a bool mask [B, L] (True = real candidate); padded
values are ignored entirely (they may be anything, even NaN). Each list gets one loss value and
the batch loss is the mean over lists with >= 2 real candidates (a single candidate carries no
ranking signal); RankNet further needs a list to have at least one pair with different labels.
A batch with no such list gives a zero loss that still backpropagates.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cotrr_core.config import LossConfig

__all__ = ["listmle_loss", "softmax_ce_loss", "focal_loss", "ranknet_loss", "smooth_targets", "CombinedLoss"]


def _mean_over_lists(per_list: Tensor, valid: Tensor) -> Tensor:
    """Mean of per_list [B] over valid [B] lists; 0 (with grad) when none is valid."""
    return (per_list * valid).sum() / valid.sum().clamp_min(1)


def listmle_loss(scores: Tensor, labels: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Plackett-Luce NLL of the permutation sorting labels descending, ties broken at random.

    scores, labels, mask: [B, L] -> scalar. Per list: sum_i [logsumexp_{j ranked >= i} s_j - s_i].
    """
    b, l = scores.shape
    s = torch.where(mask, scores.float(), 0.0)  # float32: losses stay exact under autocast
    # Shuffle, then stable-sort ascending (worst first, padding last): ties land in random order,
    # and the forward logcumsumexp at rank i covers exactly the real candidates ranked at or below
    # i, so padding never enters a sum and no -inf is needed (-inf breaks gradients).
    # Drawn on the generator's own device (a CPU generator while training on CUDA is the usual case),
    # so the tie-breaks are the same on every device.
    draw_on = generator.device if generator is not None else scores.device
    shuffle = torch.rand(b, l, generator=generator, device=draw_on).to(scores.device).argsort(dim=-1)
    key = torch.where(mask, labels, float("inf")).gather(-1, shuffle)
    order = shuffle.gather(-1, key.argsort(dim=-1, stable=True))
    s_sorted = s.gather(-1, order)
    m_sorted = mask.gather(-1, order)
    terms = torch.logcumsumexp(s_sorted, dim=-1) - s_sorted  # [B, L]
    per_list = torch.where(m_sorted, terms, 0.0).sum(dim=-1)
    return _mean_over_lists(per_list, mask.sum(dim=-1) >= 2)


def softmax_ce_loss(scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Listwise softmax cross-entropy (Qin et al. ICLR 2021): -sum_i t_i log softmax(s)_i with
    t = (2^label - 1) / sum(2^label - 1) over the list's real candidates.

    scores, labels, mask: [B, L] -> scalar; mean over lists with >= 2 real candidates and a positive gain.
    """
    s = torch.where(mask, scores.float(), float("-inf"))
    gain = torch.where(mask, torch.exp2(labels.float().clamp_min(0)) - 1, 0.0)
    total = gain.sum(dim=-1, keepdim=True)
    t = gain / total.clamp_min(1e-12)
    logp = torch.log_softmax(torch.where(mask.any(-1, keepdim=True), s, 0.0), dim=-1)
    per_list = -torch.where(mask, t * logp, 0.0).sum(dim=-1)
    return _mean_over_lists(per_list, (mask.sum(dim=-1) >= 2) & (total.squeeze(-1) > 0))


def focal_loss(
    logits: Tensor, targets: Tensor, mask: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017) on relevant-vs-not; targets [B, L] in [0, 1] (may be soft).

    Per element: alpha_t * (1 - p_t)^gamma * BCE(logit, t), with p_t = p t + (1-p)(1-t),
    alpha_t = alpha t + (1-alpha)(1-t). Mean over a list's real candidates, then over lists.
    """
    x = torch.where(mask, logits.float(), 0.0)
    t = torch.where(mask, targets.float(), 0.0)
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    # clamp: d/dx x^gamma is infinite at 0 for gamma < 1 (p_t == 1 with saturated logits).
    loss = alpha_t * (1 - p_t).clamp_min(1e-12) ** gamma * ce
    n_real = mask.sum(dim=-1)
    per_list = torch.where(mask, loss, 0.0).sum(dim=-1) / n_real.clamp_min(1)
    return _mean_over_lists(per_list, n_real >= 2)


def ranknet_loss(scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Pairwise logistic loss softplus(s_j - s_i) over real pairs with label_i > label_j.

    scores, labels, mask: [B, L] -> scalar. Mean over a list's valid pairs, then over lists
    that have at least one valid pair.
    """
    s = torch.where(mask, scores.float(), 0.0)
    y = torch.where(mask, labels, 0.0)
    pairs = (y[:, :, None] > y[:, None, :]) & mask[:, :, None] & mask[:, None, :]  # [B, L, L]
    loss = F.softplus(s[:, None, :] - s[:, :, None])  # [B, i, j]: -log sigmoid(s_i - s_j)
    n_pairs = pairs.sum(dim=(1, 2))
    per_list = torch.where(pairs, loss, 0.0).sum(dim=(1, 2)) / n_pairs.clamp_min(1)
    return _mean_over_lists(per_list, n_pairs >= 1)


def smooth_targets(labels: Tensor, threshold: float, smoothing: float) -> Tensor:
    """Binary relevance (labels >= threshold) smoothed towards 1/2: t (1 - ls) + ls / 2. [B, L]."""
    return (labels >= threshold).to(torch.float32) * (1 - smoothing) + smoothing / 2


class CombinedLoss(nn.Module):
    """RankNet warm-up, then listmle_weight * listwise(s / T) + focal_weight * focal(s / T, smoothed).

    listwise is ListMLE or the softmax cross-entropy (``config.listwise``); listmle_weight weighs either.

    T = exp(log_t) is a learned temperature when ``config.learn_temperature`` (else fixed at 1):
    include ``loss_fn.parameters()`` in the optimiser together with the model's parameters.
    The warm-up (epochs < pairwise_warmup_epochs) uses RankNet on the raw scores.
    """

    def __init__(self, config: LossConfig, relevance_threshold: float) -> None:
        super().__init__()
        self.config = config
        self.relevance_threshold = relevance_threshold  # the feature spec's: relevant means label >= it
        if config.learn_temperature:
            self.log_t = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("log_t", torch.zeros(()))

    @property
    def temperature(self) -> Tensor:
        # Bounded so that a runaway temperature cannot blow the logits up or flatten them to 0.
        return self.log_t.clamp(-3.0, 3.0).exp()

    def forward(
        self, scores: Tensor, labels: Tensor, mask: Tensor, epoch: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """scores, labels, mask: [B, L] -> (loss, {"loss", "temperature", and each component}: floats)."""
        cfg = self.config
        temperature = self.temperature
        if epoch < cfg.pairwise_warmup_epochs:
            loss = ranknet_loss(scores, labels, mask)
            stats = {"ranknet": loss.item()}
        else:
            z = scores / temperature
            if cfg.listwise == "softmax":
                listwise = softmax_ce_loss(z, labels, mask)
            else:
                listwise = listmle_loss(z, labels, mask, generator)
            targets = smooth_targets(labels, self.relevance_threshold, cfg.label_smoothing)
            focal = focal_loss(z, targets, mask, cfg.focal_alpha, cfg.focal_gamma)
            loss = cfg.listmle_weight * listwise + cfg.focal_weight * focal
            stats = {cfg.listwise: listwise.item(), "focal": focal.item()}
        return loss, {"loss": loss.item(), **stats, "temperature": temperature.item()}
