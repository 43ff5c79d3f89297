"""Rollout: A/B simulator and ramp, shadow mode, Top-M frontier, all on the run's measured outputs."""
import streamlit as st

from cotrr_core.views import topm_inputs
from pages._rollout_views import ab_section, click_model_picker, ramp_section, shadow_section, topm_section
from pages._shared import context, get_reranker, rollout_inputs_cached, shown_errors, sidebar

sidebar()
st.title("Safe rollout")
ctx = context()
with shown_errors("Could not measure the rollout inputs"):
    inp = rollout_inputs_cached(str(ctx.run_dir), ctx.stamp, ctx.dataset)
st.caption(f"Served lists are the test split's {inp.mask.shape[0]} queries in each arm's order; control latency is "
           f"measured returning the first-stage order, treatment latency timing "
           f"{'Reranker.rerank (cotrr_core.serving.reranker)' if get_reranker(ctx) else 'the model path'} per list.")

ab_tab, shadow_tab, topm_tab = st.tabs(["A/B test & ramp", "Shadow mode", "Top-M frontier"])
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
    st.caption("Rerank only the first M candidates of the original order; quality measured on test, latency timed.")
    if st.toggle("Measure the frontier (times every test list for each M)", key="topm-on"):
        bar = st.progress(0.0, text="timing")

        @st.cache_data(show_spinner=False)
        def frontier(run_dir: str, stamp: float, dataset: str):
            return topm_inputs(ctx.run, ctx.test, scores=ctx.scores().scores, reranker=get_reranker(ctx),
                               on_progress=lambda p, m: bar.progress(p, text=m))

        with shown_errors("Could not measure the Top-M frontier"):
            quality, latency = frontier(str(ctx.run_dir), ctx.stamp, ctx.dataset)
        bar.empty()
        topm_section(quality, latency, "Reranker.rerank timings" if get_reranker(ctx) else "model timings")
