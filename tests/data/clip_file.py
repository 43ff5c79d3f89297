"""A small Step5 file with only CLIP-style fields (issue 26's minimal schema), for tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FIELDS = ("query_id", "candidate_id", "query", "compliance_score", "first_stage_rank", "first_stage_score",
          "clip_img_features", "clip_text_features")


def clip_rows(queries: int = 60, candidates: int = 8, dim: int = 16, seed: int = 0) -> list[dict]:
    """One relevant candidate per list (label 1.0, the rest below 0.5); the text vector is its image's
    vector plus noise; the first stage orders by a noisy cosine."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(queries):
        imgs = rng.normal(size=(candidates, dim))
        imgs /= np.linalg.norm(imgs, axis=1, keepdims=True)
        hit = int(rng.integers(candidates))
        text = imgs[hit] + 0.8 * rng.normal(size=dim) / np.sqrt(dim)
        text /= np.linalg.norm(text)
        score = imgs @ text + 0.3 * rng.normal(size=candidates)
        rank = np.empty(candidates, dtype=int)
        rank[np.argsort(-score)] = np.arange(1, candidates + 1)
        for c in range(candidates):
            rows.append({"query_id": f"q{q}", "candidate_id": f"q{q}-c{c}", "query": f"caption {q}",
                         "compliance_score": 1.0 if c == hit else round(float(rng.uniform(0, 0.5)), 3),
                         "first_stage_rank": int(rank[c]), "first_stage_score": round(float(score[c]), 6),
                         "clip_img_features": [round(float(x), 6) for x in imgs[c]],
                         "clip_text_features": [round(float(x), 6) for x in text]})
    return rows


def write_clip_jsonl(path: str | Path, **kwargs) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in clip_rows(**kwargs)))
    return path
