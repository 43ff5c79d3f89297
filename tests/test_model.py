"""CoTRRModel: shapes, masking, fused vs explicit attention, list-constant tokens, MC dropout, training."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cotrr_core.config import ModelConfig
from cotrr_core.losses import listmle_loss
from cotrr_core.mc import _dropout, mc_dropout_scores, mc_scores, sampled_head
from cotrr_core.model import SHORT_SEQUENCE, CoTRRModel, Ragged, count_parameters, row_bucket

DIMS = {"img": 12, "text": 12, "visual": 4, "conflict": 3}
DEMO_DIMS = {"clip_img": 1024, "clip_text": 1024, "visual": 8, "conflict": 5}


def small_config(**kw) -> ModelConfig:
    return ModelConfig(hidden=32, layers=2, heads=4, **kw)


def make_batch(b: int = 3, l: int = 6, seed: int = 0, dims: dict[str, int] = DIMS):
    g = torch.Generator().manual_seed(seed)
    tokens = {k: torch.randn(b, l, d, generator=g) for k, d in dims.items()}
    tokens["text"] = tokens["text"][:, :1].expand(b, l, -1).clone()  # list-constant query token
    mask = torch.ones(b, l, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    return tokens, mask


def make_model(seed: int = 0, **kw) -> CoTRRModel:
    torch.manual_seed(seed)
    return CoTRRModel(small_config(**kw), DIMS, list_constant=("text",)).eval()


@pytest.mark.parametrize("list_context", [False, True])
def test_shape_padding_invariance_and_no_nan(list_context: bool) -> None:
    model = make_model(list_context=list_context)
    tokens, mask = make_batch()
    scores = model(tokens, mask)
    assert scores.shape == mask.shape and (scores[~mask] == 0).all()
    crazy = {k: v.masked_fill(~mask[..., None], float("nan")) for k, v in tokens.items()}
    crazy["img"] = torch.where(mask[..., None], tokens["img"], 1e6)
    again = model(crazy, mask)
    assert torch.isfinite(again).all()
    assert torch.allclose(scores[mask], again[mask], atol=1e-6)


@pytest.mark.parametrize("list_context", [False, True])
def test_padded_list_scores_as_it_does_alone(list_context: bool) -> None:
    """The trunk skips padding: a short list padded into a batch scores as it does on its own."""
    model = make_model(list_context=list_context)
    tokens, mask = make_batch()
    batch = model(tokens, mask)
    for k in range(mask.size(0)):
        n = int(mask[k].sum())
        alone = model({name: v[k:k + 1, :n] for name, v in tokens.items()}, mask[k:k + 1, :n])
        assert torch.allclose(alone[0], batch[k, :n], atol=1e-5)


def test_ragged_batch_from_lengths_scores_as_the_padded_one() -> None:
    """Serving's end-to-end rows (no padding anywhere) give the padded forward's scores, also repeated."""
    model = make_model(list_context=True)
    tokens, mask = make_batch()
    lengths = mask.sum(1)
    rows = {n: v[mask] for n, v in tokens.items() if n != "text"}
    batch = Ragged.from_lengths(rows, {"text": tokens["text"][:, 0]}, lengths)
    torch.testing.assert_close(model.score(batch), model(tokens, mask)[mask])  # [n]: the real rows
    padded, same_mask = batch.padded()
    assert torch.equal(same_mask, mask)
    torch.testing.assert_close(model(padded, mask), model(tokens, mask))
    twice = batch.repeat(2)
    torch.testing.assert_close(model.score(twice), model(tokens, mask)[mask].repeat(2))


def test_rows_bucketed_by_the_trunk_change_no_score_or_attention_map() -> None:
    """35 real rows run as 36 (one slack row): every list still scores as it does alone, maps as alone."""
    model = make_model(list_context=True)
    tokens, mask = make_batch(b=5, l=8)
    mask[:] = True
    mask[4, 3:] = False
    assert row_bucket(int(mask.sum())) == 36
    scores, maps = model(tokens, mask, return_attention=True)
    for k, n in enumerate(mask.sum(1).tolist()):
        alone, alone_maps = model({name: v[k:k + 1, :n] for name, v in tokens.items()}, mask[k:k + 1, :n],
                                  return_attention=True)
        torch.testing.assert_close(alone[0], scores[k, :n])
        torch.testing.assert_close(alone_maps["token"][0], maps["token"][k, :n])


@given(st.integers(1, 10**7))
def test_row_bucket_adds_at_most_a_sixteenth_with_sixteen_sizes_per_octave(n: int) -> None:
    m = row_bucket(n)
    assert n <= m <= n + n // 16
    low = 1 << (n.bit_length() - 1)  # n's octave [low, 2 low): its buckets are 16 evenly spaced sizes
    assert low < 32 or (m - low) % (low // 16) == 0


def test_all_padding_list_is_finite_with_finite_gradients() -> None:
    model = make_model(list_context=True).train()
    tokens, mask = make_batch()
    mask[2] = False
    scores = model(tokens, mask)
    assert torch.isfinite(scores).all()
    scores.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("list_context", [False, True])
def test_score_depends_on_other_candidates_only_with_list_context(list_context: bool) -> None:
    model = make_model(list_context=list_context)
    tokens, mask = make_batch()
    changed = {k: v.clone() for k, v in tokens.items()}
    changed["img"][0, 3:] += 5.0
    before, after = model(tokens, mask)[0, :3], model(changed, mask)[0, :3]
    assert torch.allclose(before, after, atol=1e-6) != list_context


@pytest.mark.parametrize("list_context", [False, True])
def test_fused_path_equals_attention_path(list_context: bool) -> None:
    model = make_model(list_context=list_context)
    tokens, mask = make_batch()
    fast = model(tokens, mask)
    slow, att = model(tokens, mask, return_attention=True)
    assert torch.allclose(fast, slow, atol=1e-5)
    b, l = mask.shape
    cfg = model.config
    assert att["token"].shape == (b, l, cfg.layers, cfg.heads, len(DIMS), len(DIMS))
    rows = att["token"].sum(-1)  # [B, L, layers, heads, T]: 1 for real candidates, 0 for padding
    assert torch.allclose(rows, mask[:, :, None, None, None].float().expand_as(rows), atol=1e-5)
    if list_context:
        lst = att["list"]
        assert lst.shape == (b, cfg.list_context_layers, cfg.heads, l, l)
        assert torch.allclose(lst.sum(-1), torch.ones(()), atol=1e-5)
        assert (lst.masked_select(~mask[:, None, None, None, :].expand_as(lst)) == 0).all()
    else:
        assert att["list"] is None


def test_list_constant_projection_equals_per_candidate_projection() -> None:
    model = make_model()
    per_candidate = CoTRRModel(small_config(), DIMS).eval()
    per_candidate.load_state_dict(model.state_dict())
    tokens, mask = make_batch()
    assert torch.allclose(model(tokens, mask), per_candidate(tokens, mask), atol=1e-6)


def test_autocast_bfloat16_runs_finite() -> None:
    model = make_model(list_context=True)
    tokens, mask = make_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model(tokens, mask)
        slow, _ = model(tokens, mask, return_attention=True)
    assert torch.isfinite(fast).all() and torch.isfinite(slow).all()
    assert torch.allclose(fast.float(), model(tokens, mask), atol=0.1)


def test_long_lists_matmul_attention_equals_sdpa_and_its_dropout_is_inverted_dropout() -> None:
    """Lists longer than SHORT_SEQUENCE: attention maps come from the matmul path, which must score as the
    fused SDPA path does; MC sampling's dropout keeps 1 - p of the values, scaled by 1 / (1 - p)."""
    model = make_model(list_context=True)
    tokens, mask = make_batch(l=SHORT_SEQUENCE + 4)
    fast = model(tokens, mask)
    slow, maps = model(tokens, mask, return_attention=True)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(maps["list"].sum(-1), torch.ones_like(maps["list"].sum(-1)))
    x = torch.ones(200_000)
    with torch.inference_mode():
        y = _dropout(x, 0.25)
    torch.testing.assert_close(y.unique(), torch.tensor([0.0, 4 / 3]))
    assert abs((y == 0).float().mean().item() - 0.25) < 0.005
    assert _dropout(x, 0.0) is x
    with torch.inference_mode():
        y = _dropout(torch.ones(4, 50_000), 0.25, exempt=1)  # row 0: the deterministic copy
    assert torch.equal(y[0], torch.ones(50_000)) and abs((y[1:] == 0).float().mean().item() - 0.25) < 0.01


