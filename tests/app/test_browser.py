"""End to end in a real Chromium: every page, a short training run, a rejected upload, screenshots."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app.conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
OUT = ROOT / "test-output"
PAGES = {"": "Test metrics: reranked vs original order", "train": "Train a reranker", "attention": "Token ablation",
         "calibration": "Reliability diagram", "compare": "Over all test queries", "rollout": "Staged ramp"}

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Debian's chromium not found at {CHROMIUM} "
                                                                     "(apt-get install chromium)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(app_env, tmp_path_factory):
    """`streamlit run app.py` on a free port, with its own runs dir holding a copy of the tiny run."""
    base = tmp_path_factory.mktemp("browser")
    runs = base / "runs"
    shutil.copytree(app_env["run_dir"], runs / app_env["run_dir"].name)
    port = _free_port()
    env = dict(os.environ, COTRR_RUNS=str(runs), COTRR_UPLOADS=str(base / "uploads"),
               COTRR_DEFAULT_DATASET="demo-small")
    log = open(base / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not become healthy:\n" + (base / "server.log").read_text()[-3000:])
    yield {"url": url, "runs": runs, "base": base}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    for run in runs.iterdir():  # a training process the test started and that is still running
        status = run / "status.json"
        if status.exists() and json.loads(status.read_text()).get("state") in ("queued", "running"):
            (run / "CANCEL").touch()
    log.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def _settle(pg, text: str, timeout: float = 90_000) -> None:
    pg.get_by_text(text, exact=False).first.wait_for(timeout=timeout)
    # wait until the script has finished running (the status widget disappears)
    deadline = time.time() + timeout / 1000
    while time.time() < deadline and pg.locator('[data-testid="stStatusWidget"]').count():
        time.sleep(0.2)


def test_every_page(server, page):
    OUT.mkdir(exist_ok=True)
    for path, text in PAGES.items():
        page.goto(f"{server['url']}/{path}")
        _settle(page, text)
        assert page.locator('[data-testid="stException"]').count() == 0, path
        page.screenshot(path=str(OUT / f"page-{path or 'overview'}.png"), full_page=True)


def test_rollout_tabs(server, page):
    page.goto(f"{server['url']}/rollout")
    _settle(page, PAGES["rollout"])
    page.get_by_role("tab", name="Shadow mode").click()
    page.get_by_text("top-1 agreement").first.wait_for(timeout=30_000)
    page.get_by_role("tab", name="Top-M frontier").click()
    page.get_by_text("Measure the frontier").first.click()
    page.get_by_text("Recommended M", exact=False).or_(page.get_by_text("No M fits", exact=False)).first.wait_for(
        timeout=90_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(OUT / "rollout-topm.png"), full_page=True)


def _choose(pg, label: str, option: str) -> None:
    pg.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    pg.get_by_role("option", name=option, exact=True).click()


def test_train_short_run_to_done(server, page):
    page.goto(f"{server['url']}/train")
    _settle(page, "Start training")
    _choose(page, "Hidden size", "16")
    _choose(page, "Heads", "2")
    for label, value in (("Token layers", "1"), ("Epochs", "1")):
        box = page.get_by_label(label)
        box.fill(value)
        box.press("Tab")
    page.get_by_label("Run name").fill("browser")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("browser: done", exact=False).first.wait_for(timeout=150_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(OUT / "train-done.png"), full_page=True)
    done = [r for r in server["runs"].iterdir() if r.name.endswith("browser")]
    assert done and json.loads((done[0] / "status.json").read_text())["state"] == "done"


def test_broken_upload_names_the_line(server, page, tmp_path):
    from tests.conftest import make_step5_rows

    rows = make_step5_rows(3, 3)
    bad = tmp_path / "broken.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n" + '{"query_id": "q9", oops\n')
    page.goto(f"{server['url']}/")
    _settle(page, PAGES[""])
    page.get_by_text("Upload data", exact=False).first.click()
    page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(str(bad))
    page.get_by_text("Upload rejected", exact=False).first.wait_for(timeout=30_000)
    body = page.locator('[data-testid="stSidebar"]').inner_text()
    assert "broken.jsonl: line 3: malformed JSON" in body
    page.screenshot(path=str(OUT / "upload-rejected.png"), full_page=True)
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in make_step5_rows(12, 6)))
    page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(str(good))
    page.get_by_text("kept 12 queries", exact=False).first.wait_for(timeout=30_000)
    page.get_by_text("No finished run on this dataset yet", exact=False).first.wait_for(timeout=30_000)
    assert (server["base"] / "uploads" / "good.jsonl").exists()
    assert not (server["base"] / "uploads" / "broken.jsonl").exists()
