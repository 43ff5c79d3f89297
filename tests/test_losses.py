"""Losses vs brute-force references written independently with Python loops and math."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from cotrr_core.config import LossConfig
from cotrr_core.losses import CombinedLoss, focal_loss, listmle_loss, ranknet_loss, smooth_targets

# ---------- brute-force references (plain Python floats) ----------

def ref_plackett_luce_nll(scores: list[float], perm: list[int]) -> float:
    """-log prod_i exp(s_perm[i]) / sum_{j >= i} exp(s_perm[j])."""
    nll = 0.0
    for i in range(len(perm)):
        rest = [scores[perm[j]] for j in range(i, len(perm))]
        m = max(rest)
        nll += m + math.log(sum(math.exp(r - m) for r in rest)) - scores[perm[i]]
    return nll


def ref_focal(x: float, t: float, alpha: float, gamma: float) -> float:
    p = 1 / (1 + math.exp(-x))
    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return alpha_t * (1 - p_t) ** gamma * ce


def ref_ranknet(scores: list[float], labels: list[float]) -> float | None:
    losses = []
    for i in range(len(scores)):
        for j in range(len(scores)):
            if labels[i] > labels[j]:
                losses.append(math.log(1 + math.exp(-(scores[i] - scores[j]))))
    return sum(losses) / len(losses) if losses else None


def pad_batch(lists: list[tuple[list[float], list[float]]], length: int, crazy: float = 1e6):
    """Pad (scores, labels) lists to [B, length]; padding gets absurd scores and labels."""
    b = len(lists)
    scores = torch.full((b, length), crazy)
    labels = torch.full((b, length), crazy)
    mask = torch.zeros(b, length, dtype=torch.bool)
    for i, (s, y) in enumerate(lists):
        scores[i, : len(s)] = torch.tensor(s)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(s)] = True
    return scores, labels, mask


def random_lists(seed: int, n: int, distinct: bool = True) -> list[tuple[list[float], list[float]]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(1, 6, (1,), generator=g))
        s = (torch.randn(k, generator=g) * 2).tolist()
        y = (torch.randperm(k, generator=g) if distinct else torch.randint(0, 3, (k,), generator=g)).float().tolist()
        out.append((s, y))
    return out


# ---------- ListMLE ----------

@pytest.mark.parametrize("seed", range(5))
def test_listmle_matches_plackett_luce_without_ties(seed: int) -> None:
    lists = random_lists(seed, 6)
    scores, labels, mask = pad_batch(lists, 7)
    refs = [ref_plackett_luce_nll(s, sorted(range(len(y)), key=lambda i: -y[i])) for s, y in lists if len(s) >= 2]
    expected = sum(refs) / len(refs) if refs else 0.0
    got = listmle_loss(scores, labels, mask, torch.Generator().manual_seed(0))
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_listmle_ignores_padding_values_even_nan() -> None:
    lists = random_lists(7, 4)
    s1, y1, mask = pad_batch(lists, 6, crazy=1e6)
    s2, y2, _ = pad_batch(lists, 6, crazy=-3.0)
    s3, y3, _ = pad_batch(lists, 6, crazy=float("nan"))
    vals = [listmle_loss(s, y, mask, torch.Generator().manual_seed(1)).item() for s, y in ((s1, y1), (s2, y2), (s3, y3))]
    assert vals[0] == pytest.approx(vals[1], abs=1e-6) and vals[0] == pytest.approx(vals[2], abs=1e-6)


def test_listmle_ties_take_a_tie_permutation_and_average_over_them() -> None:
    s, y = [0.3, -1.2, 2.0, 0.7], [1.0, 1.0, 0.0, 1.0]
    scores, labels, mask = pad_batch([(s, y)], 6)
    tie_values = {
        round(ref_plackett_luce_nll(s, list(top) + [2]), 5) for top in itertools.permutations([0, 1, 3])
    }
    seen = []
    for seed in range(300):
        v = listmle_loss(scores, labels, mask, torch.Generator().manual_seed(seed)).item()
        assert any(abs(v - t) < 1e-4 for t in tie_values)
        seen.append(v)
    assert len({round(v, 4) for v in seen}) == len(tie_values)  # every tie order is reachable
    assert sum(seen) / len(seen) == pytest.approx(sum(tie_values) / len(tie_values), rel=0.03)


def test_listmle_single_candidate_lists_are_excluded() -> None:
    scores, labels, mask = pad_batch([([5.0], [1.0]), ([0.1, 0.9], [1.0, 0.0])], 3)
    expected = ref_plackett_luce_nll([0.1, 0.9], [0, 1])
    assert listmle_loss(scores, labels, mask).item() == pytest.approx(expected, rel=1e-6)
    empty = listmle_loss(scores[:1], labels[:1], mask[:1])
    assert empty.item() == 0.0


# ---------- focal ----------

@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.8, 1.5)])
def test_focal_matches_direct_formula(alpha: float, gamma: float) -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 5, generator=g) * 3
    targets = smooth_targets(torch.rand(4, 5, generator=g), 0.5, 0.1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    per_list = []
    for b in range(4):
        real = [i for i in range(5) if mask[b, i]]
        if len(real) >= 2:
            vals = [ref_focal(logits[b, i].item(), targets[b, i].item(), alpha, gamma) for i in real]
            per_list.append(sum(vals) / len(vals))
    expected = sum(per_list) / len(per_list)
    assert focal_loss(logits, targets, mask, alpha, gamma).item() == pytest.approx(expected, rel=1e-5)
    crazy = logits.masked_fill(~mask, float("nan"))
    assert focal_loss(crazy, targets.masked_fill(~mask, 7.0), mask, alpha, gamma).item() == pytest.approx(expected, rel=1e-5)


def test_focal_gamma0_alpha_half_is_half_bce() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    targets = torch.tensor([[1.0, 0.0, 0.3]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert focal_loss(logits, targets, mask, alpha=0.5, gamma=0.0).item() == pytest.approx(0.5 * bce.item(), rel=1e-6)


# ---------- RankNet ----------

@pytest.mark.parametrize("seed", range(4))
def test_ranknet_matches_double_loop(seed: int) -> None:
    lists = random_lists(seed, 6, distinct=False)
    scores, labels, mask = pad_batch(lists, 6)
    refs = [r for s, y in lists if (r := ref_ranknet(s, y)) is not None]
    expected = sum(refs) / len(refs) if refs else 0.0
    assert ranknet_loss(scores, labels, mask).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


# ---------- stability ----------

def test_all_losses_have_finite_gradients_with_extreme_scores() -> None:
    scores = torch.tensor([[1e4, -1e4, 0.0, 1e4, 5.0], [-1e4, 1e4, 3.0, 0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([[0.0, 1.0, 0.5, 0.2, 9.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    targets = smooth_targets(labels, 0.8, 0.05)
    for loss in (
        listmle_loss(scores, labels, mask),
        focal_loss(scores, targets, mask),
        focal_loss(scores, (labels >= 0.8).float(), mask, gamma=0.5),
        ranknet_loss(scores, labels, mask),
    ):
        (grad,) = torch.autograd.grad(loss, scores)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert (grad[~mask] == 0).all()


# ---------- CombinedLoss ----------

def test_combined_loss_warmup_then_weighted_listmle_focal() -> None:
    cfg = LossConfig()
    loss_fn = CombinedLoss(cfg, relevance_threshold=0.8)
    with torch.no_grad():
        loss_fn.log_t.fill_(0.4)
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 5, generator=g, requires_grad=True)
    labels = torch.rand(3, 5, generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2, 3:] = False

    warm, stats = loss_fn(scores, labels, mask, epoch=0)
    assert warm.item() == pytest.approx(ranknet_loss(scores, labels, mask).item())
    assert set(stats) == {"loss", "ranknet", "temperature"}

    loss, stats = loss_fn(scores, labels, mask, epoch=1, generator=torch.Generator().manual_seed(5))
    t = math.exp(0.4)
    targets = smooth_targets(labels, loss_fn.relevance_threshold, cfg.label_smoothing)
    expected = cfg.listmle_weight * listmle_loss(scores / t, labels, mask, torch.Generator().manual_seed(5)) + (
        cfg.focal_weight * focal_loss(scores / t, targets, mask, cfg.focal_alpha, cfg.focal_gamma)
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(stats) == {"loss", "listmle", "focal", "temperature"}
    assert all(isinstance(v, float) for v in stats.values())
    assert stats["temperature"] == pytest.approx(t, rel=1e-5)

    loss.backward()
    assert loss_fn.log_t.grad is not None and torch.isfinite(loss_fn.log_t.grad)
    assert [n for n, _ in loss_fn.named_parameters()] == ["log_t"]


def test_smoothed_targets_and_fixed_temperature() -> None:
    t = smooth_targets(torch.tensor([0.9, 0.8, 0.1]), 0.8, 0.05)
    assert torch.allclose(t, torch.tensor([0.975, 0.975, 0.025]))
    fixed = CombinedLoss(LossConfig(learn_temperature=False), relevance_threshold=0.8)
    assert list(fixed.parameters()) == [] and fixed.temperature.item() == 1.0


def test_softmax_ce_matches_brute_force_and_ignores_padding():
    import math

    from cotrr_core.losses import softmax_ce_loss

    s = torch.tensor([[2.0, 0.5, -1.0, 99.0], [0.3, 0.1, 0.0, 0.0]])
    y = torch.tensor([[2.0, 0.0, 1.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    m = torch.tensor([[True, True, True, False], [True, True, False, False]])
    gains = [3.0, 0.0, 1.0]
    logz = math.log(sum(math.exp(v) for v in (2.0, 0.5, -1.0)))
    expected = -sum(g / 4.0 * (v - logz) for g, v in zip(gains, (2.0, 0.5, -1.0)))
    # the second list has no positive gain: it carries no signal and is left out of the mean
    assert softmax_ce_loss(s, y, m).item() == pytest.approx(expected, rel=1e-5)


def test_combined_loss_uses_the_configured_listwise_term():
    from cotrr_core.config import LossConfig
    from cotrr_core.losses import CombinedLoss

    s = torch.randn(2, 5, requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0]] * 2)
    m = torch.ones(2, 5, dtype=torch.bool)
    loss, parts = CombinedLoss(LossConfig(listwise="softmax", pairwise_warmup_epochs=0), 1.0)(s, y, m, epoch=0)
    loss.backward()
    assert "softmax" in parts and "listmle" not in parts and torch.isfinite(s.grad).all()
