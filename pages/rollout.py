"""Rollout: A/B simulator and ramp, shadow mode, Top-M frontier, all on the run's measured outputs."""
import streamlit as st

from pages.common.cache import rollout_inputs_cached, serving_latency_cached, topm_frontier_cached
from pages.common.context import context
from pages.common.errors import shown_errors
from pages.common.frame import require_frame
from pages.common.rollout_sections import (
    ab_section,
    click_model_picker,
    observed_section,
    ramp_section,
    shadow_section,
    topm_section,
)

require_frame()
st.title("Safe rollout")
ctx = context()
with shown_errors("Could not measure the rollout inputs"):
    inp = rollout_inputs_cached(str(ctx.run_dir), ctx.stamp, ctx.dataset)
    lat = serving_latency_cached(str(ctx.run_dir), ctx.stamp, ctx.dataset)
st.caption(f"Served lists are the test split's {inp.mask.shape[0]} queries in each arm's order. Latency (treatment "
           f"p50 / p95 {lat.p50:.2f} / {lat.p95:.2f} ms; control = the same serving path with the model off) was "
           f"{lat.describe()}. Every section reuses this one measurement.")

ab_tab, shadow_tab, topm_tab, observed_tab = st.tabs(["A/B test & ramp", "Shadow mode", "Top-M frontier",
                                                      "Observed (served traffic)"])
with ab_tab:
    c1, c2, c3, c4 = st.columns(4)
    units = c1.number_input("Users (traffic units)", 100, 200_000, 5_000, step=500, key="ab-units")
    qpd = c2.number_input("Queries per user per day", 0.1, 20.0, 1.0, key="ab-qpd")
    days = c3.number_input("Days", 1, 60, 7, key="ab-days")
    share = c4.slider("Rollout share", 0.0, 1.0, 0.5, key="ab-share")
    seed = st.number_input("Seed", 0, 10_000, 0, key="ab-seed")
    common = dict(n_units=int(units), queries_per_unit_per_day=float(qpd), click_model=click_model_picker(),
                  relevance_threshold=inp.relevance_threshold, latency_control_ms=inp.latency_control_ms,
                  latency_treatment_ms=inp.latency_treatment_ms)
    ab_section(inp, common, float(share), int(days), int(seed))
    st.subheader("Staged ramp with guardrails")
    ramp_section(inp, common, int(seed))
with shadow_tab:
    st.caption("Shadow mode: the model scores live traffic and logs its would-be order; users still see the original.")
    shadow_section(inp)
with topm_tab:
    st.caption("Serving reranks only the first M candidates of the original order: quality is that served order "
               "on the test split, latency the same call timed.")
    if st.toggle("Measure the frontier (serves every test list at each M; timings once per run, then stored)",
                 key="topm-on"):
        with shown_errors("Could not measure the Top-M frontier"):
            quality, latency = topm_frontier_cached(str(ctx.run_dir), ctx.stamp, ctx.dataset)
        topm_section(quality, latency, "Reranker.rerank_batch with top_m=M")
with observed_tab:
    st.caption("What served traffic did, from the server's decision logs, with the simulation's statistics.")
    observed_section()
