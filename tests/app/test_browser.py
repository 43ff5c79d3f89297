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


def _start(base: Path, runs: Path) -> tuple[subprocess.Popen, str, object]:
    """`streamlit run app.py` on a free port with its own runs and uploads dirs; waits until healthy."""
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
    return proc, url, log


def _stop(proc: subprocess.Popen, log, runs: Path) -> None:
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
def server(app_env, tmp_path_factory):
    """A server with its own runs dir holding a copy of the tiny run."""
    base = tmp_path_factory.mktemp("browser")
    runs = base / "runs"
    shutil.copytree(app_env["run_dir"], runs / app_env["run_dir"].name)
    proc, url, log = _start(base, runs)
    yield {"url": url, "runs": runs, "base": base}
    _stop(proc, log, runs)


def _launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"])


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _launch(p)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.browser_ = browser  # a second session (new context) for the cache-replay test
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
    box = pg.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    box.scroll_into_view_if_needed()
    box.click()
    pg.get_by_role("option", name=option, exact=True).click()


def _start_tiny_training(pg, name: str, epochs: int) -> None:
    """Fill the Train form for a tiny model and start it."""
    _choose(pg, "Hidden size", "16")
    _choose(pg, "Heads", "2")
    for label, value in (("Token layers", "1"), ("Epochs", str(epochs))):
        box = pg.get_by_label(label)
        box.fill(value)
        box.press("Tab")
    pg.get_by_label("Run name").fill(name)
    pg.get_by_role("button", name="Start training").click()


def test_train_short_run_to_done(server, page):
    page.goto(f"{server['url']}/train")
    _settle(page, "Start training")
    _start_tiny_training(page, "browser", epochs=1)
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


def _selected(pg, label: str) -> str:
    """The shown value of the sidebar selectbox `label` (its text, or its combobox input's value)."""
    box = pg.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text=label).first
    inputs = box.locator("input")
    values = [inputs.nth(i).input_value() for i in range(inputs.count())]
    return " ".join([box.inner_text(), *values, *(inputs.nth(i).get_attribute("aria-label") or ""
                                                 for i in range(inputs.count()))])


