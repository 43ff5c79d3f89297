"""The app's frame: public Streamlit API only, the sidebar drawn once, pages import cotrr_core.views only,
and a page the legacy pages/ router runs directly still gets the app's navigation and sidebar."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP, ROOT

PAGE_FILES = sorted((ROOT / "pages").glob("*.py"))
APP_FILES = [ROOT / "app.py", *sorted((ROOT / "pages").rglob("*.py"))]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    return names + [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]


def test_only_the_six_pages_are_top_level_files():
    """The legacy router lists every pages/*.py, so helpers live in pages/common/ (subfolders are not listed)."""
    from pages.common.frame import PAGES

    assert [p.relative_to(ROOT).as_posix() for p in PAGE_FILES] == sorted(path for path, _, _ in PAGES)


@pytest.mark.parametrize("path", APP_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_public_streamlit_and_views_only(path):
    for module in _imports(path):
        assert module in ("streamlit", "streamlit.testing.v1") or not module.startswith("streamlit"), module
        assert module == "cotrr_core.views" or not module.startswith("cotrr_core"), module
    assert "uses_pages_directory" not in path.read_text()


@pytest.mark.parametrize("path", PAGE_FILES, ids=lambda p: p.name)
def test_every_page_requires_the_frame_first(path):
    body = [n for n in ast.parse(path.read_text()).body
            if not isinstance(n, (ast.Import, ast.ImportFrom)) and not (isinstance(n, ast.Expr)
                                                                        and isinstance(n.value, ast.Constant))]
    first = body[0]
    assert isinstance(first, ast.Expr) and ast.unparse(first) == "require_frame()", ast.unparse(first)


def _sidebar_counts(at: AppTest) -> tuple[int, int]:
    titles = [t for t in at.sidebar.get("title") if t.value == "CoTRR-Stable"]
    return len(titles), len([s for s in at.sidebar.selectbox if s.key == "_dataset"])


def test_sidebar_drawn_once_through_app_and_through_the_legacy_router(app_env):
    """Each AppTest run rebuilds Streamlit's PagesManager, so a switched-to page is run by the legacy pages/
    router (as on a server's cold deep link): require_frame() draws the frame there, app.py everywhere else."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["dataset"] = "demo-small"
    at.run()
    assert not at.exception and _sidebar_counts(at) == (1, 1)
    at.switch_page("pages/train.py").run()
    assert not at.exception and _sidebar_counts(at) == (1, 1)
    assert [t.value for t in at.main.title] == ["Train a reranker"]
    at.run()  # a second run of the same page: still framed once (no marker left from the run before)
    assert not at.exception and _sidebar_counts(at) == (1, 1)
