"""Picking one query of a split: the URL's query first, else one with a relevant candidate."""
from __future__ import annotations

import streamlit as st

from pages.common.url import write_url


def default_query(data, key: str) -> None:
    """Set session_state[key] to the URL's query (by id), else keep a valid one, else the first query
    that has a relevant candidate (so metrics and ablations are defined)."""
    ids = [str(i) for i in data.query_ids]
    url = st.session_state.pop("url_query", None)
    if url in ids:
        st.session_state[key] = ids.index(url)
    elif st.session_state.get(key) not in range(data.num_queries):
        rel = data.relevant()
        st.session_state[key] = next((q for q in range(data.num_queries) if rel[data.rows(q)].any()), 0)


def query_picker(data, key: str, label: str = "Query") -> int:
    """Selectbox over the split's queries (text + id); returns the query index (also put in the URL)."""
    default_query(data, key)
    q = st.selectbox(label, list(range(data.num_queries)), key=key,
                     format_func=lambda q: f"{data.query_ids[q]} · {data.queries[q]} ({data.list_lengths[q]})")
    write_url(query=str(data.query_ids[q]))
    return q
