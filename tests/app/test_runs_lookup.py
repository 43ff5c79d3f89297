"""How the app finds a run for a dataset: name + content hash, old runs by name, best run first."""
from __future__ import annotations

import json
from pathlib import Path

from cotrr_core.training.runs import dataset_identity, registry, runs_for_dataset, write_dataset_identity


def _run(root: Path, run_id: str, dataset: str, ndcg: float | None, state: str = "done") -> Path:
    d = root / run_id
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"state": state, "progress": 1.0}))
    (d / "config.json").write_text(json.dumps({"dataset": dataset, "run": {}}))
    if ndcg is not None:
        (d / "metrics.json").write_text(json.dumps({"test": {"cotrr": {"ndcg@10": ndcg}}}))
    (d / "model.pt").write_bytes(b"")
    return d


def test_upload_run_found_by_name_and_content(tmp_path):
    up = tmp_path / "uploads" / "mine.jsonl"
    up.parent.mkdir()
    up.write_text('{"a": 1}\n')
    runs = tmp_path / "runs"
    # what the trainer records: the absolute path of the upload (the app used to look up the file name)
    a = _run(runs, "20260101-000000-a", str(up.resolve()), 0.80)
    b = _run(runs, "20260101-000100-b", str(up.resolve()), 0.90)
    write_dataset_identity(b, up)
    _run(runs, "20260101-000200-demo", "demo", 0.99)
    _run(runs, "20260101-000300-running", str(up.resolve()), None, state="running")
    found = runs_for_dataset(str(up), runs)
    assert [r.path for r in found] == [b, a]  # best test nDCG@10 first, finished runs only
    ident = dataset_identity(up)
    assert ident["name"] == "mine.jsonl" and ident["key"].startswith("mine.jsonl@")
    assert json.loads((b / "dataset.json").read_text())["key"] == ident["key"]
    up.write_text('{"a": 2}\n')  # same name, other content: a different dataset for the recorded run
    # (a run from before dataset.json follows its file's path; the app warns when its data fingerprint differs)
    assert [r.path for r in runs_for_dataset(str(up), runs)] == [a]
    assert [r.run_id for r in runs_for_dataset("demo", runs)] == ["20260101-000200-demo"]


def test_old_run_whose_file_is_gone_matches_by_name(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "20250101-000000-old", "/somewhere/else/S5.txt", 0.7)
    here = tmp_path / "S5.txt"
    here.write_text("0 qid:1 1:0.5\n")
    assert [r.run_id for r in runs_for_dataset(str(here), runs)] == ["20250101-000000-old"]


def test_registry_rows_for_runs_json(tmp_path):
    runs = tmp_path / "runs"
    up = tmp_path / "x.csv"
    up.write_text("q,c\n")
    d = _run(runs, "20260101-000000-x", str(up), 0.5)
    write_dataset_identity(d, up)
    rows = registry(runs)
    assert json.loads(json.dumps(rows)) == rows  # JSON-ready
    assert rows[0]["id"] == d.name and rows[0]["state"] == "done" and rows[0]["test_ndcg@10"] == 0.5
    assert rows[0]["dataset"]["name"] == "x.csv"
