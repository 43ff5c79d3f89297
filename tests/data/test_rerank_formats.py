"""`rerank` reads all four formats (issue 28): CSV, LETOR, JSONL and Parquet, from the CLI and through the
Compare page's capped child process (data/uploads.rerank_upload), with the same ranks whatever the format."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from cotrr_core.cli import main
from cotrr_core.data import DataError
from cotrr_core.data.uploads import rerank_upload
from tests.conftest import tiny_app_config

STEP5_FORMATS = ["jsonl", "csv", "parquet"]


@pytest.fixture(scope="module")
def step5_rows(app_env):
    """Eight demo-small lists, scoring only (no label), as records with vector lists."""
    from cotrr_core.data.demo import demo_cache_path

    frame = pd.read_parquet(demo_cache_path("small"))
    keep = frame["query_id"].isin(frame["query_id"].drop_duplicates().iloc[:8])
    frame = frame[keep].drop(columns=["compliance_score"]).reset_index(drop=True)
    for col in ("clip_img_features", "clip_text_features"):
        frame[col] = [np.asarray(v, dtype=np.float64).round(5).tolist() for v in frame[col]]
    return frame


def _write(frame: pd.DataFrame, fmt: str, path):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    elif fmt == "csv":
        out = frame.copy()
        for col in ("clip_img_features", "clip_text_features"):
            out[col] = [json.dumps(v) for v in out[col]]
        out.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _ranks(path) -> pd.DataFrame:
    rows = pd.read_csv(path) if str(path).endswith(".csv") else pd.read_json(path, lines=True)
    return rows.sort_values(["query_id", "candidate_id"]).reset_index(drop=True)[
        ["query_id", "candidate_id", "original_rank", "new_rank"]]


@pytest.mark.parametrize("fmt", STEP5_FORMATS)
def test_cli_rerank_reads_every_step5_format_alike(app_env, step5_rows, tmp_path, monkeypatch, fmt):
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))
    ref = _write(step5_rows, "jsonl", tmp_path / "ref.jsonl")
    assert main(["rerank", str(app_env["run_dir"]), str(ref), "--out", str(tmp_path / "ref.out.jsonl")]) == 0
    src = _write(step5_rows, fmt, tmp_path / f"in.{fmt}")
    out = tmp_path / "out.jsonl"
    assert main(["rerank", str(app_env["run_dir"]), str(src), "--format", fmt, "--out", str(out)]) == 0
    got, want = _ranks(out), _ranks(tmp_path / "ref.out.jsonl")
    assert len(got) == len(step5_rows)
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize("fmt", STEP5_FORMATS)
def test_compare_page_rerank_runs_capped_and_reads_every_format(app_env, step5_rows, tmp_path, monkeypatch, fmt):
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))
    content = _write(step5_rows, fmt, tmp_path / f"in.{fmt}").read_bytes()
    summary = rerank_upload(app_env["run_dir"], f"mine.{fmt}", content, tmp_path / "job", top_m=10)
    assert summary["candidates"] == len(step5_rows) and summary["lists"] == 8
    assert len(_ranks(tmp_path / "job" / "reranked.csv")) == len(step5_rows)


def test_compare_page_rerank_error_names_the_upload_and_line(app_env, step5_rows, tmp_path):
    bad = step5_rows.astype({"brightness": object})
    bad.loc[3, "brightness"] = "bright"
    content = _write(bad, "jsonl", tmp_path / "bad.jsonl").read_bytes()
    with pytest.raises(DataError, match=r"^mine\.jsonl: line 4: field 'brightness': not a number"):
        rerank_upload(app_env["run_dir"], "mine.jsonl", content, tmp_path / "job")


def test_compare_page_rerank_is_memory_capped(app_env, step5_rows, tmp_path):
    content = _write(step5_rows, "parquet", tmp_path / "in.parquet").read_bytes()
    with pytest.raises(DataError, match="mine.parquet"):
        rerank_upload(app_env["run_dir"], "mine.parquet", content, tmp_path / "job", memory_bytes=64 * 2**20)


def test_a_long_upload_name_is_a_data_error(app_env, tmp_path):
    with pytest.raises(DataError, match="at most"):
        rerank_upload(app_env["run_dir"], "x" * 300 + ".jsonl", b"{}\n", tmp_path / "job")


# ---------- LETOR: a run trained on a LETOR file ----------

def _letor_lines(n_queries: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = []
    for q in range(n_queries):
        for d in range(6):
            x = rng.uniform(0, 1, 5).round(4)
            label = int(x[0] > 0.6) + int(x[1] > 0.8)
            feats = " ".join(f"{i + 1}:{v}" for i, v in enumerate(x))
            lines.append(f"{label} qid:{q + 1} {feats} #docid = d{q}_{d}")
    return lines


@pytest.fixture(scope="module")
def letor_run(tmp_path_factory):
    from cotrr_core.data.benchmarks import load_benchmark
    from cotrr_core.training.trainer import fit

    base = tmp_path_factory.mktemp("letor")
    train = base / "train.txt"
    train.write_text("\n".join(_letor_lines(80)) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(load_benchmark(str(train)), tiny_app_config(), base / "run")
    return base


def test_cli_and_compare_page_rerank_letor(letor_run, tmp_path):
    src = tmp_path / "score.txt"
    src.write_text("\n".join(_letor_lines(5, seed=1)) + "\n")
    out = tmp_path / "out.csv"
    assert main(["rerank", str(letor_run / "run"), str(src), "--format", "letor", "--out", str(out)]) == 0
    cli = _ranks(out)
    assert len(cli) == 30 and set(cli["query_id"].astype(str)) == {"1", "2", "3", "4", "5"}
    summary = rerank_upload(letor_run / "run", "score.txt", src.read_bytes(), tmp_path / "job")
    assert summary["candidates"] == 30
    pd.testing.assert_frame_equal(_ranks(tmp_path / "job" / "reranked.csv"), cli)
