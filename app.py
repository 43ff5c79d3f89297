"""CoTRR-Stable app: `streamlit run app.py`. Pages live in pages/ (display only), their helpers in pages/common/,
every number they show comes from cotrr_core.views.

The frame (page config, navigation, the sidebar's dataset and run pickers) is drawn here, once per run,
before the selected page runs (pages.common.frame).
"""
from __future__ import annotations

from pages.common.frame import frame

nav = frame()  # page config, st.navigation over the pages, the sidebar: drawn here, once per run
nav.run()
