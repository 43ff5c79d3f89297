"""The app's frame: its pages, the navigation over them and the sidebar, drawn once per run.

app.py calls frame() and runs the page it returns. Each page's first line is require_frame(), a no-op
after app.py; it draws the frame itself only when Streamlit's legacy pages/ router ran the page directly.
"""
from __future__ import annotations

import streamlit as st

from pages.common.sidebar import sidebar

# (file, title, icon): the first is the default page
PAGES = [
    ("pages/overview.py", "Overview", ":material/home:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/attention.py", "Attention", ":material/visibility:"),
    ("pages/calibration.py", "Calibration", ":material/straighten:"),
    ("pages/compare.py", "Compare", ":material/compare_arrows:"),
    ("pages/rollout.py", "Rollout", ":material/traffic:"),
]
_FRAMED = "_framed_this_run"


def frame():
    """app.py: page config, st.navigation over PAGES and the sidebar; returns the page to run (StreamlitPage)."""
    nav = _draw()
    st.session_state[_FRAMED] = True  # consumed by the page's require_frame() in this same run
    return nav


def _draw():
    st.set_page_config(page_title="CoTRR-Stable", page_icon="🍸", layout="wide")
    nav = st.navigation([st.Page(path, title=title, icon=icon, default=i == 0)
                         for i, (path, title, icon) in enumerate(PAGES)])
    sidebar()
    return nav


def require_frame() -> None:
    """Draw the frame unless app.py did in this run.

    Streamlit routes a run through app.py only once some session has called st.navigation: until then
    a pages/ folder next to the entrypoint turns on the legacy router, which runs pages/<name>.py itself
    (streamlit/runtime/pages_manager.py, PagesManager.__init__, and script_runner.py, _mpa_v1). That is the
    first request of a fresh server when it names a page (a cold deep link such as /compare?dataset=..),
    and every AppTest run, which rebuilds its PagesManager per run. The st.navigation call in frame() ends
    the legacy mode for the whole server ("As soon as any session of your app executes the st.navigation
    command, your app will ignore the pages/ directory (across all sessions)", st.navigation's docs), and
    resolves the same page by its URL path, so the page can go on in this run. Helpers live in
    pages/common/: the legacy router never lists files in subfolders of pages/.
    """
    if not st.session_state.pop(_FRAMED, False):
        _draw()