@pytest.mark.parametrize("l", [4, SHORT_SEQUENCE + 4])
@pytest.mark.parametrize("list_context", [False, True])
def test_copies_share_the_first_attention_weights_and_sample_as_repeated_lists(l: int, list_context: bool) -> None:
    """sampled_head(c, copies=C) draws the same dropout as sampling C stacked copies of the lists (same seed)."""
    model = make_model(list_context=list_context)
    tokens, mask = make_batch(l=l)
    batch = Ragged.from_padded(tokens, mask, ("text",))
    with torch.inference_mode():
        c, _ = model.candidates(batch)
        torch.manual_seed(5)
        shared = sampled_head(model, c, batch, copies=4, exempt=False)
        torch.manual_seed(5)
        stacked = sampled_head(model, c.repeat(4, 1), batch.repeat(4), copies=1, exempt=False)
        with_exempt = sampled_head(model, c, batch, copies=4, exempt=True)
    n = int(mask.sum())
    assert shared.shape == (4, n)
    torch.testing.assert_close(shared.reshape(-1), stacked.reshape(-1))
    torch.testing.assert_close(with_exempt[0], model(tokens, mask)[mask])  # copy 0: no dropout


@pytest.mark.parametrize("l", [4, SHORT_SEQUENCE + 4])
def test_head_scope_scores_its_deterministic_copy_exactly_in_the_sampled_batch(l: int) -> None:
    """Both attention paths: copy 0 of the head's batch is exempt from dropout, copies 1.. are samples."""
    model = make_model(list_context=True)
    tokens, mask = make_batch(l=l)
    scores, samples = mc_scores(model, Ragged.from_padded(tokens, mask, ("text",)), n_samples=3, scope="head")
    torch.testing.assert_close(scores, model(tokens, mask)[mask])  # [n]: the real rows
    assert all(not torch.allclose(s, scores) for s in samples)


