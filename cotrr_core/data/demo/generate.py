"""Built-in demo benchmark: seeded cocktail-image retrieval lists (text -> image).

A CLIP-like first stage returned 30-50 candidates per query; each candidate is a small
image rendered from a JSON spec. Visual and conflict features are measured from its
pixels, and `compliance_score` says how well it satisfies the query. The generative
model is described in docs/demo_benchmark.md.
"""
from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cotrr_core.io import REPO_ROOT, atomic_write

from .catalogue import (
    CATALOGUE,
    CLARITIES,
    COLOUR_NAMES,
    FAMILIES,
    GARNISHES,
    GLASSES,
    TEMPERATURES,
    nearest_colour_name,
)
from .features import CONFLICT_COLUMNS, VISUAL_COLUMNS, conflict_features, subject_mask, visual_features
from .render import render_candidate_image
from .scenes import (
    Query,
    candidate_specs,
    colour_delta_e,
    compliance,
    expected_for_detectors,
    make_query,
)

__all__ = ["SIZES", "COLUMNS", "VECTOR_COLUMNS", "generate_demo_frame", "tile_demo_frame", "render_candidate_image",
           "demo_cache_path", "read_demo_frame", "write_demo_parquet", "write_demo_jsonl"]

SIZES: dict[str, dict] = {
    "default": dict(n_queries=600, min_candidates=30, max_candidates=50),
    "small": dict(n_queries=60, min_candidates=20, max_candidates=30),
}
VECTOR_COLUMNS = ("clip_img_features", "clip_text_features")
COLUMNS = ("query_id", "candidate_id", "query", "compliance_score", "first_stage_score", "first_stage_rank",
           *VECTOR_COLUMNS, *VISUAL_COLUMNS, *CONFLICT_COLUMNS, "render_spec", "image")
VERSION = "v1"

# Joint text-image space: coarse concepts dominate, fine attributes are weak (as in CLIP).
FAMILY_SHARE = 0.92  # share of a cocktail's identity vector common to its look-alike family
IMAGE_WEIGHTS = {"cocktail": 1.0, "glass": 0.5, "colour": 0.3, "garnish": 0.22, "temperature": 0.22,
                 "clarity": 0.15}
TEXT_WEIGHTS = {"cocktail": 1.0, "glass": 0.45, "colour": 0.3, "garnish": 0.3, "temperature": 0.3,
                "clarity": 0.2}
