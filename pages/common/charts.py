"""Charts, tables and candidate cards for the pages (display only); every chart has a CSV download."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from cotrr_core.views import history_frame, render_candidate_image


def csv_button(df: pd.DataFrame, name: str, key: str, label: str = "Download data (CSV)") -> None:
    st.download_button(label, df.to_csv(index=False).encode(), file_name=f"{name}.csv", mime="text/csv",
                       key=f"csv-{key}")


def chart(fig, df: pd.DataFrame, name: str, key: str) -> None:
    """A plotly chart with its data downloadable as CSV."""
    st.plotly_chart(fig, key=f"chart-{key}", width="stretch")
    csv_button(df, name, key)


def fmt_ci(row) -> str:
    return f"{row['change']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"


def history_charts(run_dirs: list[Path], key: str) -> None:
    """Loss and validation-metric curves (plotly) of one or more runs, from history.jsonl."""
    import plotly.express as px

    hist = history_frame(list(run_dirs))
    if hist.empty:
        st.caption("No finished epoch yet.")
        return
    # one panel per component, each on its own scale: ListMLE (~tens) and focal/RankNet (<1) share no axis,
    # and the total jumps when the RankNet warm-up hands over to ListMLE + focal
    loss_cols = [c for c in hist.columns if c.startswith("train_") and c != "train_temperature"]
    val_cols = [c for c in ("val_ndcg@10", "val_c@1", "val_mrr") if c in hist.columns]
    left, right = st.columns(2)
    with left:
        long = hist.melt(id_vars=["run_id", "epoch"], value_vars=loss_cols, var_name="loss", value_name="value")
        long["loss"] = long["loss"].str.removeprefix("train_")
        fig = px.line(long.dropna(subset=["value"]), x="epoch", y="value", color="run_id", facet_col="loss",
                      facet_col_wrap=2, markers=True, title="Training loss components (own scale each)")
        fig.update_yaxes(matches=None, showticklabels=True).for_each_annotation(
            lambda a: a.update(text=a.text.split("=")[-1]))
        chart(fig.update_layout(height=420), long, "train_losses", f"{key}-loss")
        st.caption("Epochs with only `ranknet` are the pairwise warm-up; `loss` is the weighted total "
                   "(ListMLE + focal afterwards), so it changes scale at the switch.")
    with right:
        long = hist.melt(id_vars=["run_id", "epoch"], value_vars=val_cols, var_name="metric", value_name="value")
        fig = px.line(long, x="epoch", y="value", color="metric", line_dash="run_id", markers=True,
                      title="Validation metrics (c@1: the top result complies)")
        chart(fig.update_layout(height=320), long, "val_metrics", f"{key}-val")


def heatmap(matrix, x, y, title: str, zmax: float | None = None):
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=matrix, x=x, y=y, colorscale="Viridis", zmin=0, zmax=zmax,
                               text=[[f"{v:.3f}" for v in row] for row in matrix], texttemplate="%{text}"
                               if len(x) <= 8 else None, hovertemplate="%{y} → %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, height=360, xaxis_title="attends to (key)", yaxis_title="from (query)",
                      yaxis_autorange="reversed")
    return fig


def matrix_frame(matrix, x, y) -> pd.DataFrame:
    return pd.DataFrame([{"from": y[i], "to": x[j], "weight": float(matrix[i][j])}
                         for i in range(len(y)) for j in range(len(x))])


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail(render_spec: str):
    """The demo candidate's image, rendered from its spec (None when the data has none or it is unusable:
    a user's file may carry anything in that column)."""
    import json

    if not isinstance(render_spec, str) or not render_spec:
        return None
    try:
        return render_candidate_image(json.loads(render_spec))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def candidate_cards(df: pd.DataFrame, top: int, side: str) -> None:
    """One row per candidate: thumbnail (when available), rank, movement, compliance, P ± uncertainty."""
    has_img = "render_spec" in df.columns
    for _, row in df.head(top).iterrows():
        c_img, c_txt = st.columns([1, 4]) if has_img else (None, st.container())
        if has_img and c_img is not None:
            img = thumbnail(row["render_spec"])
            if img is not None:
                c_img.image(img, width=56)
        rank = row["original_rank"] if side == "original" else row["reranked_rank"]
        move = "" if side == "original" else f" **{row['arrow']}**"
        mark = ":green-badge[relevant]" if row["relevant"] else ""
        unc = f" ± {row['p_uncertainty']:.3f}" if pd.notna(row.get("p_uncertainty")) else ""
        what = (f" · {row['cocktail']} ({row['candidate_kind']})"
                if "cocktail" in row and "candidate_kind" in row else "")
        c_txt.markdown(f"**#{rank}**{move} {mark} `{row['candidate_id']}`{what}  \n"
                       f"compliance {row['compliance']:.2f} · P(relevant) {row['p_relevant']:.3f}{unc}")
