"""The selections in the URL (?dataset=&run=&query=): read on a session's first run, kept in sync after."""
from __future__ import annotations

import streamlit as st

from cotrr_core.views import url_name


def read_url(opts: list[str]) -> None:
    """First run of a session: the URL's ?dataset=&run=&query= win (a shared link, a reload)."""
    if st.session_state.get("_url_read"):
        return
    st.session_state["_url_read"] = True
    params = st.query_params
    want = params.get("dataset")
    match = next((o for o in opts if url_name(o) == want), None) if want else None
    if match:
        st.session_state["dataset"] = match
    if params.get("run"):
        st.session_state["run_id"] = params["run"]
    if params.get("query"):
        st.session_state["url_query"] = params["query"]


def write_url(**extra: str | None) -> None:
    """Keep the dataset (and 'extra': run, query) in the URL so a view can be shared and survives a reload."""
    want = {"dataset": url_name(st.session_state["dataset"]), **extra}
    for key, value in want.items():
        if value is None:
            st.query_params.pop(key, None)
        elif st.query_params.get(key) != str(value):
            st.query_params[key] = str(value)