IMAGE_NOISE, TEXT_NOISE, SCORE_NOISE, NOISE_SPREAD = 1.4, 0.3, 0.02, 0.8
_VOCAB = {"cocktail": tuple(c.name for c in CATALOGUE), "glass": GLASSES, "colour": tuple(COLOUR_NAMES),
          "garnish": GARNISHES, "temperature": TEMPERATURES, "clarity": CLARITIES}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def concept_tables(dim: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fixed random unit vectors per concept value: {kind: (n_values, dim)}."""
    family = _unit(rng.normal(size=(len(FAMILIES), dim)))
    own = _unit(rng.normal(size=(len(CATALOGUE), dim)))
    fam_idx = [FAMILIES.index(c.family) for c in CATALOGUE]
    tables = {"cocktail": _unit(np.sqrt(FAMILY_SHARE) * family[fam_idx] + np.sqrt(1 - FAMILY_SHARE) * own)}
    for kind in ("glass", "colour", "garnish", "temperature", "clarity"):
        tables[kind] = _unit(rng.normal(size=(len(_VOCAB[kind]), dim)))
    return {k: v.astype(np.float32) for k, v in tables.items()}


def embed(concepts: list[dict], weights: dict[str, float], noise: float, tables: dict,
          rng: np.random.Generator) -> np.ndarray:
    """Normalised weighted sum of concept vectors + isotropic noise: list of {kind: value} -> (n, dim) float32."""
    n, dim = len(concepts), tables["cocktail"].shape[1]
    # Per-row noise level: photo conditions (light, angle, clutter) blur some images more.
    scale = noise * rng.uniform(1 - NOISE_SPREAD, 1 + NOISE_SPREAD, (n, 1)) / np.sqrt(dim)
    out = rng.standard_normal((n, dim), dtype=np.float32) * scale.astype(np.float32)
    for kind, w in weights.items():
        idx = np.array([_VOCAB[kind].index(c[kind]) if c.get(kind) else -1 for c in concepts])
        has = idx >= 0
        out[has] += w * tables[kind][idx[has]]
    return _unit(out).astype(np.float32)


def image_concepts(spec: dict) -> dict:
    return {"cocktail": spec["cocktail"], "glass": spec["glass"], "colour": nearest_colour_name(spec["liquid_rgb"]),
            "garnish": spec["garnish"], "temperature": spec["temperature"], "clarity": spec["clarity"]}


def text_concepts(query: Query) -> dict:
    colour = {"colour": query.colour_word} if query.colour_word else {}
    return {"cocktail": query.cocktail.name, **query.constraints, **colour}


def measure(spec: dict, expected: dict) -> dict[str, float]:
    """Render the spec and measure the 8 visual + 5 conflict features from its pixels."""
    img = np.asarray(render_candidate_image(spec))
    noise = np.random.default_rng([spec["seed"], 1])  # detector noise, tied to the candidate
    subj = subject_mask(img)
    return {**visual_features(img, subj), **conflict_features(img, expected, noise, subj)}


def _measure_all(jobs: list[tuple[dict, dict]]) -> list[dict]:
    return [measure(s, e) for s, e in jobs]


def _measure_parallel(jobs: list[tuple[dict, dict]]) -> list[dict]:
    """Per-candidate work is pure, so splitting across processes keeps results identical."""
    workers = min(os.cpu_count() or 1, 4)
    if workers < 2 or len(jobs) < 4000:
        return _measure_all(jobs)
    chunks = [jobs[i::workers * 4] for i in range(workers * 4)]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_measure_all, chunks))
    out: list[dict] = [{}] * len(jobs)
    for i, part in enumerate(parts):
        out[i::workers * 4] = part
    return out


def generate_demo_frame(n_queries: int = 600, min_candidates: int = 30, max_candidates: int = 50,
                        embed_dim: int = 1024, seed: int = 0) -> pd.DataFrame:
    """One row per candidate, grouped by query in first-stage rank order (columns: see module doc)."""
    rng = np.random.default_rng(seed)
    tables = concept_tables(embed_dim, rng)
    queries = [make_query(rng) for _ in range(n_queries)]
    rows = []
    for qi, query in enumerate(queries):
        n = int(rng.integers(min_candidates, max_candidates + 1))
        qid = f"q{qi + 1:04d}"
        for j, (spec, kind) in zip(rng.permutation(n), candidate_specs(query, n, rng)):
            rows.append({"query_id": qid, "candidate_id": f"{qid}_c{j + 1:02d}", "query": query.text,
                         "cocktail": spec["cocktail"], "candidate_kind": kind, "_q": qi, "_spec": spec})
    specs = [r["_spec"] for r in rows]
    row_queries = [queries[r["_q"]] for r in rows]
    colour_de = colour_delta_e(specs, row_queries)
    for r, q, de in zip(rows, row_queries, colour_de):
        r["compliance_score"] = compliance(r["_spec"], q, float(de))
    jobs = [(s, expected_for_detectors(q)) for s, q in zip(specs, row_queries)]
    img = embed([image_concepts(r["_spec"]) for r in rows], IMAGE_WEIGHTS, IMAGE_NOISE, tables, rng)
    txt = embed([text_concepts(q) for q in queries], TEXT_WEIGHTS, TEXT_NOISE, tables, rng)
    q_idx = np.array([r["_q"] for r in rows])
    score = np.einsum("nd,nd->n", img, txt[q_idx]) + rng.normal(0, SCORE_NOISE, len(rows))
    features = _measure_parallel(jobs)
    df = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    df["first_stage_score"] = score.astype(float)
    df["clip_img_features"] = list(img)
    df["clip_text_features"] = [txt[i] for i in q_idx]
    feats = pd.DataFrame(features)
    for col in (*VISUAL_COLUMNS, *CONFLICT_COLUMNS):
        df[col] = feats[col].astype(float).to_numpy()
    df["render_spec"] = [json.dumps(r["_spec"], sort_keys=True) for r in rows]
    df["image"] = "demo://" + df["candidate_id"]
    return _rank(df)


def tile_demo_frame(frame: pd.DataFrame, n_queries: int) -> pd.DataFrame:
    """`n_queries` lists made by repeating the frame's lists with fresh ids (q0001 -> q0001-t1, ...).

    For scale tests only: the copies add rows, not information.
    """
    return pd.concat(list(tile_parts(frame, n_queries)), ignore_index=True)


def tile_parts(frame: pd.DataFrame, n_queries: int):
    """tile_demo_frame one copy of the lists at a time (frames of at most the input's size)."""
    qids = frame["query_id"].unique()
    if n_queries <= len(qids):
        yield frame[frame["query_id"].isin(qids[:n_queries])].reset_index(drop=True)
        return
    for copy in range(-(-n_queries // len(qids))):
        keep = qids[:min(len(qids), n_queries - copy * len(qids))]
        part = frame[frame["query_id"].isin(keep)].copy()
        if copy:
            suffix = f"-t{copy}"
            part["query_id"] = part["query_id"] + suffix
            part["candidate_id"] = part["query_id"] + "_" + part["candidate_id"].str.split("_").str[-1]
            part["image"] = "demo://" + part["candidate_id"]
        yield part.reset_index(drop=True)


def write_tiled(frame: pd.DataFrame, n_queries: int, path: Path, fmt: str) -> int:
    """Write tile_demo_frame(frame, n_queries) copy by copy (memory: one copy), atomically.

    Returns the number of rows. Parquet gets one row group per copy."""
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        writer = None
        with open(tmp, "wb") if fmt == "jsonl" else contextlib.nullcontext() as fh:
            for part in tile_parts(frame, n_queries):
                rows += len(part)
                if fmt == "jsonl":
                    cols = list(part.columns)
                    fh.write("".join(json.dumps({c: _jsonable(v) for c, v in zip(cols, row)}) + "\n"
                                     for row in part.itertuples(index=False, name=None)).encode())
                    continue
                table = _parquet_table(part)
                writer = writer or pq.ParquetWriter(str(tmp), table.schema, compression="zstd")
                writer.write_table(table)
        if writer is not None:
            writer.close()
    atomic_write(path, write)
    return rows


def _rank(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by query then descending first-stage score; add the 1-based rank."""
    df = df.sort_values(["query_id", "first_stage_score"], ascending=[True, False], kind="stable")
    df = df.reset_index(drop=True)
    df["first_stage_rank"] = df.groupby("query_id").cumcount() + 1
    return _ordered(df)


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Contract columns first, extra descriptive columns after."""
    return df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]


# --- storage ------------------------------------------------------------------------------

def demo_cache_path(size: str = "default", root: Path | None = None) -> Path:
    """artifacts/datasets/demo_<size>_v1.parquet under `root` (the repo root), built if missing."""
    if size not in SIZES:
        raise KeyError(f"unknown demo size {size!r}; known: {sorted(SIZES)}")
    path = Path(root or REPO_ROOT) / "artifacts" / "datasets" / f"demo_{size}_{VERSION}.parquet"
    if not path.exists():
        write_demo_parquet(generate_demo_frame(**SIZES[size]), path)
    return path


def write_demo_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write atomically; vectors stored as list<float16> to halve the file."""
    table = _parquet_table(df)
    atomic_write(path, lambda tmp: pq.write_table(table, str(tmp), compression="zstd"))


def _parquet_table(df: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(df.drop(columns=list(VECTOR_COLUMNS)), preserve_index=False)
    for col in VECTOR_COLUMNS:
        mat = np.stack(df[col].to_numpy()).astype(np.float16)
        offsets = pa.array(np.arange(0, mat.size + 1, mat.shape[1], dtype=np.int32))
        table = table.append_column(col, pa.ListArray.from_arrays(offsets, pa.array(mat.ravel())))
    return table


def read_demo_frame(path: Path | str) -> pd.DataFrame:
    """Read a demo parquet; vector cells come back as float32 numpy arrays [embed_dim]."""
    table = pq.read_table(path)
    df = table.drop_columns(list(VECTOR_COLUMNS)).to_pandas()
    for col in VECTOR_COLUMNS:
        arr = table.column(col).combine_chunks()
        mat = arr.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(df), -1)
        df[col] = list(mat)
    return _ordered(df)


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return [round(float(v), 6) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_demo_jsonl(df: pd.DataFrame, path: Path | str) -> None:
    """Step5 JSONL: one JSON object per candidate row, vectors as lists, floats to 6 digits; atomic."""
    cols = list(df.columns)

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in df.itertuples(index=False, name=None):
                fh.write(json.dumps({c: _jsonable(v) for c, v in zip(cols, row)}) + "\n")
    atomic_write(path, write)
