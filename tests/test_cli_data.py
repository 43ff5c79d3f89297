"""`python -m cotrr_core validate`: counts on good input, `line N` and a non-zero exit on bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotrr_core.cli import main
from cotrr_core.data.benchmarks import shared_datasets_dir
from cotrr_core.io import REPO_ROOT

ROW = {"compliance_score": 0.5, "clip_img_features": [0.1, 0.2], "clip_text_features": [0.3, 0.4],
       **{f: 0.25 for f in ["subject_ratio", "object_area", "aspect_ratio", "brightness", "contrast", "saturation",
                            "hue_variance", "edge_density", "color_delta_e", "temperature_conflict",
                            "clarity_conflict", "garnish_mismatch", "overall_conflict_prob"]}}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _good(tmp_path: Path) -> Path:
    rows = [dict(ROW, query_id=q, candidate_id=c) for q in ("q1", "q2") for c in ("a", "b", "c")]
    rows.append(dict(ROW, query_id="solo", candidate_id="a"))
    return _write(tmp_path / "good.jsonl", rows)


def _mq2008_s5() -> Path:
    path = shared_datasets_dir() / "mq2008" / "S5.txt"
    if not path.exists():
        pytest.skip(f"MQ2008 not available at {path} (set COTRR_DATASETS or provide ../shared/datasets)")
    return path


def test_validate_mq2008_prints_counts(capsys):
    path = _mq2008_s5()
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "156 queries" in out and "2874 candidates" in out
    assert "tokens:" in out


def test_validate_mq2008_with_spec_file(capsys, tmp_path):
    from cotrr_core.data import builtin_spec

    path = _mq2008_s5()
    spec = tmp_path / "mq.json"
    spec.write_text(json.dumps(builtin_spec("mq2008").to_dict()))
    assert main(["validate", str(path), "--spec", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "156 queries" in out and "link_page" in out


def test_validate_small_jsonl_reports_skips(capsys, tmp_path):
    assert main(["validate", str(_good(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "kept 2 queries / 6 candidates" in out and "skipped 1 queries / 1 candidates" in out


def test_validate_broken_file_exits_non_zero_naming_the_line(capsys, tmp_path):
    rows = [dict(ROW, query_id="q1", candidate_id=c) for c in "abcd"]
    rows[2]["brightness"] = "bright"
    path = _write(tmp_path / "bad.jsonl", rows)
    assert main(["validate", str(path)]) != 0
    err = capsys.readouterr().err
    assert "line 3" in err and "brightness" in err and str(path) in err


def test_validate_reject_small_lists_flag(capsys, tmp_path):
    assert main(["validate", str(_good(tmp_path)), "--small-lists", "reject"]) != 0
    assert "line 7" in capsys.readouterr().err


def test_validate_bad_spec_file_is_a_clean_error(capsys, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text('{"name": "x", "format": "step5", "tokenz": []}')
    assert main(["validate", str(_good(tmp_path)), "--spec", str(spec)]) != 0
    assert "tokenz" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    good, bad = _good(tmp_path), _write(tmp_path / "bad.jsonl", [{"query_id": "q"}])
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ok = subprocess.run([sys.executable, "-m", "cotrr_core", "validate", str(good)], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "kept 2 queries / 6 candidates" in ok.stdout
    broken = subprocess.run([sys.executable, "-m", "cotrr_core", "validate", str(bad)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert broken.returncode == 2 and "line 1" in broken.stderr and "Traceback" not in broken.stderr
