"""The sidebar's upload box: a file is staged and validated in a child process, polled off the UI thread."""
from __future__ import annotations

import streamlit as st

from cotrr_core.views import DataError, start_upload, uploads_dir
from pages.common.cache import get_benchmark, split_fingerprint

# the extensions load_dataset infers a format from
UPLOAD_TYPES = ["jsonl", "json", "ndjson", "csv", "parquet", "pq", "txt", "letor", "svm", "svmlight"]


def upload_box() -> None:
    """File uploader; a new file starts its validation, whose progress and outcome are shown here."""
    up = st.file_uploader("Candidate file", type=UPLOAD_TYPES, key="upload")
    if up is not None and st.session_state.get("upload_seen") != (up.name, up.size):
        st.session_state["upload_seen"] = (up.name, up.size)
        _save_upload(up)
    if st.session_state.get("upload_job") is not None:
        _upload_progress()
    if st.session_state.get("upload_ok"):
        st.success(st.session_state["upload_ok"])


def _save_upload(upload) -> None:
    """Stage the upload and start validating it in a child process (cotrr_core.data.uploads); the file
    only replaces one of the same name once it loads, so a broken upload never costs a good file."""
    old = st.session_state.pop("upload_job", None)
    if old is not None:
        old.cancel()
    st.session_state.pop("upload_ok", None)
    st.session_state.pop("upload_error", None)
    try:
        st.session_state["upload_job"] = start_upload(upload.name, upload.getvalue(), uploads_dir())
    except DataError as exc:
        st.session_state["upload_error"] = str(exc)


@st.fragment(run_every=1.0)
def _upload_progress() -> None:
    """Poll the validating upload; when it is done, show its outcome on the whole app."""
    job = st.session_state.get("upload_job")
    if job is None:
        return
    result = job.poll()
    if result is None:
        share = min(job.elapsed / job.timeout_s, 1.0)
        st.progress(share, text=f"Validating {job.name}... {job.elapsed:.0f} s")
        return
    st.session_state.pop("upload_job", None)
    if result.ok:
        get_benchmark.clear()  # a file of the same name may have been replaced
        split_fingerprint.clear()
        st.session_state["upload_ok"] = result.report
        st.session_state["dataset"] = str(result.path)
    else:
        st.session_state["upload_error"] = result.error
    st.rerun(scope="app")
