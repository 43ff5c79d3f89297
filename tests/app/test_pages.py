"""Every page through streamlit.testing AppTest: renders, key widgets, widgets change the output."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP

PAGES = ["pages/overview.py", "pages/train.py", "pages/attention.py", "pages/calibration.py",
         "pages/compare.py", "pages/rollout.py"]


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page != PAGES[0]:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(app_env, page):
    at = open_page(page)
    assert at.title and at.sidebar.selectbox(key="_dataset").value == "demo-small"
    assert at.sidebar.selectbox(key="_run_id").value == app_env["run_dir"].name
    assert not at.error or page == "pages/rollout.py"  # the ramp may roll back a 1-epoch model


def test_overview_numbers(app_env):
    at = open_page(PAGES[0])
    m = metrics(at)
    assert {"ndcg@10", "c@1", "mrr", "ECE after calibration"} <= set(m)
    assert any(k.startswith("Serving latency") or k.startswith("Score time") for k in m)
    assert len(at.get("download_button")) >= 2


def test_attention_widgets_change_output(app_env):
    at = open_page("pages/attention.py")
    for key in ("att-query", "att-cand", "att-layer", "att-head", "att-lhead", "abl-token"):
        assert at.selectbox(key=key) is not None
    before = metrics(at)
    at.selectbox(key="abl-token").set_value("conflict").run()
    assert not at.exception
    assert metrics(at)["mean |score change|"] != before["mean |score change|"]
    at.toggle(key="att-dataset").set_value(True).run()
    assert not at.exception and len(at.get("download_button")) >= 4


def test_calibration_method_changes_output(app_env):
    at = open_page("pages/calibration.py")
    at.selectbox(key="cal-method").set_value("isotonic").run()
    iso = metrics(at)["AURC (MC dropout)"]
    at.selectbox(key="cal-method").set_value("platt").run()
    assert not at.exception
    assert metrics(at)["AURC (MC dropout)"] != iso


def test_compare_query_and_regression_button(app_env):
    at = open_page("pages/compare.py")
    m = metrics(at)
    assert int(m["wins"]) + int(m["ties"]) + int(m["losses"]) == int(m["queries"])
    header = [md.value for md in at.markdown if md.value.startswith("### ")]
    options = at.selectbox(key="cmp-query").options
    at.selectbox(key="cmp-query").set_value(at.selectbox(key="cmp-query").value + 1).run()
    assert not at.exception and [md.value for md in at.markdown if md.value.startswith("### ")] != header
    regressions = [b for b in at.button if b.key and b.key.startswith("reg-")]
    if regressions:
        target = int(regressions[0].key.split("-")[1])
        regressions[0].click().run()
        assert at.selectbox(key="cmp-query").value == target
    at.text_input(key="cmp-search").set_value("zzzz-no-such-query").run()
    assert any("No query matches" in w.value for w in at.warning)
    assert len(options) >= 2


def test_rollout_share_changes_output(app_env):
    at = open_page("pages/rollout.py")
    before = metrics(at)["queries simulated"]
    at.number_input(key="ab-units").set_value(1000).run()
    assert not at.exception and metrics(at)["queries simulated"] != before
    assert "SRM check" in metrics(at)
    at.toggle(key="topm-on").set_value(True).run()
    assert not at.exception
    assert any("M =" in s.value or "No M fits" in s.value for s in [*at.success, *at.warning])


def test_train_form_shows_config_errors(app_env):
    at = open_page("pages/train.py")
    assert at.get("form") and at.dataframe  # runs table
    device = next(s for s in at.selectbox if s.label == "Device")
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: choosing it is not an error here")
    device.set_value("cuda")
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception
    assert any("CUDA is not available" in e.value for e in at.error)


def test_first_launch_shows_progress(app_env, tmp_path, monkeypatch):
    """Empty runs dir: the default run is started (once) and its progress is shown."""
    from cotrr_core.training import jobs
    from cotrr_core.training.runs import write_status

    started = []

    def fake_launch(dataset, overrides, name, *, fast=False, root=None):
        d = tmp_path / "runs" / f"20990101-000000-{name}"
        d.mkdir(parents=True)
        write_status(d, "running", 0.4, "epoch 5/12")
        started.append(dataset)
        return d

    monkeypatch.setenv("COTRR_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(jobs, "launch_training", fake_launch)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    assert started == ["demo-small"]
    assert any("First launch" in i.value for i in at.info)
    assert at.get("progress") and "epoch 5/12" in at.get("progress")[0].proto.text
    at.run()
    assert started == ["demo-small"]  # not launched twice
