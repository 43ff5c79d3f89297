"""Predefined splits: `train --train/--val/--test` and `*.splits.json` (data/split_files.py)."""
from __future__ import annotations

import json

import pytest

from cotrr_core.cli import main
from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.data.errors import DataError
from cotrr_core.training.runs import dataset_identity


def _letor(path, first_qid: int, n_queries: int = 24):
    lines = []
    for q in range(first_qid, first_qid + n_queries):
        for d in range(6):
            feats = " ".join(f"{i}:{(q * 7 + d * 3 + i) % 10 / 10:.2f}" for i in range(1, 6))
            lines.append(f"{int(d % 3 == 0) * 2} qid:{q} {feats} # docid = q{q}d{d}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def folds(tmp_path):
    return {"train": _letor(tmp_path / "train.txt", 0), "val": _letor(tmp_path / "vali.txt", 100),
            "test": _letor(tmp_path / "test.txt", 200, 10)}


def test_a_splits_file_loads_its_files_with_relative_paths(folds, tmp_path):
    manifest = tmp_path / "fold1.splits.json"
    manifest.write_text(json.dumps({k: v.name for k, v in folds.items()}))
    bench = load_benchmark(str(manifest))
    assert bench.name == str(manifest.resolve())
    assert sorted(bench.splits["test"].query_ids) == sorted(f"{q}" for q in range(200, 210))
    val, cal = set(bench.splits["val"].query_ids), set(bench.splits["cal"].query_ids)
    assert len(val) + len(cal) == 24 and not val & cal and min(map(int, val | cal)) == 100
    manifest.write_text(json.dumps({**{k: v.name for k, v in folds.items()}, "cal": "test.txt"}))
    assert load_benchmark(str(manifest)).splits["cal"].num_queries == 10  # a given cal file is used whole


@pytest.mark.parametrize("body, field", [({"train": "train.txt", "val": "vali.txt"}, "test"),
                                         ({"train": "train.txt", "val": "vali.txt", "test": "x.txt"}, "test"),
                                         ({"train": "train.txt", "val": "vali.txt", "test": "test.txt", "tset": "a"},
                                          "tset"),
                                         ({"train": 3, "val": "vali.txt", "test": "test.txt"}, "train")])
def test_a_bad_splits_file_names_itself_and_the_field(folds, tmp_path, body, field):
    manifest = tmp_path / "bad.splits.json"
    manifest.write_text(json.dumps(body))
    with pytest.raises(DataError) as err:
        load_benchmark(str(manifest))
    assert str(manifest) in str(err.value) and field in str(err.value)


def test_train_on_predefined_splits_records_them_and_reloads(folds, tmp_path, monkeypatch):
    from cotrr_core.views.choices import dataset_label, dataset_options, done_runs

    monkeypatch.setenv("COTRR_RUNS", str(tmp_path))
    run = tmp_path / "run"
    assert main(["train", "--train", str(folds["train"]), "--val", str(folds["val"]), "--test", str(folds["test"]),
                 "--fast", "--set", "train.epochs=1", "--set", "train.blend=off", "--run-dir", str(run)]) == 0
    manifest = run / "data.splits.json"
    assert json.loads(manifest.read_text()) == {k: str(v.resolve()) for k, v in folds.items()}
    meta = json.loads((run / "config.json").read_text())
    assert meta["dataset"] == str(manifest.resolve())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["original"]["queries"] <= 10  # scored on the test file, not a hash split
    assert load_benchmark(meta["dataset"]).splits["test"].num_queries == 10  # the run reloads its data
    assert meta["dataset"] in dataset_options() and dataset_label(meta["dataset"]) == "splits: run"  # the app's
    assert [r.path for r in done_runs(meta["dataset"])] == [run]
    before = dataset_identity(manifest)["sha256"]
    folds["test"].write_text(folds["test"].read_text().replace("0.10", "0.11"))
    assert dataset_identity(manifest)["sha256"] != before  # a changed data file is a different dataset


def test_train_refuses_incomplete_or_mixed_split_flags(folds, tmp_path, capsys):
    assert main(["train", "--train", str(folds["train"]), "--val", str(folds["val"]),
                 "--run-dir", str(tmp_path / "r1")]) != 0
    assert "test" in capsys.readouterr().err
    assert main(["train", "--dataset", "demo", "--train", str(folds["train"]), "--val", str(folds["val"]),
                 "--test", str(folds["test"]), "--run-dir", str(tmp_path / "r2")]) != 0
    assert "--dataset" in capsys.readouterr().err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()  # nothing half-made
