"""Overview: what the system does, and the selected run's headline numbers."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cotrr_core.views import headline
from pages.common.cache import serving_latency_cached
from pages.common.charts import chart, csv_button, fmt_ci
from pages.common.context import context
from pages.common.errors import shown_errors
from pages.common.frame import require_frame

require_frame()
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
    table = headline(test, scored.scores, stored=ctx.metrics.get("test"))

st.subheader("Test metrics: reranked vs original order")
cols = st.columns(len(table))
for col, (_, row) in zip(cols, table.iterrows()):
    col.metric(row["metric"], f"{row['reranked']:.3f}", f"{row['change']:+.3f} vs original {row['original']:.3f}")
st.caption("The run's test metrics as recorded when it finished (metrics.json: the same numbers as the sidebar, "
           "the Train page and `python -m cotrr_core runs`), with a paired bootstrap 95% CI of the change over "
           "queries (queries without a relevant candidate excluded). C@1: the top result complies with the query.")
if not table["matches_stored"].all():
    st.warning("Re-scoring this run now gives different test metrics than it recorded when it finished (model or "
               "data code changed since): the CI column is computed from the re-scored lists.")
st.dataframe(table.drop(columns="matches_stored").assign(**{"change [95% CI]": table.apply(fmt_ci, axis=1)}).round(4),
             hide_index=True,
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
        stored = serving_latency_cached(str(ctx.run_dir), ctx.stamp, ctx.dataset)
        lat = pd.DataFrame({"query_id": test.query_ids[:len(stored.ms)], "latency_ms": stored.ms})
        st.metric("Serving latency p50 / p95", f"{stored.p50:.2f} / {stored.p95:.2f} ms")
        st.caption(f"Reranker (cotrr_core.serving.reranker) on each of the {len(stored.ms)} test lists, "
                   f"{stored.describe()}. The Rollout page uses the same measurement.")
        csv_button(lat, "latency", "timing", "Download timings (CSV)")
