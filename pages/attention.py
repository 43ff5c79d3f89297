"""Attention: token-to-token maps per layer/head, list context, dataset view, token ablation."""
import plotly.express as px
import streamlit as st

from cotrr_core.views import attention_by_relevance, attention_maps, token_ablation
from pages.common.charts import chart, csv_button, heatmap, matrix_frame
from pages.common.context import context
from pages.common.errors import shown_errors
from pages.common.frame import require_frame
from pages.common.queries import query_picker

require_frame()
st.title("Attention")
st.warning("Attention is not an explanation: weights show where information was routed, not why the model "
           "scored a candidate. Use the ablation below to see what changing an input actually does.")
ctx = context()
run, test = ctx.run, ctx.test

q = query_picker(test, "att-query")
with shown_errors("Could not compute attention"):
    maps = attention_maps(run, test, q)
names = maps.token_names
c1, c2, c3 = st.columns(3)
cand = c1.selectbox("Candidate", range(len(maps.candidate_ids)), key="att-cand",
                    format_func=lambda i: f"#{i + 1} {maps.candidate_ids[i]}"
                                          f"{' (relevant)' if maps.relevant[i] else ''} · score {maps.scores[i]:.3f}")
layer = c2.selectbox("Layer", ["average"] + list(range(maps.layers)), key="att-layer")
head = c3.selectbox("Head", ["average"] + list(range(maps.heads)), key="att-head")
L = None if layer == "average" else int(layer)
H = None if head == "average" else int(head)
m = maps.token_matrix(cand, L, H)
chart(heatmap(m, names, names, f"Token attention · layer {layer} · head {head}"), matrix_frame(m, names, names),
      "token_attention", "tok")

with st.expander("Every layer and head of this candidate (one colour scale: 0 to 1)"):
    for li in range(maps.layers):
        cols = st.columns(min(maps.heads, 4))
        for h in range(maps.heads):
            with cols[h % len(cols)]:
                mh = maps.token_matrix(cand, li, h)
                st.plotly_chart(heatmap(mh, names, names, f"L{li} H{h}", zmax=1.0)
                                .update_layout(height=300).update_traces(showscale=h == 0),
                                key=f"grid-{li}-{h}")
    csv_button(maps.token_frame(cand), "token_attention_all", "grid", "Download head-average (CSV)")

st.subheader("List context: candidates attending to candidates")
if maps.list is None:
    st.caption("This run has no list-context block (model.list_context off).")
else:
    lh = st.selectbox("List-context head", ["average"] + list(range(maps.list.shape[1])), key="att-lhead")
    lm = maps.list_matrix(0, None if lh == "average" else int(lh))
    labels = [f"{i + 1}{'*' if r else ''}" for i, r in enumerate(maps.relevant)]
    chart(heatmap(lm, labels, labels, "List attention (original rank; * relevant)"), matrix_frame(lm, labels, labels),
          "list_attention", "list")

st.subheader("Dataset view: attention received per token, relevant vs non-relevant (test split)")
if st.toggle("Compute over the whole test split", key="att-dataset"):
    bar = st.progress(0.0, text="running the model on every test list")
    with shown_errors("Could not compute the dataset view"):
        ds = attention_by_relevance(run, test, on_progress=lambda p, msg: bar.progress(p, text=msg))
    bar.empty()
    fig = px.bar(ds.received, x="token", y="mean_attention", color="group", barmode="group", error_y="std",
                 title="Mean attention received (" + ", ".join(f"{k}: {v:,}" for k, v in ds.candidates.items()) + " candidates)")
    chart(fig, ds.received, "attention_by_relevance", "ds")

st.subheader("Token ablation")
token = st.selectbox("Drop feature group (set to its training mean; the derived similarity token to its list's mean)",
                     names, key="abl-token")
with shown_errors("Could not run the ablation"):
    abl = token_ablation(run, test, q, token)
s = abl.summary
c = st.columns(4)
c[0].metric("mean |score change|", f"{s['mean_abs_score_change']:.4f}")
c[1].metric("Kendall τ (full vs ablated order)", f"{s['kendall_tau']:.3f}")
c[2].metric("candidates moved", f"{s['candidates_moved']:.0f}")
c[3].metric("nDCG@10 ablated", f"{s['ndcg@10_ablated']:.3f}", f"{s['ndcg@10_ablated'] - s['ndcg@10_full']:+.3f}")
fig = px.bar(abl.table.sort_values("rank_full"), x="candidate_id", y="score_change", color="relevant",
             title=f"Score change when '{token}' is dropped (candidates in full-model order)")
chart(fig, abl.table, f"ablation_{token}", "abl")
st.dataframe(abl.table, hide_index=True)
