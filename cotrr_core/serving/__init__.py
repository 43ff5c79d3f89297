"""Serving: features (request dicts -> arrays), model_inputs (the served model and token arrays -> its Ragged
batch), fold (the optional fp32 fold of the standardisation), policy (hashed rollout and shadow decisions),
reranker (Reranker: top-M, calibrated, never failing; predict), results (what it returns, and the per-list
record), counters (thread-safe), deadline (scoring under a time budget), batch (rerank a whole file) and
export (ONNX)."""
