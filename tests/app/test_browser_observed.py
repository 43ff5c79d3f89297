"""The Rollout page's Observed view in a real Chromium, on a decision log written by `cotrr_core serve` with shadow
mode on: arm sizes, SRM p-value and shadow agreement shown match a direct computation from the log."""
from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tests.app.conftest import ROOT
from tests.app.test_browser import CHROMIUM, _free_port, _launch, _settle, _start, _stop

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Debian's chromium not found at {CHROMIUM}")]


def _post(url: str, doc: dict) -> int:
    body = json.dumps(doc, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)).encode()
    req = urllib.request.Request(url, body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def shadow_log(app_env, small_bench, tmp_path_factory):
    """40 requests (20 units, each twice) and one rejected request through a shadow-mode server; its log folder."""
    from cotrr_core.serving.features import request_records

    logs = tmp_path_factory.mktemp("observed_logs")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cotrr_core", "serve", str(app_env["run_dir"]), "--port", str(port),
                             "--policy", "shadow", "--log-dir", str(logs)], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        test = small_bench.splits["test"]
        for k in range(40):
            q = k % test.num_queries
            assert _post(base + "/v1/rerank", {"query": str(test.queries[q]), "candidates": request_records(test, q),
                                               "unit_id": f"user{k % 20}", "time_budget_ms": 2000}) == 200
        assert _post(base + "/v1/rerank", {"candidates": "not a list"}) == 422
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return logs


def direct(logs: Path) -> dict:
    """Arm sizes, SRM p-value and shadow agreement computed here from the JSON lines alone."""
    recs = [json.loads(line) for f in sorted(logs.glob("decisions-*.jsonl")) for line in f.read_text().splitlines()]
    served = [r for r in recs if r.get("arm")]
    units = {arm: len({r["unit_id"] for r in served if r["arm"] == arm}) for arm in ("control", "treatment")}
    # shadow: the policy's treatment share is 0, so any treatment unit is a mismatch (p 0), none is p 1
    p_srm = 1.0 if units["treatment"] == 0 else 0.0
    top1 = np.mean([r["served"][0] != r["wouldbe"][0] for r in served])
    taus = []
    for r in served:
        pos = {c: i for i, c in enumerate(r["wouldbe"])}
        tau = stats.kendalltau(np.arange(len(r["served"])), [pos[c] for c in r["served"]]).statistic
        taus.append(1.0 if len(r["served"]) < 2 or math.isnan(tau) else tau)
    return {"units": units, "p_srm": p_srm, "top1": float(top1), "tau": float(np.mean(taus)), "served": len(served)}


def _metric(pg, label: str) -> str:
    box = pg.locator('[data-testid="stMetric"]:visible').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_observed_view_matches_the_log(app_env, shadow_log, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    want = direct(shadow_log)
    assert want["served"] == 40 and want["units"]["control"] == 20
    base = tmp_path_factory.mktemp("observed_browser")
    runs = base / "runs"
    shutil.copytree(app_env["run_dir"], runs / app_env["run_dir"].name)
    proc, url, log = _start(base, runs)
    try:
        with sync_playwright() as p:
            browser = _launch(p)
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.goto(f"{url}/rollout?decisions={urllib.parse.quote(str(shadow_log))}")
            _settle(pg, "Staged ramp")
            pg.get_by_role("tab", name="Observed (served traffic)").click()
            try:
                _settle(pg, "top-1 change rate", 60_000)
            finally:
                (ROOT / "test-output").mkdir(exist_ok=True)
                pg.screenshot(path=str(ROOT / "test-output" / "page-rollout-observed.png"), full_page=True)
            got = {"control": _metric(pg, "control units"), "treatment": _metric(pg, "treatment units"),
                   "top1": _metric(pg, "top-1 change rate"), "tau": _metric(pg, "Kendall τ (mean)"),
                   "srm": pg.locator('[data-testid="stMetric"]:visible').filter(has_text="SRM check").first.inner_text()}
            assert pg.locator('[data-testid="stException"]').count() == 0
            browser.close()
    finally:
        _stop(proc, log, runs)
    assert (int(got["control"]), int(got["treatment"])) == (want["units"]["control"], want["units"]["treatment"])
    assert float(got["top1"]) == pytest.approx(want["top1"], abs=5e-5)
    assert float(got["tau"]) == pytest.approx(want["tau"], abs=5e-5)
    assert f"p = {want['p_srm']:.4g}" in got["srm"]
