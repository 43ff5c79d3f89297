"""Uploads: staged, validated in a bounded child process, renamed only when valid; a failed upload never
touches an existing file and leaves nothing behind."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cotrr_core.data import DataError, uploads
from cotrr_core.data.uploads import clean_stale_uploads, ingest_upload, safe_name
from tests.data.test_loaders import step5_row, write_jsonl


def good_bytes(tmp_path: Path, n_queries: int = 3) -> bytes:
    rows = [step5_row(f"q{q}", f"c{c}") for q in range(n_queries) for c in range(3)]
    return write_jsonl(tmp_path / "src.jsonl", rows).read_bytes()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_good_upload_is_kept_with_its_report(tmp_path):
    up = tmp_path / "uploads"
    result = ingest_upload("data.jsonl", good_bytes(tmp_path), up)
    assert result.ok and result.path == up / "data.jsonl", result.error
    assert "kept 3 queries / 9 candidates" in result.report and result.report.startswith("data.jsonl:")
    assert listing(up) == ["data.jsonl"]


@pytest.mark.parametrize("bad", [b'{"query_id": "q", oops\n',  # malformed
                                 b'{"m": ' + b"[" * 5000 + b"]" * 5000 + b"}\n",  # was RecursionError
                                 b'{"query_id": "q", "x": ' + b"1" + b"0" * 400 + b"}\n"])  # was OverflowError
def test_broken_upload_never_replaces_a_good_file(tmp_path, bad):
    up = tmp_path / "uploads"
    good = good_bytes(tmp_path)
    assert ingest_upload("data.jsonl", good, up).ok
    result = ingest_upload("data.jsonl", bad, up)
    assert not result.ok and result.error.startswith("data.jsonl: line 1")
    assert (up / "data.jsonl").read_bytes() == good
    assert listing(up) == ["data.jsonl"]  # no staged file left behind


def test_a_crashing_or_memory_hungry_validation_keeps_nothing(tmp_path):
    up = tmp_path / "uploads"
    result = ingest_upload("data.jsonl", good_bytes(tmp_path), up, memory_bytes=64 * 2**20)
    assert not result.ok and "data.jsonl" in result.error
    assert listing(up) == []


def test_a_validation_past_its_time_is_killed_and_kept_nothing(tmp_path):
    up = tmp_path / "uploads"
    result = ingest_upload("data.jsonl", good_bytes(tmp_path), up, timeout_s=0.0)
    assert not result.ok and "longer than" in result.error
    assert listing(up) == []


def test_oversized_and_unknown_uploads_are_refused_before_writing(tmp_path, monkeypatch):
    up = tmp_path / "uploads"
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 10)
    result = ingest_upload("data.jsonl", b"x" * 11, up)
    assert not result.ok and "limited to" in result.error
    assert not ingest_upload("data.exe", b"x", up).ok
    assert not up.exists() or listing(up) == []


def test_names_are_plain_file_names():
    assert safe_name("../../etc/data.jsonl") == "data.jsonl"
    assert safe_name(".hidden.csv") == "hidden.csv"
    assert safe_name("my data (1).csv") == "my_data_1_.csv"
    with pytest.raises(DataError, match="file name"):
        safe_name("...")


def test_staged_files_of_a_killed_app_are_cleaned(tmp_path):
    stale, fresh = tmp_path / ".upload-a.jsonl.x.tmp", tmp_path / ".upload-b.jsonl.y.tmp"
    stale.write_text("x")
    fresh.write_text("y")
    old = time.time() - 2 * uploads.STALE_AFTER_S
    os.utime(stale, (old, old))
    assert clean_stale_uploads(tmp_path) == 1
    assert listing(tmp_path) == [fresh.name]
