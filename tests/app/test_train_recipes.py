"""The Train page offers the recommended recipe next to the fast one, bounds the form, and says what each run serves."""
from __future__ import annotations

import pandas as pd

from tests.app.test_pages import open_page


def test_recommended_recipe_and_form_limits(app_env, monkeypatch):
    import cotrr_core.views as views

    calls = []

    def fake_launch(dataset, overrides, name, *, fast=False, root=None):
        calls.append((dataset, overrides, name, fast))
        raise views.QueueFull("2 training run(s) already wait for a slot (at most 2 may wait)")

    monkeypatch.setattr(views, "launch_training", fake_launch)
    at = open_page("pages/train.py")
    limits = views.form_limits()
    inputs = {n.label: n for n in at.number_input}
    assert inputs["Epochs"].max == limits["train.epochs"] and inputs["Token layers"].max == limits["model.layers"]
    table = next(d.value for d in at.dataframe if "run_id" in d.value.columns)
    assert "model" in table.columns and table["model"].notna().any()
    next(b for b in at.button if b.label == "Start the recommended recipe").click().run()
    assert not at.exception
    assert calls and calls[0][1] == {} and calls[0][3] is False  # train's default: no overrides, not --fast
    assert any("already wait for a slot" in e.value for e in at.error)


def test_run_kind_and_parts():
    from cotrr_core.views import blend_parts, run_kind

    metrics = {"ranker": {"mode": "network"}, "test": {},
               "blend": {"weight": 2.0, "committee": ["lightgbm", "ridge"], "parts": ["network", "lightgbm", "ridge"],
                         "val_ndcg@10": {"network": 0.65, "lightgbm": 0.70, "ridge": 0.65, "committee": 0.67,
                                         "blend": 0.68}}}
    assert run_kind(metrics) == "network + lightgbm + ridge (w = 2)"
    assert run_kind({"ranker": {"mode": "first_stage"}, "test": {}, "blend": {"weight": 0.0}}) == "first-stage order"
    parts = blend_parts(metrics)
    assert isinstance(parts, pd.DataFrame) and list(parts["part"]) == ["network", "lightgbm", "ridge", "committee", "blend"]
    assert list(parts["served"]) == [True, True, True, False, True]
    assert blend_parts({}).empty
