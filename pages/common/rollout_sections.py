"""Rollout page sections (display glue only; simulations are cotrr_core.simulate on measured inputs)."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from cotrr_core.views import (
    ClickModel,
    DataError,
    observed_view,
    recommend_m,
    shadow_analysis,
    simulate_ab,
    simulate_ramp,
    topm_tradeoff,
)
from pages.common.charts import chart, csv_button
from pages.common.errors import shown_errors


def click_model_picker() -> ClickModel:
    c1, c2 = st.columns(2)
    name = c1.selectbox("Click model", ["cascade", "pbm"], key="ab-click")
    if name == "cascade":
        patience = c2.slider("Cascade patience", 0.3, 1.0, 0.8, key="ab-patience",
                             help="P(looking at the next result after skipping one); 1 makes CTR order-blind")
        return ClickModel("cascade", patience=patience)
    return ClickModel("pbm", eta=c2.slider("PBM examination decay η", 0.0, 2.0, 1.0, key="ab-eta"))


_METRIC_NAMES = {"ctr": "CTR (any click)", "success": "success (click on a relevant result)", "ndcg@10": "nDCG@10"}


def lifts_table(lifts: dict) -> pd.DataFrame:
    rows = [{"metric": _METRIC_NAMES.get(metric, metric), "control": t["mean_a"], "treatment": t["mean_b"],
             "lift": t["diff"], "lift_rel": t["diff_rel"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
             "p_value": t["p_value"], "users": int(t["units"]), "queries compared": int(t["queries"])}
            for metric, t in lifts.items()]
    return pd.DataFrame(rows).round(4)


@st.cache_data(show_spinner="Simulating the A/B test...", max_entries=32)
def _ab(control, treatment, mask, **kwargs):
    return simulate_ab(control, treatment, mask, **kwargs)


def ab_section(inp, common: dict, share: float, days: int, seed: int) -> None:
    with shown_errors("A/B simulation failed", stop=False):
        res = _ab(inp.control_labels, inp.treatment_labels, inp.mask, share=share, days=days, seed=seed, **common)
        table = lifts_table(res.lifts)
        st.dataframe(table, hide_index=True, column_config={"p_value": st.column_config.NumberColumn(format="%.2e")})
        st.caption("Lifts compare the arms within each test query and average over the queries both arms saw; "
                   "CIs and p-values are two-way clustered by user (the randomisation unit) and query (the "
                   f"{inp.mask.shape[0]} test queries recur, so more users never shrink that part of the error).")
        csv_button(table, "ab_lifts", "ab-lifts")
        srm = res.srm
        c = st.columns(3)
        c[0].metric("SRM check", "MISMATCH" if srm["srm"] else "ok", f"χ² p = {srm['p_value']:.3g}",
                    delta_color="off")
        mde = res.mde.get("success", float("nan"))
        c[1].metric("MDE on success (α 0.05, power 0.8)", f"{mde:.1%}" if mde == mde else "n/a",
                    help="Smallest relative lift this simulated experiment would detect, from its clustered "
                         "standard error" if mde == mde else "Needs traffic in both arms (0 < share < 1)")
        c[2].metric("queries simulated", f"{len(res.log):,}")
        long = res.daily.melt(id_vars=["day", "arm"], value_vars=["ctr", "success_rate", "ndcg@10"])
        fig = px.line(long, x="day", y="value", color="arm", facet_col="variable", markers=True)
        fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
        chart(fig.update_yaxes(matches=None).update_layout(height=300), res.daily, "ab_daily", "ab-daily")
        for note in res.notes:
            st.caption(note)


def ramp_section(inp, common: dict, seed: int) -> None:
    c1, c2, c3 = st.columns(3)
    steps = c1.multiselect("Ramp plan (shares)", [0.01, 0.05, 0.1, 0.25, 0.5, 1.0],
                           default=[0.01, 0.05, 0.25, 0.5, 1.0], key="ramp-steps")
    metric = c2.selectbox("Guardrail metric", ["success", "ctr", "ndcg@10"], key="ramp-metric")
    lat = c3.number_input("p95 latency guardrail (ms)", 0.0, 10000.0, 50.0, key="ramp-lat")
    if not steps:
        st.caption("Pick at least one step.")
        return
    with shown_errors("Ramp simulation failed", stop=False):
        res = _ramp(inp.control_labels, inp.treatment_labels, inp.mask, steps=tuple(sorted(steps)),
                    guardrail_metric=metric, latency_guardrail_ms=lat or None, seed=seed, **common)
        (st.error if res.rolled_back else st.success)(f"{res.reason} · final share {res.final_share:.0%}")
        st.dataframe(res.table, hide_index=True)
        csv_button(res.table, "ramp", "ramp")


@st.cache_data(show_spinner="Simulating the ramp...", max_entries=32)
def _ramp(control, treatment, mask, **kwargs):
    return simulate_ramp(control, treatment, mask, **kwargs)


def shadow_section(inp) -> None:
    with shown_errors("Shadow analysis failed", stop=False):
        res = shadow_analysis(inp.original_order, inp.wouldbe_order, inp.control_labels, inp.mask,
                              relevance_threshold=inp.relevance_threshold, query_ids=inp.query_ids,
                              latency_original_ms=inp.latency_control_ms, latency_shadow_ms=inp.latency_treatment_ms)
        s = res.summary
        c = st.columns(4)
        c[0].metric("top-1 agreement", f"{s['top1_agreement']:.1%}")
        c[1].metric(f"overlap@{int(s['k'])}", f"{s['overlap@k']:.1%}")
        c[2].metric("Kendall τ (median)", f"{s['kendall_tau_median']:.3f}")
        if res.latency:
            c[3].metric("extra p95 if inline", f"{res.latency['extra_p95_ms']:.2f} ms")
        deltas = pd.DataFrame([{"metric": k, **v} for k, v in res.deltas.items()]).round(4)
        st.dataframe(deltas, hide_index=True, column_config={"p_value": st.column_config.NumberColumn(format="%.2e")})
        csv_button(deltas, "shadow_deltas", "shadow-deltas")
        fig = px.histogram(res.per_query, x="kendall_tau", nbins=30, title="Kendall τ between orders per query")
        chart(fig.update_layout(height=280), res.per_query, "shadow_per_query", "shadow")
        st.markdown("**Queries where the orders disagree most**")
        st.dataframe(res.most_disagreeing(10).drop(columns="query").round(3), hide_index=True)


def topm_section(quality: dict, latency: dict, source: str) -> None:
    price = st.number_input("Price per CPU-second ($, your own)", 0.0, 1.0, 0.0000133, format="%.7f",
                            key="topm-price", help="An assumption to edit: the default is an on-demand vCPU-hour "
                                                   "at about $0.048. Cost = mean latency x 1 core x this price.")
    with shown_errors("Top-M trade-off failed", stop=False):
        df = topm_tradeoff(quality, latency, price_per_cpu_second=price)
        budget = st.slider("Latency budget (p95 ms)", 0.05, max(1.0, float(df["p95_ms"].max()) * 1.5),
                           float(df["p95_ms"].median()), key="topm-budget")
        best = recommend_m(df, budget)
        (st.success(f"Recommended M = {best}: best nDCG@10 with p95 ≤ {budget:.2f} ms") if best is not None
         else st.warning(f"No M fits p95 ≤ {budget:.2f} ms: serve the original order"))
        fig = px.scatter(df, x="p95_ms", y="ndcg@10", text="M", color="pareto", title=f"Top-M frontier ({source})",
                         hover_data=["p50_ms", "c@1", "cost_per_1000_queries"])
        front = df[df["pareto"]].sort_values("p95_ms")
        fig.add_scatter(x=front["p95_ms"], y=front["ndcg@10"], mode="lines", name="Pareto frontier",
                        line=dict(dash="dash"))
        fig.add_vline(x=budget, line_dash="dot", annotation_text="budget")
        fig.update_traces(textposition="top center", selector=dict(mode="markers+text"))
        chart(fig.update_layout(height=380, xaxis_title="p95 latency per list (ms)"), df, "topm_frontier", "topm")
        st.dataframe(df.round(4), hide_index=True)


def observed_section() -> None:
    """Served traffic from `cotrr_core serve --log-dir`: the same statistics as the simulation above."""
    c1, c2 = st.columns(2)
    path = c1.text_input("Decision log (a decisions-*.jsonl file or its folder)", key="obs-path",
                         value=st.query_params.get("decisions", ""), help="also ?decisions=PATH in the page's URL")
    clicks = c2.text_input("Click log joined by request_id (optional JSONL)", key="obs-clicks")
    if not path:
        st.caption("Start the server with `python -m cotrr_core serve RUN --log-dir DIR` and give DIR here.")
        return
    with shown_errors("Could not read the decision log", stop=False):
        try:
            view = observed_view(path, clicks or None)
        except (DataError, OSError) as exc:
            st.error(str(exc))
            return
        c = st.columns(4)
        c[0].metric("control units", f"{int(view.arms.loc['control', 'units']):,}")
        c[1].metric("treatment units", f"{int(view.arms.loc['treatment', 'units']):,}")
        c[2].metric("SRM check", "MISMATCH" if view.srm["srm"] else "ok", f"χ² p = {view.srm['p_value']:.4g}",
                    delta_color="off", help=f"expected treatment share {view.expected_share:g} (from the policy)")
        c[3].metric("rejected requests", f"{view.rejected:,}")
        st.dataframe(view.arms, key="obs-arms")
        if view.shadow:
            s = view.shadow
            c = st.columns(3)
            c[0].metric("top-1 change rate", f"{s['top1_change_rate']:.4f}")
            c[1].metric("Kendall τ (mean)", f"{s['kendall_tau_mean']:.4f}")
            c[2].metric("requests with a would-be order", f"{s['requests']:,}")
        st.markdown("**Latency by arm (ms, the caller's whole wait in the server)**")
        st.dataframe(view.latency.round(3))
        fig = px.bar(view.fallbacks, x="since_start_s", y="requests", color="reason", title="Outcomes over time")
        chart(fig.update_layout(height=280), view.fallbacks, "observed_fallbacks", "obs-fallbacks")
        if view.lifts:
            st.dataframe(lifts_table(view.lifts), hide_index=True)
