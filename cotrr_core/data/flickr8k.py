"""The flickr8k-dev benchmark: a real CLIP first stage over a real photo gallery, as Step5 records.

Reads `flickr8k_clip_dev/` from the shared datasets folder (never copied into the project):
CLIP ViT-B/32 embeddings of 1000 photos and one caption each. Each caption is a query; its first
stage is the top K photos of the whole gallery by cosine; its own photo is the one relevant
candidate (compliance_score 1.0, all others 0.0). Ids are kept as given: the caption id
(`file.jpg#0`) and the photo's file name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cotrr_core.data.dataset import RankingData, build_ranking_data
from cotrr_core.data.errors import DataError
from cotrr_core.data.spec import FeatureSpec

__all__ = ["flickr8k_frame", "flickr8k_data", "flickr8k_spec", "write_flickr8k_jsonl", "FLICKR8K_DIR", "TOP_K"]

FLICKR8K_DIR = "flickr8k_clip_dev"
TOP_K = 20


def _read(root: Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    for name in ("image_embs.npy", "text_embs.npy", "meta.tsv"):
        if not (root / name).exists():
            raise DataError(str(root / name), None, None, "file not found (flickr8k-dev needs the shared dataset)")
    images = np.load(root / "image_embs.npy", allow_pickle=False)
    texts = np.load(root / "text_embs.npy", allow_pickle=False)
    meta = pd.read_csv(root / "meta.tsv", sep="\t", dtype=str, keep_default_na=False, quoting=3)
    if not (len(images) == len(texts) == len(meta)):
        raise DataError(str(root), None, None, f"row counts differ: {len(images)} images, {len(texts)} captions, "
                                               f"{len(meta)} meta rows")
    return images.astype(np.float32), texts.astype(np.float32), meta


def flickr8k_frame(root: str | Path, top_k: int = TOP_K) -> pd.DataFrame:
    """One Step5 row per (caption, candidate photo): the caption's top `top_k` photos by cosine,
    in first-stage order, with first_stage_rank / first_stage_score and the raw embeddings."""
    images, texts, meta = _read(Path(root))
    unit_i = images / np.linalg.norm(images, axis=1, keepdims=True)
    unit_t = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    cos = unit_t.astype(np.float64) @ unit_i.T.astype(np.float64)  # [queries, gallery]
    top = np.argsort(-cos, axis=1, kind="stable")[:, :top_k]
    q = np.repeat(np.arange(len(texts)), top_k)
    c = top.ravel()
    return pd.DataFrame({
        "query_id": meta["caption_id"].to_numpy()[q],
        "candidate_id": meta["image"].to_numpy()[c],
        "query": meta["caption"].to_numpy()[q],
        "compliance_score": (q == c).astype(float),
        "first_stage_rank": np.tile(np.arange(1, top_k + 1), len(texts)),
        "first_stage_score": np.take_along_axis(cos, top, axis=1).ravel(),
        "clip_img_features": list(images[c]),
        "clip_text_features": list(texts[q]),
    })


def flickr8k_spec(dim: int = 512) -> FeatureSpec:
    """What a user's file of this kind gets: the two CLIP vectors (text list-constant), the first-stage
    score as a token, and the vector pair the model compares."""
    return FeatureSpec.from_dict({
        "name": "flickr8k-dev", "format": "step5", "label_field": "compliance_score", "relevance_threshold": 0.8,
        "notes": "CLIP ViT-B/32 image and caption embeddings, first stage = cosine top-20",
        "tokens": [{"name": "clip_img", "fields": ["clip_img_features"], "dim": dim},
                   {"name": "clip_text", "fields": ["clip_text_features"], "dim": dim, "list_constant": True},
                   {"name": "first_stage", "fields": ["first_stage_score"]}],
        "similarity": {"query": "clip_text", "candidate": "clip_img"}})


def flickr8k_data(root: str | Path, top_k: int = TOP_K) -> RankingData:
    """The benchmark's lists, validated like any Step5 file."""
    frame = flickr8k_frame(root, top_k)
    frame["_line"] = np.arange(1, len(frame) + 1)
    return build_ranking_data(frame, flickr8k_spec(), f"{root} (flickr8k-dev)")


def write_flickr8k_jsonl(root: str | Path, out: str | Path, top_k: int = TOP_K) -> Path:
    """The benchmark as one Step5 JSONL file (what a user of this task would hand to `train`)."""
    from cotrr_core.io import atomic_write

    frame = flickr8k_frame(root, top_k)
    frame["clip_img_features"] = frame["clip_img_features"].map(lambda v: v.tolist())
    frame["clip_text_features"] = frame["clip_text_features"].map(lambda v: v.tolist())
    out = Path(out)
    atomic_write(out, lambda tmp: frame.to_json(tmp, orient="records", lines=True, double_precision=8))
    return out
