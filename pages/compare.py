"""Compare: original vs reranked list of a query, per-query metrics, wins/ties/losses over queries."""
import plotly.express as px
import streamlit as st

from cotrr_core.views import find_queries, query_lists, query_metrics, rerank_upload, wins_ties_losses
from pages.common.charts import candidate_cards, chart, csv_button
from pages.common.context import context
from pages.common.errors import shown_errors
from pages.common.frame import require_frame
from pages.common.queries import default_query
from pages.common.url import write_url

require_frame()
st.title("Compare original vs reranked")
ctx = context()
test = ctx.test
with shown_errors("Could not score the test split"):
    scored = ctx.scores()
    counts, per_query = wins_ties_losses(test, scored.scores)


def pick(q: int) -> None:
    st.session_state["cmp-query"] = int(q)
    st.session_state["cmp-search"] = ""


c1, c2 = st.columns([2, 1])
text = c1.text_input("Search queries (text or id)", key="cmp-search")
order = c2.selectbox("Sort by", ["dataset order", "largest gain", "largest loss"], key="cmp-sort")
found = set(find_queries(test, text).tolist())
ranked = per_query[per_query["query_index"].isin(found)]
if order == "largest gain":
    ranked = ranked.sort_values("change", ascending=False, kind="stable")
elif order == "largest loss":
    ranked = ranked.sort_values("change", ascending=True, kind="stable")
else:
    ranked = ranked.sort_values("query_index")
options = ranked["query_index"].astype(int).tolist()
if not options:
    st.warning(f"No query matches {text!r}.")
    st.stop()
default_query(test, "cmp-query")  # the URL's query, else one with a relevant candidate
if st.session_state.get("cmp-query") not in options or st.session_state.get("cmp-last-sort", order) != order:
    st.session_state["cmp-query"] = options[0]  # a new sort order opens its first query
st.session_state["cmp-last-sort"] = order
delta = dict(zip(per_query["query_index"], per_query["change"]))
q = st.selectbox("Query", options, key="cmp-query",
                 format_func=lambda i: f"{test.query_ids[i]} · {test.queries[i]} (ΔnDCG@10 {delta[i]:+.3f})")

write_url(query=str(test.query_ids[q]))
original, reranked = query_lists(test, q, scored)
st.markdown(f"### “{test.queries[q]}”")
n = int(test.list_lengths[q])
top = n if n <= 3 else st.slider("Show top", 3, n, min(10, n), key="cmp-top")
st.caption("Each card: P = calibrated P(relevant) ± its uncertainty (the spread of that probability over "
           f"{scored.mc_samples} MC-dropout samples); compliance is the label, relevant means ≥ "
           f"{test.spec.relevance_threshold}.")
left, right = st.columns(2)
with left:
    st.markdown("**Original order (first stage)**")
    candidate_cards(original, top, "original")
with right:
    st.markdown("**Reranked by CoTRR** (arrows: rank movement)")
    candidate_cards(reranked, top, "reranked")
csv_button(reranked.drop(columns=["render_spec"], errors="ignore"), f"query_{test.query_ids[q]}", "lists",
           "Download both orders (CSV)")

st.subheader("This query's metrics")
qm = query_metrics(test, q, scored.scores)
fig = px.bar(qm.melt(id_vars="metric", value_vars=["original", "reranked"], var_name="order"), x="metric",
             y="value", color="order", barmode="group")
chart(fig.update_layout(height=300), qm, f"query_metrics_{test.query_ids[q]}", "qm")

st.subheader("Over all test queries (nDCG@10)")
c = st.columns(4)
c[0].metric("wins", counts["win"])
c[1].metric("ties", counts["tie"], help=f"{counts['no_relevant']} queries have no relevant candidate (0 in both)")
c[2].metric("losses", counts["loss"])
c[3].metric("queries", counts["queries"])
fig = px.histogram(per_query, x="change", color="outcome", nbins=30, title="ΔnDCG@10 per query (reranked − original)",
                   color_discrete_map={"win": "#2e7d32", "tie": "#9e9e9e", "loss": "#c62828"})
chart(fig.update_layout(height=300), per_query, "per_query_ndcg", "wtl")
st.markdown("**Worst regressions** (click to open)")
for _, row in per_query[per_query["outcome"] == "loss"].head(5).iterrows():
    st.button(f"{row['query_id']} · {row['query']} · ΔnDCG@10 {row['change']:+.3f}",
              key=f"reg-{row['query_index']}", on_click=pick, args=(row["query_index"],))

st.subheader("Rerank your own file with this run")
st.caption("A scoring-only file (Step5 JSONL / CSV / Parquet, or LETOR) with the run's feature fields: every list is "
           "reranked (top M of its original order) and you get one row per candidate back.")
with st.form("rerank-file"):
    upload = st.file_uploader("Candidates to rerank", type=["jsonl", "json", "csv", "parquet", "txt"], key="rr-file")
    top_m = st.number_input("Top M", 1, 1000, int(ctx.run.config.serve.top_m))
    go = st.form_submit_button("Rerank")
if go and upload is not None:
    import tempfile
    from pathlib import Path

    # read and scored in a child process capped in memory and time, like an upload
    with tempfile.TemporaryDirectory() as tmp, shown_errors("Could not rerank the file", stop=False):
        summary = rerank_upload(ctx.run_dir, upload.name, upload.getvalue(), tmp, top_m=int(top_m), mc_samples=0)
        st.success(f"Reranked {summary['lists']} lists / {summary['candidates']} candidates "
                   f"({summary['reranked']} reranked; fallbacks: {summary['fallbacks'] or 'none'}).")
        st.download_button("Download the reranked lists (CSV)", (Path(tmp) / "reranked.csv").read_bytes(),
                           file_name=f"{Path(upload.name).stem[:100]}.reranked.csv", mime="text/csv",
                           key="rr-download")
