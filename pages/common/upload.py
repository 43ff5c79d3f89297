"""The sidebar's upload box: a file is staged and validated in a child process, polled off the UI thread."""
from __future__ import annotations

import streamlit as st

from cotrr_core.views import (
    DataError,
    choose_spec,
    has_editable_spec,
    save_spec,
    spec_table,
    spec_view,
    start_upload,
    uploads_dir,
)
from pages.common.cache import get_benchmark, split_fingerprint
from pages.common.errors import shown_errors

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
        spec = st.session_state.get("upload_spec")
        if spec is not None:
            st.caption("Inferred feature spec (change it on the Train page):")
            st.dataframe(spec_table(spec), hide_index=True)


def _save_upload(upload) -> None:
    """Stage the upload and start validating it in a child process (cotrr_core.data.uploads); the file
    only replaces one of the same name once it loads, so a broken upload never costs a good file."""
    old = st.session_state.pop("upload_job", None)
    if old is not None:
        old.cancel()
    for key in ("upload_ok", "upload_error", "upload_spec"):
        st.session_state.pop(key, None)
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
        if has_editable_spec(str(result.path)):
            with shown_errors("Feature spec", stop=False):
                st.session_state["upload_spec"] = spec_view(str(result.path)).spec
    else:
        st.session_state["upload_error"] = result.error
    st.rerun(scope="app")


def spec_editor(dataset: str) -> None:
    """The dataset's feature spec (saved beside the file, else inferred) and a form to choose the features,
    the label column and the relevance threshold; the choice is validated and saved beside the file."""
    if not has_editable_spec(dataset):
        return
    with shown_errors("Feature spec", stop=False):
        view = spec_view(dataset)
        with st.expander(f"Feature spec ({'chosen' if view.saved else 'inferred from the file'})",
                         expanded=not view.saved):
            st.dataframe(view.table, hide_index=True)
            st.caption(f"Label: **{view.spec.label_field}**, relevant from {view.spec.relevance_threshold:g} "
                       f"(range {view.spec.label_min:g}..{view.spec.label_max:g}).")
            with st.form("spec-form"):
                features = st.multiselect("Feature fields", list(view.fields), default=view.chosen,
                                          format_func=lambda f: f"{f} ({view.fields[f]})")
                c1, c2 = st.columns(2)
                label = c1.selectbox("Label column", view.labels or [view.spec.label_field],
                                     index=view.labels.index(view.spec.label_field)
                                     if view.spec.label_field in view.labels else 0)
                threshold = c2.number_input("Relevance threshold", value=float(view.spec.relevance_threshold),
                                            format="%.3f")
                if st.form_submit_button("Save this spec"):
                    _save(dataset, features, label, threshold)


def _save(dataset: str, features: list[str], label: str, threshold: float) -> None:
    with shown_errors("Cannot use this spec", stop=False):
        report = save_spec(dataset, choose_spec(dataset, features, label, threshold))
        get_benchmark.clear()  # every page reads the file with the new spec
        split_fingerprint.clear()
        st.session_state.pop("upload_spec", None)
        st.success(f"Spec saved; training and every page now use it. {report}")