@pytest.mark.parametrize("was_training", [False, True])
def test_mc_dropout_one_batched_forward_and_modes_restored(was_training: bool) -> None:
    model = make_model(list_context=True).train(was_training)
    tokens, mask = make_batch()
    calls = []
    handle = model.encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].mask.shape))
    samples = mc_dropout_scores(model, tokens, mask, n_samples=64)
    handle.remove()
    assert calls == [torch.Size([64 * 3, 6])]  # one trunk pass over S * B lists
    assert samples.shape == (64, 3, 6) and not samples.requires_grad
    assert all(m.training == was_training for m in model.modules())
    assert not torch.allclose(samples[0], samples[1])
    assert (samples[:, ~mask] == 0).all()
    deterministic = model.eval()(tokens, mask)
    assert (samples.mean(0) - deterministic)[mask].abs().max() < 0.5


def test_mc_dropout_never_changes_module_modes() -> None:
    """Sampling is requested per call, so a model shared by threads is never switched to train mode."""
    model = make_model()
    seen = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, a: seen.setdefault(type(mod).__name__, set()).add(mod.training))
        for m in model.modules()
    ]
    samples = mc_dropout_scores(model, *make_batch(), n_samples=2)
    for h in hooks:
        h.remove()
    assert seen and all(modes == {False} for modes in seen.values())
    assert all(not m.training for m in model.modules())
    assert not torch.allclose(samples[0], samples[1])


def test_mc_dropout_uses_sdpa_dropout_only_when_dropout_is_on() -> None:
    model = make_model()
    for m in model.modules():  # leave attention-weight dropout as the only source of noise
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    for blk in model.blocks:
        blk.attn.attn_drop.p = 0.5
    samples = mc_dropout_scores(model, *make_batch(), n_samples=4)
    assert not torch.allclose(samples[0], samples[1])
    assert torch.allclose(model(*make_batch()), model(*make_batch()))  # eval: deterministic


def test_default_config_parameter_count() -> None:
    model = CoTRRModel(ModelConfig(), DEMO_DIMS, list_constant=("clip_text",))
    n = count_parameters(model)
    assert n == 1_355_009
    assert 1_100_000 <= n <= 1_500_000


