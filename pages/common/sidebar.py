"""The sidebar, drawn once per run by the app's frame: dataset and run pickers, the upload box."""
from __future__ import annotations

import streamlit as st

from cotrr_core.views import dataset_label, dataset_options, default_dataset, done_runs, run_label
from pages.common.upload import upload_box
from pages.common.url import read_url, write_url


def sidebar() -> None:
    """Dataset and run pickers (session_state 'dataset', 'run_id'), and the upload box."""
    sb = st.sidebar
    sb.title("CoTRR-Stable")
    opts = dataset_options()
    read_url(opts)
    default = default_dataset()
    if st.session_state.get("dataset") not in opts and default in opts:
        st.session_state["dataset"] = default
    _picker(sb, "Dataset", opts, "dataset", format_func=dataset_label)
    with sb.expander("Upload data (Step5 JSONL / CSV / Parquet, LETOR)"):
        upload_box()
    if st.session_state.get("upload_error"):
        sb.error(f"Upload rejected: {st.session_state['upload_error']}")
    runs = done_runs(st.session_state["dataset"])
    if runs:
        labels = {r.run_id: run_label(r) for r in runs}
        _picker(sb, "Run", list(labels), "run_id", format_func=labels.get,
                help="Finished runs on this dataset, best test nDCG@10 first")
    else:
        sb.caption("No finished run on this dataset yet.")
    write_url(run=st.session_state.get("run_id") if runs else None)


def _persist(widget_key: str, state_key: str) -> None:
    st.session_state[state_key] = st.session_state[widget_key]


def _picker(container, label: str, options: list, state_key: str, **kwargs):
    """A selectbox whose value survives page switches (its widget state may not: the sidebar is drawn inside
    the page on a legacy-routed run, see pages.common.frame; 'state_key' always does)."""
    if st.session_state.get(state_key) not in options:
        st.session_state[state_key] = options[0]
    widget_key = f"_{state_key}"
    st.session_state[widget_key] = st.session_state[state_key]
    return container.selectbox(label, options, key=widget_key, on_change=_persist, args=(widget_key, state_key),
                               **kwargs)
