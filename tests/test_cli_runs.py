"""`python -m cotrr_core runs [--json]`: the registry the app uses, from the command line."""
from __future__ import annotations

import json

from cotrr_core.cli import main
from cotrr_core.io import write_json
from cotrr_core.training.runs import new_run_dir, write_status


def test_runs_json_lists_a_run_on_an_uploaded_file(tmp_path, capsys):
    run = new_run_dir("upload", root=tmp_path)
    write_json(run / "config.json", {"dataset": str(tmp_path / "uploads" / "mine.jsonl"), "run": {}})
    write_status(run, "done", 1.0, "done")
    assert main(["runs", "--json", "--root", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [run.name] and rows[0]["state"] == "done"
    assert "mine.jsonl" in json.dumps(rows[0]["dataset"])
    assert main(["runs", "--root", str(tmp_path)]) == 0
    assert run.name in capsys.readouterr().out
