"""Train: launch a run in a separate process, follow it live, compare runs."""
from pathlib import Path

import streamlit as st

from cotrr_core.views import (
    blend_parts,
    config_diff,
    dataset_key,
    dataset_label,
    default_dataset,
    fast_config,
    form_limits,
    is_alive,
    launch_training,
    list_runs,
    metrics_side_by_side,
    read_status,
    request_cancel,
    run_kind,
    runs_root,
    runs_table,
    validate_overrides,
)
from pages.common.charts import csv_button, history_charts
from pages.common.errors import shown_errors
from pages.common.frame import require_frame
from pages.common.progress import run_progress
from pages.common.upload import spec_editor

require_frame()
st.title("Train a reranker")
dataset = st.session_state.get("dataset") or default_dataset()
st.caption(f"Runs train in their own process (they survive reloads) on the sidebar dataset: "
           f"**{dataset_label(dataset)}**.")
spec_editor(dataset)  # an uploaded file: its feature spec, shown and chosen

st.subheader("Recommended recipe")
st.caption("What `python -m cotrr_core train` does and the benchmarks report: settings from the training split's size "
           "and feature kinds (the automatic recipe), then LightGBM and ridge peers fitted on the same splits and "
           "blended with the network when that wins on validation. Slower than the fast recipe.")
if st.button("Start the recommended recipe", type="primary", key="tf-recommended"):
    with shown_errors("Cannot start this run", stop=False):
        st.session_state["train_run"] = str(launch_training(dataset, {}, "recommended", fast=False))
        st.toast("Training started")

st.subheader("Fast recipe")
LIMITS = form_limits()  # what this machine trains in reasonable time
base = fast_config()  # the form starts from the quick first-launch config, and so does the run it starts
sizes = sorted({16, 32, 64, 128, 256, base.model.hidden})
st.caption(f"Fields not in the form come from the same fast config: patience {base.train.patience}, warm-up "
           f"{base.train.warmup_steps} steps, batch {base.train.batch_size}, calibrator {base.calibration.method}; "
           "the network alone (no blend with tree peers).")
# the form's values live in session_state under these keys, so they survive a page switch (widget state
# alone is dropped when the page is left); defaults: the fast config
FORM = {"tf-hidden": base.model.hidden, "tf-layers": base.model.layers,
        "tf-heads": base.model.heads if base.model.heads in (1, 2, 4, 8) else 8,
        "tf-context": base.model.list_context, "tf-epochs": base.train.epochs, "tf-lr": base.train.lr,
        "tf-listmle": base.loss.listmle_weight, "tf-focal": base.loss.focal_weight, "tf-device": "auto",
        "tf-name": "app"}
for k, v in FORM.items():
    st.session_state[k] = st.session_state.get(k, v)
with st.form("train-form"):
    c1, c2, c3, c4 = st.columns(4)
    hidden = c1.selectbox("Hidden size", sizes, key="tf-hidden")
    layers = c2.number_input("Token layers", 1, LIMITS["model.layers"], key="tf-layers")
    heads = c3.selectbox("Heads", [1, 2, 4, 8], key="tf-heads")
    list_context = c4.toggle("List context", key="tf-context", help="Candidates of a list attend to each other")
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", 1, LIMITS["train.epochs"], key="tf-epochs")
    lr = c2.number_input("Learning rate", 1e-5, 1e-1, key="tf-lr", format="%.5f")
    w_listmle = c3.number_input("ListMLE weight", 0.0, 10.0, key="tf-listmle", step=0.1)
    w_focal = c4.number_input("Focal weight", 0.0, 10.0, key="tf-focal", step=0.1)
    c1, c2 = st.columns(2)
    device = c1.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="tf-device")
    name = c2.text_input("Run name", key="tf-name")
    submitted = st.form_submit_button("Start training", type="primary")
    if st.form_submit_button("Reset to the fast config"):
        for k in FORM:
            del st.session_state[k]
        st.rerun()

if submitted:
    overrides = {"model.hidden": int(hidden), "model.layers": int(layers), "model.heads": int(heads),
                 "model.list_context": bool(list_context), "train.epochs": int(epochs), "train.lr": float(lr),
                 "loss.listmle_weight": float(w_listmle), "loss.focal_weight": float(w_focal),
                 "train.device": device}
    with shown_errors("Cannot start this run", stop=False):
        validate_overrides(overrides)
        st.session_state["train_run"] = str(launch_training(dataset, overrides, name or "app", fast=True))
        st.toast("Training started")

active = st.session_state.get("train_run")
if not active:  # follow a run started elsewhere (another tab, the first-launch default run)
    live_runs = [r for r in list_runs(runs_root())
                 if r.state in ("queued", "running") and is_alive(r.path)]
    active = str(live_runs[0].path) if live_runs else None
if active and Path(active).exists():
    st.subheader(f"Run {Path(active).name}")
    run_progress(Path(active))

    @st.fragment(run_every=2.0)
    def live(run_dir: Path) -> None:
        state = read_status(run_dir).get("state")
        if state in ("queued", "running") and is_alive(run_dir):
            if st.button("Cancel this run", key="cancel"):
                request_cancel(run_dir)
                st.toast("Cancellation requested: the run stops at its next step")
        history_charts([run_dir], "live")

    live(Path(active))

st.subheader("All runs")
runs = list_runs(runs_root())
table = runs_table(runs)
if table.empty:
    st.info("No runs yet.")
    st.stop()
st.dataframe(table.round(4), hide_index=True)
csv_button(table, "runs", "runs")

finished = [r for r in runs if r.state == "done"]
if finished:
    st.subheader("Learning curves of a run")
    one = st.selectbox("Run", [r.run_id for r in finished], key="curve-run")
    chosen = next(r for r in finished if r.run_id == one)
    st.markdown(f"Serves: **{run_kind(chosen.metrics)}**. Validation nDCG@10 of each part:")
    parts = blend_parts(chosen.metrics)
    if parts.empty:
        st.caption("This run was trained without the blend step (the network alone).")
    else:
        st.dataframe(parts.round(4), hide_index=True)
    history_charts([chosen.path], "one")

st.subheader("Compare two runs")
done = [r for r in runs if r.state == "done"]
if len(done) < 2:
    st.caption("Needs two finished runs.")
    st.stop()
ids = [r.run_id for r in done]
c1, c2 = st.columns(2)
a_id = c1.selectbox("Run A", ids, index=0, key="cmp-a")
b_id = c2.selectbox("Run B", ids, index=1, key="cmp-b")
a, b = (next(r for r in done if r.run_id == i) for i in (a_id, b_id))
if dataset_key(a.config.get("dataset", "")) != dataset_key(b.config.get("dataset", "")):
    st.warning("These runs were trained on different datasets: their test metrics are not comparable.")
diff = config_diff(a, b)
st.markdown("**Config differences**")
st.dataframe(diff if len(diff) else diff.assign(note="identical configs"), hide_index=True)
side = metrics_side_by_side([a, b])
st.markdown("**Test metrics**")
st.dataframe(side.round(4), hide_index=True)
csv_button(side, "run_comparison_metrics", "cmp-metrics")
history_charts([a.path, b.path], "cmp")