def _has_selected(pg, label: str, text: str, timeout: float = 20.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in _selected(pg, label):
            return True
        time.sleep(0.3)
    return False


def _nav(pg) -> str:
    nav = pg.locator('[data-testid="stSidebarNav"]')
    return nav.inner_text() if nav.count() else ""


def test_cold_deep_link_uses_the_app_navigation(app_env, page, tmp_path):
    """/attention as the very first request of a fresh server: the app's six pages, no helper files."""
    runs = tmp_path / "runs"
    shutil.copytree(app_env["run_dir"], runs / app_env["run_dir"].name)
    proc, url, log = _start(tmp_path, runs)
    pg = page.browser_.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    try:
        pg.goto(f"{url}/attention")
        _settle(pg, PAGES["attention"])
        nav = _nav(pg)
        for title in ("Overview", "Train", "Attention", "Calibration", "Compare", "Rollout"):
            assert title in nav
        for helper in ("shared", "charts", "rollout views", "app"):
            assert helper not in nav.lower().split("\n"), nav
        assert pg.locator("h1").filter(has_text="Attention").count() == 1
        pg.goto(f"{url}/shared")  # a helper module is not a page
        _settle(pg, PAGES[""])
        assert pg.locator('[data-testid="stException"]').count() == 0
    finally:
        pg.context.close()
        _stop(proc, log, runs)


def test_second_session_topm_frontier(server, page):
    """Another session (new browser context) toggling the frontier after the first measured it."""
    page.goto(f"{server['url']}/rollout")
    _settle(page, PAGES["rollout"])
    page.get_by_role("tab", name="Top-M frontier").click()
    page.get_by_text("Measure the frontier").first.click()
    page.get_by_text("Recommended M", exact=False).or_(page.get_by_text("No M fits", exact=False)).first.wait_for(
        timeout=120_000)
    other = page.browser_.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    try:
        other.goto(f"{server['url']}/rollout")
        _settle(other, PAGES["rollout"])
        other.get_by_role("tab", name="Top-M frontier").click()
        other.get_by_text("Measure the frontier").first.click()
        other.get_by_text("Recommended M", exact=False).or_(other.get_by_text("No M fits", exact=False)).first.wait_for(
            timeout=60_000)
        time.sleep(1.0)
        assert other.locator('[data-testid="stException"]').count() == 0
        assert "CacheReplayClosureError" not in other.content()
    finally:
        other.context.close()


def test_uploaded_file_trains_and_appears_on_every_page(server, page, tmp_path):
    """upload -> validate -> train on the Train page -> the run is selectable and shown on every page."""
    from cotrr_core.training.runs import registry
    from tests.conftest import make_step5_rows

    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps(r) + "\n" for r in make_step5_rows(60, 6, seed=3)))
    page.goto(f"{server['url']}/train")
    _settle(page, "Start training")
    page.get_by_text("Upload data", exact=False).first.click()
    page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(str(mine))
    page.get_by_text("kept 60 queries", exact=False).first.wait_for(timeout=30_000)
    _settle(page, "Start training")
    page.screenshot(path=str(OUT / "upload-selected.png"), full_page=True)
    assert _has_selected(page, "Dataset", "upload: mine.jsonl"), _selected(page, "Dataset")
    _start_tiny_training(page, "uploaded", epochs=2)
    page.get_by_text("uploaded: done", exact=False).first.wait_for(timeout=180_000)
    run_id = next(r.name for r in server["runs"].iterdir() if r.name.endswith("-uploaded"))
    rows = [r for r in registry(server["runs"]) if r["id"] == run_id]
    assert rows and rows[0]["state"] == "done" and rows[0]["dataset"]["name"] == "mine.jsonl"
    assert rows[0]["dataset"]["key"].startswith("mine.jsonl@")
    for path, text in PAGES.items():
        page.goto(f"{server['url']}/{path}?dataset=mine.jsonl")
        _settle(page, text)
        assert "No finished run" not in page.content(), path
        assert _has_selected(page, "Dataset", "upload: mine.jsonl"), (path, _selected(page, "Dataset"))
        assert _has_selected(page, "Run", run_id), (path, _selected(page, "Run"))
        assert page.locator('[data-testid="stException"]').count() == 0, path
        if not path:  # the Overview names the dataset and the run it shows
            caption = page.get_by_text("Dataset", exact=False).filter(has_text=run_id).first.inner_text()
            assert "mine.jsonl" in caption, caption
        page.screenshot(path=str(OUT / f"upload-{path or 'overview'}.png"), full_page=True)
    page.goto(f"{server['url']}/?dataset=mine.jsonl")  # a reload keeps the dataset and the run
    _settle(page, PAGES[""])
    assert "mine.jsonl" in page.url and run_id in page.url
    assert run_id in page.locator("body").inner_text()

    # ... and reranks a scoring-only file with that run, downloaded as CSV (one row per candidate)
    score_only = tmp_path / "to_rerank.jsonl"
    rows = [{k: v for k, v in r.items() if k != "compliance_score"} for r in make_step5_rows(5, 6, seed=9)]
    score_only.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page.goto(f"{server['url']}/compare?dataset=mine.jsonl")
    _settle(page, "Rerank your own file")
    page.locator('[data-testid="stMain"] input[type="file"]').set_input_files(str(score_only))
    page.get_by_role("button", name="Rerank", exact=True).click()
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download the reranked lists (CSV)").click(timeout=60_000)
    lines = Path(download.value.path()).read_text().splitlines()
    assert len(lines) == len(rows) + 1 and lines[0].startswith("query_id,candidate_id,original_rank,new_rank")
