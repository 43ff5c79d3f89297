"""Overview: what the system does, and the selected run's headline numbers."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cotrr_core.inspect import headline, timed_scoring
from pages._shared import chart, context, csv_button, fmt_ci, shown_errors

st.title("CoTRR-Stable")
st.markdown(
    "CoTRR-Stable reranks the candidate images a first-stage retriever (CLIP nearest neighbours) returns "
    "for a text query, with a small cross-attention transformer over each candidate's feature tokens "
    "and a calibrated P(relevant). It is trained, inspected and rolled out safely here: shadow mode, "
    "hashed A/B ramps with guardrails, and reranking only the top-M within a latency budget.")

ctx = context()
test = ctx.test
st.caption(f"Dataset **{ctx.bench.name}** ({ctx.bench.note}) · run **{ctx.run_dir.name}** · "
           f"test split: {test.num_queries} queries, {test.num_candidates} candidates")

with shown_errors("Could not evaluate the run"):
    scored = ctx.scores()
    table = headline(test, scored.scores)

st.subheader("Test metrics: reranked vs original order")
cols = st.columns(len(table))
for col, (_, row) in zip(cols, table.iterrows()):
    col.metric(row["metric"], f"{row['reranked']:.3f}", f"{row['change']:+.3f} vs original {row['original']:.3f}")
st.caption("Change with a paired bootstrap 95% CI over queries (queries without a relevant candidate excluded):")
st.dataframe(table.assign(**{"change [95% CI]": table.apply(fmt_ci, axis=1)}), hide_index=True)
fig = go.Figure([go.Bar(name=name, x=table["metric"], y=table[name]) for name in ("original", "reranked")])
fig.update_layout(barmode="group", height=320, yaxis_title="mean over test queries")
chart(fig, table, "headline_metrics", "headline")

left, right = st.columns(2)
with left:
    st.subheader("Calibration (test split)")
    section = ctx.metrics.get("calibration")
    if section:
        tab = section["table"]
        chosen = section["method"]
        st.metric("ECE after calibration", f"{tab[chosen]['ece']:.4f}",
                  f"{tab[chosen]['ece'] - tab['uncalibrated']['ece']:+.4f} vs uncalibrated "
                  f"{tab['uncalibrated']['ece']:.4f}", delta_color="inverse")
        st.caption(f"Calibrator **{chosen}** fitted on {section['cal_queries']} calibration queries, "
                   f"measured on {section['test_queries']} held-out test queries.")
    else:
        st.info("This run has no calibration section yet (see the Calibration page).")
with right:
    st.subheader("Latency at a glance")
    with shown_errors("Could not time the model", stop=False):
        lat = timed_scoring(ctx.run, test)
        st.metric("Score time per query", f"{lat['ms_per_query']:.2f} ms",
                  help="Timed score_data call on the whole test split (best of 3, one thread), "
                       "divided by the number of queries. Not a serving latency: see Rollout for per-list timings.")
        st.caption(f"score_data on the test split: {lat['seconds'] * 1000:.1f} ms for {lat['queries']} lists "
                   f"/ {lat['candidates']} candidates ({lat['us_per_candidate']:.1f} µs per candidate) on "
                   f"{lat['device']}, 1 thread.")
        csv_button(pd.DataFrame([lat]), "score_timing", "timing", "Download timing (CSV)")
