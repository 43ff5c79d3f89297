"""The selected dataset and run as one object a page reads (Context), or a waiting / empty state."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from cotrr_core.views import Benchmark, dataset_label, default_dataset, done_runs, run_metrics, run_stamp
from pages.common.cache import get_benchmark, get_run, split_fingerprint, split_scores
from pages.common.errors import shown_errors
from pages.common.progress import wait_for_default_run


@dataclass
class Context:
    dataset: str
    bench: Benchmark
    run_dir: Path
    stamp: float

    @property
    def run(self):
        return get_run(self.run_dir)

    @property
    def test(self):
        return self.bench.splits["test"]

    @property
    def metrics(self) -> dict:
        return run_metrics(self.run_dir)

    def scores(self, mc_samples: int = 10):
        return split_scores(str(self.run_dir), self.stamp, self.dataset, "test", mc_samples)


def context() -> Context:
    """Selected dataset + run (session_state 'dataset', 'run_id'), or a waiting/empty state that stops the page."""
    dataset = st.session_state.get("dataset") or default_dataset()
    if st.session_state.get("upload_error"):
        st.error(f"Upload rejected: {st.session_state['upload_error']}")
    runs = done_runs(dataset)
    run = next((r for r in runs if r.run_id == st.session_state.get("run_id")), runs[0] if runs else None)
    if run is None:  # before loading any data: the training process should start at once
        if dataset == default_dataset():
            wait_for_default_run()
        else:
            st.info("No finished run on this dataset yet: train one on the Train page.")
            st.page_link("pages/train.py", label="Go to Train")
        st.stop()
    with shown_errors("Could not load the dataset"):
        bench = get_benchmark(dataset)
    with shown_errors("Could not load the run"):
        loaded = get_run(run.path)
    trained_on = loaded.meta.get("data_fingerprint", {}).get("test")
    if trained_on and trained_on != split_fingerprint(dataset, "test"):
        st.warning(f"The {dataset_label(dataset)} test split has changed since run {run.run_id} was trained "
                   "(data fingerprint differs): its numbers below are on the current data.")
    return Context(dataset, bench, run.path, run_stamp(run.path))
