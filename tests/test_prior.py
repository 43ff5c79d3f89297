"""The first-stage prior: similarity features against a brute-force reference, the served modes, and
the state dict (bank resized on load, older runs without a prior)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from cotrr_core.config import ModelConfig
from cotrr_core.model import CoTRRModel, Ragged
from cotrr_core.prior import TEMPERATURES, SimilarityFeatures


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference(q, c, bank, positives, exclude_positives):
    """One candidate at a time, in float64: cosine, then cos - t * logsumexp(cos(bank, c) / t)."""
    out = []
    for qi, ci in zip(_unit(q), _unit(c)):
        keep = [b for b, p in zip(_unit(bank), positives)
                if b @ qi <= 0.999 and not (exclude_positives and p.any() and _unit(p) @ ci > 0.999)]
        sims = np.array([b @ ci for b in keep])
        out.append([qi @ ci] + [qi @ ci - t * logsumexp(sims / t) for t in TEMPERATURES])
    return np.array(out)


@pytest.mark.parametrize("exclude_positives", [False, True])
def test_similarity_features_match_brute_force(exclude_positives):
    rng = np.random.default_rng(0)
    d, nb, n = 8, 12, 10
    bank, positives = rng.normal(size=(nb, d)), rng.normal(size=(nb, d))
    positives[3] = 0.0  # a bank query with no relevant candidate
    q = rng.normal(size=(n, d))
    q[0] = bank[2] * 3.0  # a query that is in the bank (its entry never counts)
    c = rng.normal(size=(n, d)) * 5.0  # raw norms: the features are cosines
    c[1] = positives[5] * 2.0  # a candidate that is a bank query's positive
    feats = SimilarityFeatures(d, 0)
    feats.set_bank(torch.tensor(bank), torch.tensor(positives))
    feats.exclude_positives.fill_(exclude_positives)
    got = feats(torch.tensor(q, dtype=torch.float32), torch.tensor(c, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(got, _reference(q, c, bank, positives, exclude_positives), atol=2e-5)


def test_empty_bank_gives_the_cosine_in_every_column():
    q, c = torch.randn(5, 4), torch.randn(5, 4)
    got = SimilarityFeatures(4, 0)(q, c)
    cos = torch.nn.functional.cosine_similarity(q, c)
    torch.testing.assert_close(got, cos[:, None].expand(-1, got.shape[1]))


def _model(bank_size=6, seed=0):
    torch.manual_seed(seed)
    m = CoTRRModel(ModelConfig(hidden=16, heads=2, layers=1, list_context=True),
                   {"img": 4, "text": 4}, ["text"], similarity=("text", "img"))
    m.prior.similarity.set_bank(torch.randn(bank_size, 4), torch.randn(bank_size, 4))
    return m.eval()


def _batch(k=3, l=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = {"img": torch.randn(k, l, 4, generator=g), "text": torch.randn(k, 1, 4, generator=g).expand(k, l, 4)}
    mask = torch.ones(k, l, dtype=torch.bool)
    mask[1, 3:] = False
    return tokens, mask


def test_a_new_model_starts_at_the_prior_order():
    m = _model()
    tokens, mask = _batch()
    with torch.no_grad():
        network = m(tokens, mask)
        m.prior.set_mode("prior")
        prior = m(tokens, mask)
    torch.testing.assert_close(network, prior)  # the residual head starts at zero


def test_first_stage_mode_keeps_each_list_in_order():
    m = _model()
    m.prior.set_mode("first_stage")
    tokens, mask = _batch()
    with torch.no_grad():
        scores = m(tokens, mask)
    for k in range(mask.shape[0]):
        s = scores[k][mask[k]].numpy()
        assert (np.argsort(-s, kind="stable") == np.arange(len(s))).all()


def test_prior_mode_ignores_the_network():
    m = _model()
    tokens, mask = _batch()
    with torch.no_grad():
        m.head[-1].weight.normal_()  # a trained residual
        with_residual = m(tokens, mask)
        m.prior.set_mode("prior")
        prior_only = m(tokens, mask)
        m.head[-1].weight.zero_()
        m.head[-1].bias.zero_()
        zero_residual = m(tokens, mask)
    assert not torch.allclose(with_residual, prior_only)
    torch.testing.assert_close(prior_only, zero_residual)


def test_state_dict_round_trip_resizes_the_bank():
    m = _model(bank_size=7)
    m.prior.set_mode("prior")
    m.prior.column.fill_(2)
    fresh = CoTRRModel(ModelConfig(hidden=16, heads=2, layers=1, list_context=True),
                       {"img": 4, "text": 4}, ["text"], similarity=("text", "img")).eval()
    fresh.load_weights(m.state_dict())
    assert fresh.prior.similarity.bank.shape == (7, 4) and fresh.prior.mode_name == "prior"
    tokens, mask = _batch()
    batch = Ragged.from_padded(tokens, mask, ["text"])
    with torch.no_grad():
        torch.testing.assert_close(fresh.score(batch), m.score(batch))


def test_a_state_saved_before_the_prior_existed_loads():
    cfg = ModelConfig(hidden=16, heads=2, layers=1)
    old = CoTRRModel(cfg, {"a": 3, "b": 2})
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("prior.")}
    new = CoTRRModel(cfg, {"a": 3, "b": 2})
    new.load_weights(state)
    assert new.prior.mode_name == "network" and new.prior.source is None
