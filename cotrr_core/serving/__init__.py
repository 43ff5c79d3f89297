"""Serving: features (request dicts -> arrays), inputs (token arrays -> the model's Ragged batch), policy
(hashed rollout and shadow decisions), reranker (Reranker: top-M, calibrated, never failing), results (what it
returns), stats (thread-safe counters), batch (rerank a whole file) and export (ONNX)."""
