"""Issue 26 in a real Chromium: a file with only CLIP fields uploads, shows its inferred spec, the spec is
saved from the Train page, a run trains on it and every page shows it without an error."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.app.test_browser import CHROMIUM, OUT, PAGES, _has_selected, _launch, _settle, _start, _start_tiny_training, _stop
from tests.data.clip_file import write_clip_jsonl

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(), reason="no chromium")]


@pytest.fixture(scope="module")
def clip_server(app_env, tmp_path_factory):
    base = tmp_path_factory.mktemp("browser-schema")
    runs = base / "runs"
    shutil.copytree(app_env["run_dir"], runs / app_env["run_dir"].name)
    proc, url, log = _start(base, runs)
    yield {"url": url, "runs": runs, "base": base}
    _stop(proc, log, runs)


def test_clip_only_file_uploads_trains_and_shows_everywhere(clip_server, tmp_path):
    from playwright.sync_api import sync_playwright

    from cotrr_core.training.runs import registry

    clip = write_clip_jsonl(tmp_path / "clip.jsonl")
    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{clip_server['url']}/train")
        _settle(page, "Start training")
        page.get_by_text("Upload data", exact=False).first.click()
        page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(str(clip))
        page.get_by_text("kept 60 queries", exact=False).first.wait_for(timeout=60_000)
        page.get_by_text("Inferred feature spec", exact=False).first.wait_for(timeout=30_000)
        _settle(page, "Start training")
        assert _has_selected(page, "Dataset", "upload: clip.jsonl")
        page.get_by_text("Feature spec (inferred from the file)", exact=False).first.wait_for(timeout=30_000)
        page.get_by_role("button", name="Save this spec").click()
        page.get_by_text("Spec saved", exact=False).first.wait_for(timeout=60_000)
        saved = json.loads((clip_server["base"] / "uploads" / ".clip.jsonl.spec.json").read_text())
        assert [t["name"] for t in saved["tokens"]] == ["clip_img", "clip_text", "first_stage"]
        page.screenshot(path=str(OUT / "schema-spec-saved.png"), full_page=True)
        _start_tiny_training(page, "clipfile", epochs=2)
        page.get_by_text("clipfile: done", exact=False).first.wait_for(timeout=240_000)
        run_id = next(r.name for r in clip_server["runs"].iterdir() if r.name.endswith("-clipfile"))
        row = next(r for r in registry(clip_server["runs"]) if r["id"] == run_id)
        assert row["state"] == "done"
        assert json.loads((clip_server["runs"] / run_id / "config.json").read_text())["spec"]["tokens"] == \
            saved["tokens"]
        for path, text in PAGES.items():
            page.goto(f"{clip_server['url']}/{path}?dataset=clip.jsonl")
            _settle(page, text, timeout=120_000)
            assert page.locator('[data-testid="stException"]').count() == 0, path
            assert "No finished run" not in page.content(), path
            assert _has_selected(page, "Run", run_id), path
            page.screenshot(path=str(OUT / f"schema-{path or 'overview'}.png"), full_page=True)
        browser.close()
