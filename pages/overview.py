"""Overview: what the system does, and the selected run's headline numbers."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cotrr_core.views import headline, serving_latency, timed_scoring
from pages._charts import chart, csv_button, fmt_ci
from pages._shared import context, get_reranker, shown_errors, sidebar

sidebar()
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
st.dataframe(table.assign(**{"change [95% CI]": table.apply(fmt_ci, axis=1)}), hide_index=True,
             column_config={"p_value": st.column_config.NumberColumn(format="%.4f")})
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
        with st.expander("Every calibrator (test split)"):
            cal_table = pd.DataFrame(tab).T.rename_axis("calibrator").reset_index()
            st.dataframe(cal_table, hide_index=True)
            csv_button(cal_table, "calibration_summary", "cal-summary")
    else:
        st.info("This run has no calibration section yet (see the Calibration page).")
with right:
    st.subheader("Latency at a glance")
    with shown_errors("Could not time the model", stop=False):
        reranker = get_reranker(ctx)
        if reranker is not None:
            ms = serving_latency(reranker, test)
            lat = pd.DataFrame({"query_id": test.query_ids[:len(ms)], "latency_ms": ms})
            st.metric("Serving latency p50 / p95", f"{np.median(ms):.2f} / {np.quantile(ms, 0.95):.2f} ms")
            st.caption(f"Reranker.rerank (cotrr_core.serving.reranker) on each of the {len(ms)} test lists, one request at a "
                       f"time on 1 thread ({reranker.health()['device']}, best of 3 per list).")
        else:
            t = timed_scoring(ctx.run, test)
            lat = pd.DataFrame([t])
            st.metric("Score time per query", f"{t['ms_per_query']:.2f} ms")
            st.caption(f"Not a serving latency: a timed score_data call on the test split ({t['queries']} lists, "
                       f"{t['candidates']} candidates, best of 3, 1 thread) divided by the number of queries.")
        csv_button(lat, "latency", "timing", "Download timings (CSV)")
