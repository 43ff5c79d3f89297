"""CoTRR-Stable app: `streamlit run app.py`. Pages live in pages/; computations in cotrr_core."""
from __future__ import annotations

import streamlit as st

from pages._shared import sidebar

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
st.sidebar.title("CoTRR-Stable")
print("SIDEBAR RUN"); sidebar()
nav.run()
