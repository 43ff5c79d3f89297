"""Shared fixtures: a tiny synthetic Step5 dataset whose relevance depends on the features."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

VISUAL = ["subject_ratio", "object_area", "aspect_ratio", "brightness", "contrast", "saturation",
          "hue_variance", "edge_density"]
CONFLICT = ["color_delta_e", "temperature_conflict", "clarity_conflict", "garnish_mismatch", "overall_conflict_prob"]


def make_step5_rows(n_queries: int = 40, list_len: int = 8, dim: int = 4, seed: int = 0) -> list[dict]:
    """Candidates whose compliance falls with the conflict signals; first stage is noisy."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        text = rng.normal(size=dim)
        conflict = rng.uniform(0, 1, size=(list_len, 5))
        # a smooth map (no clipping) keeps labels distinct: ListMLE ties would be broken at random
        compliance = 1 / (1 + np.exp(-6 * (0.75 - conflict[:, 0] - 0.3 * conflict[:, 1])))
        first_stage = compliance + rng.normal(0, 1.0, list_len)
        for c in range(list_len):
            row = {"query_id": f"q{q:03d}", "candidate_id": f"q{q:03d}_c{c}", "query": f"query {q}",
                   "compliance_score": round(float(compliance[c]), 6), "first_stage_score": float(first_stage[c]),
                   "clip_img_features": rng.normal(size=dim).round(4).tolist(),
                   "clip_text_features": text.round(4).tolist()}
            row.update({k: float(v) for k, v in zip(VISUAL, rng.uniform(0, 1, 8))})
            row.update({k: float(v) for k, v in zip(CONFLICT, conflict[c])})
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "synthetic.jsonl", make_step5_rows())