def test_tiny_training_loop_learns_single_feature_ranking() -> None:
    torch.manual_seed(0)
    dims = {"signal": 4, "noise": 6}
    model = CoTRRModel(ModelConfig(hidden=32, layers=1, heads=4, dropout=0.0), dims)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)

    def batch(b: int = 16, l: int = 8):
        tokens = {k: torch.randn(b, l, d, generator=g) for k, d in dims.items()}
        labels = tokens["signal"][..., 0]  # relevance is one feature
        mask = torch.rand(b, l, generator=g) < 0.85
        mask[:, :2] = True
        return tokens, labels, mask

    losses = []
    for _ in range(100):
        tokens, labels, mask = batch()
        loss = listmle_loss(model(tokens, mask), labels, mask, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10

    model.eval()
    tokens, labels, mask = batch(64)
    with torch.no_grad():
        scores = model(tokens, mask)
    pairs = (labels[:, :, None] > labels[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    correct = (scores[:, :, None] > scores[:, None, :]) & pairs
    assert correct.sum() / pairs.sum() > 0.9


@pytest.mark.parametrize("list_context", [False, True])
def test_head_scope_mc_samples_only_the_head_and_shares_the_trunk(list_context: bool) -> None:
    model = make_model(list_context=list_context)
    tokens, mask = make_batch()
    calls = []
    hook = model.encoder.register_forward_hook(lambda *a: calls.append(1))
    scores, samples = mc_scores(model, Ragged.from_padded(tokens, mask, ("text",)), n_samples=6, scope="head")
    hook.remove()
    assert calls == [1]  # the token trunk ran once for the mean and all samples
    assert samples.shape == (6, int(mask.sum()))
    torch.testing.assert_close(scores, model(tokens, mask)[mask])  # the mean pass is the eval forward
    assert not torch.allclose(samples[0], samples[1])
    assert not model.training and all(not m.training for m in model.modules())


@pytest.mark.parametrize("log1p", [False, True])
def test_standardisation_lives_in_the_state_dict_and_is_applied_first(log1p: bool) -> None:
    """The model standardises raw tokens itself: a model given statistics scores raw tokens as an identity-
    standardised copy scores the tokens standardised by hand; the statistics travel in the state dict."""
    model = make_model()
    g = torch.Generator().manual_seed(4)
    mean = {k: torch.randn(d, generator=g) for k, d in DIMS.items()}
    std = {k: torch.rand(d, generator=g) + 0.5 for k, d in DIMS.items()}
    plain = make_model()  # same weights, identity standardisation
    model.set_standardisation({"log_transform": log1p, "mean": mean, "std": std})
    tokens, mask = make_batch()
    f = (lambda x: x.sign() * x.abs().log1p()) if log1p else (lambda x: x)
    by_hand = {k: (f(x) - mean[k]) / std[k] for k, x in tokens.items()}
    torch.testing.assert_close(model(tokens, mask), plain(by_hand, mask))
    copy = make_model()
    copy.load_state_dict(model.state_dict())
    assert copy.standardise.log1p == log1p
    torch.testing.assert_close(copy(tokens, mask), model(tokens, mask))
    centre = {k: model.standardise.centre(k).expand_as(x) for k, x in tokens.items()}
    torch.testing.assert_close(model(centre, mask), plain({k: torch.zeros_like(x) for k, x in tokens.items()}, mask))
    noisy = model.standardise.jitter(tokens, 0.1, torch.Generator().manual_seed(0))
    noise = {k: (f(noisy[k]) - f(x)) / std[k] for k, x in tokens.items()}  # in standardised units
    torch.testing.assert_close(noise["img"], 0.1 * torch.randn(tokens["img"].shape,
                                                               generator=torch.Generator().manual_seed(0)),
                               atol=1e-4, rtol=1e-3)


def test_a_state_dict_without_standardisation_needs_the_scaler_state() -> None:
    state = {k: v for k, v in make_model().state_dict().items() if not k.startswith("standardise.")}
    with pytest.raises(ValueError, match="scaler.json"):
        make_model().load_weights(state)
    model = make_model()
    model.load_weights(state, {"log_transform": False, "mean": {k: [1.0] * d for k, d in DIMS.items()},
                               "std": {k: [2.0] * d for k, d in DIMS.items()}})
    assert float(model.standardise.stats("img")[1][0]) == 2.0


@pytest.mark.parametrize("scope", ["head", "all"])
def test_sampling_only_the_later_lists_equals_sampling_them_alone(scope: str) -> None:
    """A batch whose first lists need no samples (a serving batch of plain and MC requests): every list gets
    its eval score, and the later lists' samples are those the same draws give them scored alone."""
    model = make_model(list_context=True)
    tokens, mask = make_batch(b=4)
    batch = Ragged.from_padded(tokens, mask, ("text",))
    tail, row = batch.tail(2)
    assert row == int(mask[:2].sum()) and tail.mask.shape == (2, mask.size(1))
    torch.manual_seed(7)
    scores, samples = mc_scores(model, batch, n_samples=5, scope=scope, first_list=2)
    torch.manual_seed(7)
    _, alone = mc_scores(model, tail, n_samples=5, scope=scope, with_mean=False)
    torch.testing.assert_close(scores, model(tokens, mask)[mask])
    assert samples.shape == (5, int(mask[2:].sum()))
    torch.testing.assert_close(samples, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(samples[0], samples[1])
