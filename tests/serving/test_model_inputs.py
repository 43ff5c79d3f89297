"""The served model and its inputs: the model's standardisation folded into the token projections."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import torch

from cotrr_core.data.dataset import build_ranking_data
from cotrr_core.model import Ragged, Standardise
from cotrr_core.scoring import score_data
from cotrr_core.serving.fold import FOLD_MAX_SHIFT, fold_standardisation
from cotrr_core.serving.reranker import Reranker
from tests.serving.conftest import lists_of
from tests.test_model import DIMS, make_batch, make_model


def test_folded_projections_score_raw_tokens_as_the_model_standardises_them():
    model = make_model()
    g = torch.Generator().manual_seed(3)
    scale = {k: (torch.randn(d, generator=g) * 3, torch.rand(d, generator=g) * 5 + 0.01) for k, d in DIMS.items()}
    scale["visual"][0][0] = FOLD_MAX_SHIFT * 2 * scale["visual"][1][0]  # cancellation risk: stays explicit
    model.standardise.set({k: m for k, (m, _) in scale.items()}, {k: s for k, (_, s) in scale.items()}, False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, names = fold_standardisation(model)
    assert names == {"img", "text", "conflict"}
    assert isinstance(folded.standardise, Standardise) and folded.standardise.names == ("visual",)
    tokens, mask = make_batch()
    raw = {k: x * scale[k][1] + scale[k][0] for k, x in tokens.items()}  # what a request carries
    with torch.inference_mode():
        want = model.score(Ragged.from_padded(raw, mask, ("text",)))
        got = folded.score(Ragged.from_padded(raw, mask, ("text",)))
    assert torch.allclose(got, want, atol=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "the run's model is untouched"
    scale["visual"][0][0] = 0.0
    model.standardise.set({k: m for k, (m, _) in scale.items()}, {k: s for k, (_, s) in scale.items()}, False)
    assert isinstance(fold_standardisation(model)[0].standardise, torch.nn.Identity)  # nothing left to apply


def test_served_scores_match_offline_scoring_with_a_log_transform(loaded):
    model = copy.deepcopy(loaded.run.model)
    model.standardise.log1p = True  # any fitted statistics will do
    run = dataclasses.replace(loaded.run, model=model)
    query, cands = lists_of()[1]
    res = Reranker(run).rerank(query, cands, time_budget_ms=1e4)
    data = build_ranking_data(pd.DataFrame(cands), run.spec, "t")
    served = {c["candidate_id"]: c["raw_score"] for c in res.served}
    assert res.fallback_reason is None
    assert np.allclose([served[c] for c in data.candidate_ids], score_data(run, data), atol=1e-5)
