"""CoTRR-Stable app: `streamlit run app.py`. Pages live in pages/; computations in cotrr_core.

Each page draws the shared sidebar itself (pages._shared.sidebar), so a page also works when
it is run as the script (AppTest, which opens pages/*.py directly).
"""
from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="CoTRR-Stable", page_icon="🍸", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/attention.py", title="Attention", icon=":material/visibility:"),
    st.Page("pages/calibration.py", title="Calibration", icon=":material/straighten:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/rollout.py", title="Rollout", icon=":material/traffic:"),
]

nav = st.navigation(PAGES)
nav.run()
