"""CoTRR-Stable app: `streamlit run app.py`. Pages live in pages/; computations in cotrr_core.

Each page draws the shared sidebar itself (pages._shared.sidebar), so a page also works when
it is run as the script (AppTest, which opens pages/*.py directly).
"""
from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="CoTRR-Stable", page_icon="🍸", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon="🏠", default=True),
    st.Page("pages/train.py", title="Train", icon="🏋️"),
    st.Page("pages/attention.py", title="Attention", icon="🔎"),
    st.Page("pages/calibration.py", title="Calibration", icon="📏"),
    st.Page("pages/compare.py", title="Compare", icon="↕️"),
    st.Page("pages/rollout.py", title="Rollout", icon="🚦"),
]

nav = st.navigation(PAGES)
nav.run()
