"""Cached loads shared by the pages: benchmarks and runs (st.cache_resource), scores and measurements
(st.cache_data). Keys are plain strings plus the run's stamp, so a rewritten run is loaded again."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from cotrr_core.views import (
    Benchmark,
    Reranker,
    dataset_key,
    load_benchmark,
    load_run,
    rollout_inputs,
    run_stamp,
    score_split,
    stored_serving_latency,
    topm_inputs,
)


@st.cache_resource(show_spinner="Loading the benchmark (first time builds the demo data)...", max_entries=4)
def get_benchmark(name: str) -> Benchmark:
    return load_benchmark(name)


@st.cache_resource(show_spinner=False, max_entries=8)
def split_fingerprint(dataset: str, split: str) -> str:
    return get_benchmark(dataset).splits[split].fingerprint()


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def _load_run(run_dir: str, stamp: float):
    return load_run(run_dir, device="auto")


def get_run(run_dir: Path):
    """The run loaded for scoring (cached until its weights or calibrator are rewritten)."""
    return _load_run(str(run_dir), run_stamp(Path(run_dir)))


@st.cache_data(show_spinner="Scoring the test split (MC dropout)...", max_entries=16)
def split_scores(run_dir: str, stamp: float, dataset: str, split: str = "test", mc_samples: int = 10):
    return score_split(_load_run(run_dir, stamp), get_benchmark(dataset).splits[split], mc_samples)


@st.cache_resource(show_spinner="Loading the serving path (Reranker)...", max_entries=4)
def _reranker(run_dir: str, stamp: float):
    return Reranker.load(run_dir)


def get_reranker(run_dir: str, stamp: float):
    """The run's Reranker, or None when serving cannot load it (the caller says so)."""
    try:
        return _reranker(run_dir, stamp)
    except (ImportError, AttributeError):
        return None


@st.cache_data(show_spinner="Timing the serving path on every test list (once per run, then stored)...",
               max_entries=8)
def rollout_inputs_cached(run_dir: str, stamp: float, dataset: str):
    scores = split_scores(run_dir, stamp, dataset, "test", 10).scores
    return rollout_inputs(_load_run(run_dir, stamp), get_benchmark(dataset).splits["test"], scores,
                          reranker=get_reranker(run_dir, stamp), dataset_key=dataset_key(dataset))


@st.cache_data(show_spinner="Timing the serving path on every test list (once per run, then stored)...",
               max_entries=8)
def serving_latency_cached(run_dir: str, stamp: float, dataset: str):
    """The run's stored serving latency on this dataset's test lists (simulate.latency.Latency)."""
    return stored_serving_latency(get_reranker(run_dir, stamp), get_benchmark(dataset).splits["test"],
                                  dataset_key(dataset))


# module level and free of Streamlit calls: a cached function that draws (a progress bar) cannot be
# replayed in another session (CacheReplayClosureError)
@st.cache_data(show_spinner="Measuring the Top-M frontier: serving each test list at every M (latency once per "
                            "run, then stored)...", max_entries=8)
def topm_frontier_cached(run_dir: str, stamp: float, dataset: str):
    return topm_inputs(_load_run(run_dir, stamp), get_benchmark(dataset).splits["test"],
                       reranker=get_reranker(run_dir, stamp), dataset_key=dataset_key(dataset))
