"""Calibration: reliability before/after, metric table, calibrator choice, risk-coverage (MC dropout)."""
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from cotrr_core.views import METHODS, calibration_view, risk_view
from pages.common.charts import chart
from pages.common.context import context
from pages.common.errors import shown_errors
from pages.common.frame import require_frame

require_frame()
st.title("Calibration")
ctx = context()
c1, c2, c3 = st.columns(3)
stored = ctx.metrics.get("calibration", {}).get("method", "isotonic")
method = c1.selectbox("Calibrator (fitted on held-out cal data)", METHODS, index=METHODS.index(stored), key="cal-method")
n_bins = c2.slider("Bins", 5, 30, 15, key="cal-bins")
strategy = c3.selectbox("Binning", ["uniform", "quantile"], key="cal-strategy")


@st.cache_data(show_spinner="Fitting the calibrator and scoring the test split...")
def view(run_dir: str, stamp: float, dataset: str, method: str, n_bins: int, strategy: str):
    return calibration_view(ctx.run, ctx.bench, method, n_bins, strategy, with_risk=False)


@st.cache_data(show_spinner="MC-dropout samples on the test split...")
def risk(run_dir: str, stamp: float, dataset: str, method: str):
    return risk_view(ctx.run, ctx.bench, method)


with shown_errors("Could not compute calibration"):
    v = view(str(ctx.run_dir), ctx.stamp, ctx.dataset, method, n_bins, strategy)
st.caption(f"Fitted on {v.n_cal} calibration candidates, evaluated on {v.n_test} held-out test candidates."
           + (f" Note: {v.fit_note}" if v.fit_note else ""))

st.subheader("Reliability diagram")
fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line=dict(dash="dot", color="grey"))])
for stage, g in v.reliability.groupby("stage", sort=False):
    fig.add_trace(go.Scatter(
        x=g["mean_confidence"], y=g["observed_frequency"], mode="lines+markers", name=stage,
        error_y=dict(type="data", symmetric=False, array=g["ci_high"] - g["observed_frequency"],
                     arrayminus=g["observed_frequency"] - g["ci_low"]),
        customdata=g["count"], hovertemplate="conf %{x:.3f}, freq %{y:.3f}, n=%{customdata}<extra></extra>"))
fig.update_layout(height=420, xaxis_title="mean predicted P(relevant)", yaxis_title="observed frequency (Wilson 95%)")
chart(fig, v.reliability, "reliability", "rel")
st.dataframe(v.reliability.round(4), hide_index=True)

fig = px.bar(v.histogram, x="bin_lower", y="count", color="stage", barmode="group",
             title="Histogram of predicted probabilities (test)")
chart(fig.update_layout(height=300, xaxis_title="P(relevant) bin lower edge"), v.histogram, "confidence_hist", "hist")

st.subheader("Metrics on the test split (lower is better)")
st.caption("Temperature scaling only rescales the score (one parameter, monotone, through 0.5): when the "
           "uncalibrated probabilities are off in a way a single slope cannot fix (e.g. an offset), it can be "
           "worse than no calibration; Platt adds an offset and isotonic is free-form. The run keeps the "
           "calibrator its config names; this table is for comparison.")
table = v.table.round(4)
st.dataframe(table.style.highlight_min(subset=["ece", "adaptive_ece", "mce", "brier", "log_loss"], color="#d9f2d9"),
             hide_index=True)
long = table.melt(id_vars="calibrator", var_name="metric", value_name="value")
chart(px.bar(long, x="metric", y="value", color="calibrator", barmode="group").update_layout(height=320),
      table, "calibration_table", "table")

st.subheader("Risk-coverage: does MC-dropout uncertainty find the errors?")
with shown_errors("Could not compute risk-coverage"):
    curve, r = risk(str(ctx.run_dir), ctx.stamp, ctx.dataset, method)
recorded = ctx.metrics.get("calibration", {})
if recorded.get("method") == method and "uncertainty" in recorded:
    u = recorded["uncertainty"]
    st.caption(f"Recorded when the run finished (metrics.json, {u['mc_samples']} MC samples): AURC {u['aurc']:.4f} "
               f"(random {u['random_aurc']:.4f}, oracle {u['oracle_aurc']:.4f}). Below: recomputed with fresh "
               "dropout samples, so it varies slightly; it does not depend on the reliability bins.")
c = st.columns(3)
c[0].metric("AURC (MC dropout)", f"{r['aurc']:.4f}", f"{r['aurc'] - r['random_aurc']:+.4f} vs random",
            delta_color="inverse")
c[1].metric("random AURC", f"{r['random_aurc']:.4f}")
c[2].metric("oracle AURC", f"{r['oracle_aurc']:.4f}")
fig = px.line(curve, x="coverage", y="risk", title=f"Risk of |p - y| keeping the most certain first "
              f"({int(r['mc_samples'])} MC samples, {method})")
fig.add_hline(y=r["random_aurc"], line_dash="dot", annotation_text="random")
chart(fig.update_layout(height=340), curve, "risk_coverage", "risk")
