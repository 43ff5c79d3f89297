"""Each case of issue 13, one test each: a DataError naming file, line and field, in bounded work;
and `python -m cotrr_core validate` answering each with one `error:` line and exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from cotrr_core.cli import main
from cotrr_core.data import DataError, builtin_spec, limits, load_dataset, loaders, parquet
from cotrr_core.io import REPO_ROOT
from tests.data.test_loaders import (
    assert_same_data,
    expect_error,
    step5_frames,
    step5_row,
    write_csv,
    write_jsonl,
    write_lines,
    write_parquet,
)


def rows(n: int = 4, q: str = "q1", **extra) -> list[dict]:
    return [step5_row(q, f"c{i}", **extra) for i in range(n)]


def peak_bytes(fn) -> int:
    """Peak Python + numpy allocation while fn runs (numpy reports to tracemalloc)."""
    tracemalloc.start()
    try:
        fn()
    except DataError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


# ---------- crashes that were not DataError ----------

@pytest.mark.parametrize("writer", [write_jsonl, write_csv, write_parquet])
def test_nested_list_vector(tmp_path, writer):
    r = rows()
    ext = {write_jsonl: "jsonl", write_csv: "csv", write_parquet: "parquet"}[writer]
    bad = range(len(r)) if ext == "parquet" else [1]  # a Parquet column has one type: nest every row
    for i in bad:
        r[i]["clip_img_features"] = [[v] for v in r[i]["clip_img_features"]]
    line = {"jsonl": 2, "csv": 3, "parquet": 1}[ext]
    err = expect_error(writer(tmp_path / f"s.{ext}", r), line, "clip_img_features",
                       label="row" if ext == "parquet" else "line")
    assert "not a number" in err.problem


def test_json_nested_5000_levels(tmp_path):
    lines = [json.dumps(r) for r in rows(3)]
    lines[2] = lines[2][:-1] + ', "meta": ' + "[" * 5000 + "]" * 5000 + "}"
    expect_error(write_lines(tmp_path / "s.jsonl", lines), 3, None, "nested deeper than")


def test_integer_10_to_400(tmp_path):
    lines = [json.dumps(r) for r in rows(3)]
    lines[1] = lines[1].replace('"contrast": ', '"contrast": ' + str(10**400) + ', "was": ')
    expect_error(write_lines(tmp_path / "s.jsonl", lines), 2, "contrast", "(401 digits) is out of range")
    lines[1] = json.dumps(rows(3)[1])[:-1] + ', "note": ' + "9" * 5000 + "}"  # beyond Python's 4300 digits
    expect_error(write_lines(tmp_path / "s.jsonl", lines), 2, "note", "out of range")


@pytest.mark.parametrize("item", ["\u00b2:1", "\u0661:1", "\uff11:1"])
def test_letor_unicode_digit_index(tmp_path, item):
    expect_error(write_lines(tmp_path / "s.txt", ["1 qid:1 1:0.5", f"0 qid:1 {item}"]), 2, item, "<index>:<value>")


# ---------- silently accepted ----------

@pytest.mark.parametrize("value", [1e39, -1e39, 3.41e38])
def test_value_finite_in_float64_but_not_float32(tmp_path, value):
    r = rows()
    r[2]["brightness"] = value
    expect_error(write_jsonl(tmp_path / "s.jsonl", r), 3, "brightness", "float32 range")
    r = rows()
    r[1]["clip_img_features"] = [0.5, value, 0.5, 0.5]
    expect_error(write_parquet(tmp_path / "s.parquet", r), 2, "clip_img_features", "element 1", label="row")


def test_float32_max_itself_is_accepted(tmp_path):
    r = rows()
    r[0]["brightness"] = float(np.finfo(np.float32).max)
    assert np.isfinite(load_dataset(write_jsonl(tmp_path / "s.jsonl", r)).features["visual"]).all()


def test_letor_label_1e300_and_feature_1e39(tmp_path):
    expect_error(write_lines(tmp_path / "a.txt", ["1e300 qid:1 1:0.5", "0 qid:1 1:1"]), 1, "label", "integers")
    expect_error(write_lines(tmp_path / "b.txt", ["1 qid:1 1:1e39", "0 qid:1 1:1"]), 1, "feature 1", "float32")
    # with a spec the label range is the spec's
    expect_error(write_lines(tmp_path / "c.txt", ["1e30 qid:1 1:0.5", "0 qid:1 1:1"]), 1, "label", "out of range",
                 spec=builtin_spec("mq2008"))


def test_every_list_has_one_candidate(tmp_path):
    r = [step5_row(f"q{i}", "a") for i in range(3)]
    expect_error(write_jsonl(tmp_path / "s.jsonl", r), 1, "query_id", "no query has at least 2")
    expect_error(write_lines(tmp_path / "s.txt", ["1 qid:1 1:1", "0 qid:2 1:1"]), 1, "query_id", "no query")


def test_letor_without_features(tmp_path):
    expect_error(write_lines(tmp_path / "s.txt", ["1 qid:1", "0 qid:1 # docid = b"]), 1, "features", "no '<index>")


def test_zero_length_vectors(tmp_path):
    r = rows()
    for row in r:
        row["clip_img_features"] = []
    expect_error(write_jsonl(tmp_path / "s.jsonl", r), 1, "clip_img_features", "empty vector")
    r = rows()
    r[2]["clip_img_features"] = []
    expect_error(write_jsonl(tmp_path / "t.jsonl", r), 3, "clip_img_features", "length 0")


def test_list_constant_vector_differs_within_a_list(tmp_path):
    r = rows() + rows(q="q2")
    r[6]["clip_text_features"] = [9.0, 9.0, 9.0, 9.0]
    err = expect_error(write_jsonl(tmp_path / "s.jsonl", r), 7, "clip_text_features", "identical")
    assert "line 5" in err.problem  # the list's first candidate, for comparison


@pytest.mark.parametrize("label", ["1_0", "\u0661", "0x1", "1e"])
def test_label_syntax_letor(tmp_path, label):
    expect_error(write_lines(tmp_path / "s.txt", ["1 qid:1 1:0.5", f"{label} qid:1 1:1"]), 2, "label", "not a number")


def test_label_syntax_csv(tmp_path):
    r = rows()
    path = write_csv(tmp_path / "s.csv", r)
    text = path.read_text().splitlines()
    text[3] = text[3].replace(str(r[2]["compliance_score"]), "1_0", 1)
    expect_error(write_lines(path, text), 4, "compliance_score", "not a number: '1_0'")


@pytest.mark.parametrize("value", [True, "0.5", "2024-01-01"])
def test_bool_and_text_features_jsonl(tmp_path, value):
    r = rows()
    r[1]["saturation"] = value
    expect_error(write_jsonl(tmp_path / "s.jsonl", r), 2, "saturation")


@pytest.mark.parametrize("column", [[True, False, True, False], ["0.5"] * 4,
                                    list(pd.to_datetime(["2024-01-01"] * 4))])
def test_bool_text_and_date_columns_parquet(tmp_path, column):
    r = rows()
    for row, v in zip(r, column):
        row["saturation"] = v
    expect_error(write_parquet(tmp_path / "s.parquet", r), 1, "saturation", "expected a number", label="row") \
        if not isinstance(column[0], str) else \
        expect_error(write_parquet(tmp_path / "s.parquet", r), 1, "saturation", "not a number", label="row")


def test_number_and_text_ids_would_merge(tmp_path):
    r = rows(3, q=7) + rows(3, q="7")
    expect_error(write_jsonl(tmp_path / "s.jsonl", r), 4, "query_id", "both as text and as the number")
    ok = rows(3, q=7) + rows(3, q=8)  # numbers alone are fine ids
    assert load_dataset(write_jsonl(tmp_path / "ok.jsonl", ok)).query_ids.tolist() == ["7", "8"]


# ---------- hangs and memory: bounded work, measured as allocation, not wall-clock ----------

@pytest.mark.parametrize("index", [20_000, 200_000, 10**8])
def test_letor_huge_feature_index_is_refused_before_allocating(tmp_path, index):
    path = write_lines(tmp_path / "s.txt", [f"1 qid:1 {index}:1", "0 qid:1 1:1"])
    expect_error(path, 1, f"feature {index}", "limit of 1024")
    assert peak_bytes(lambda: load_dataset(path)) < 2 * 2**20


def test_letor_feature_limit_is_configurable(tmp_path, capsys):
    path = write_lines(tmp_path / "s.txt", ["1 qid:1 2000:1", "0 qid:1 1:1"])
    assert load_dataset(path, max_features=2000).spec.num_features == 2000
    assert main(["validate", str(path)]) == 2 and "--max-features" in capsys.readouterr().err
    assert main(["validate", str(path), "--max-features", "2000"]) == 0


def test_letor_sparse_expansion_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "SPARSE_FLOOR", 1000)
    lines = ["0 qid:1 1:1"] * 200 + ["1 qid:1 1000:1"]  # 201 values given, 201,000 dense
    path = write_lines(tmp_path / "s.txt", lines)
    expect_error(path, None, None, "would expand")
    assert peak_bytes(lambda: load_dataset(path)) < 2 * 2**20


def test_parquet_limits_come_from_the_footer(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "s.parquet", rows(50))
    monkeypatch.setattr(parquet, "MAX_ROWS", 40)
    expect_error(path, None, None, "50 rows")
    monkeypatch.setattr(parquet, "MAX_ROWS", limits.MAX_ROWS)
    monkeypatch.setattr(parquet, "MAX_VALUES", 100)
    expect_error(path, None, None, "values once decoded")


@pytest.mark.slow
def test_million_constant_parquet_rows_stay_bounded(tmp_path):
    """Issue 13: 0.1 MB, 1M identical rows used to take 1.34 GB and 59 s before its error."""
    path = tmp_path / "m.parquet"
    pd.DataFrame([step5_row("q", "c")] * 1_000_000).to_parquet(path)
    code = ("import sys; from cotrr_core.data import load_dataset, DataError\n"
            "try: load_dataset(sys.argv[1])\nexcept DataError as e: print(e)\n"
            "print([line for line in open('/proc/self/status') if line.startswith('VmHWM')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO_ROOT,
                         timeout=120).stdout.splitlines()
    assert "row 2: field 'candidate_id': duplicate" in out[0]
    assert int(out[1]) < 1000 * 1024  # KiB: under 1 GB (VmHWM: ru_maxrss keeps the parent's peak across exec)


# ---------- locations ----------

def test_csv_multiline_quoted_cell_keeps_lines_true(tmp_path):
    r = rows()
    r[0]["query"] = "two\nlines"
    r[2]["brightness"] = "dark"
    expect_error(write_csv(tmp_path / "s.csv", r), 5, "brightness", "not a number")  # header 1, row 0 on 2-3


def test_wrong_vector_length_on_the_first_row_blames_the_first_row(tmp_path):
    r = rows()
    r[0]["clip_img_features"] = [0.5] * 7
    expect_error(write_jsonl(tmp_path / "s.jsonl", r), 1, "clip_img_features", "length 7, expected 4")


def test_trailing_comma_on_first_csv_row_is_refused_not_shifted(tmp_path):
    path = write_csv(tmp_path / "s.csv", rows())
    text = path.read_text().splitlines()
    text[1] += ","
    expect_error(write_lines(path, text), 2, None, "cells, but the header")


def test_non_utf8_csv_names_the_line(tmp_path):
    path = write_csv(tmp_path / "s.csv", rows())
    data = path.read_bytes().split(b"\n")
    data[3] = data[3].replace(b"c2", b"c\xff2")
    path.write_bytes(b"\n".join(data))
    expect_error(path, 4, None, "UTF-8")


def test_csv_duplicate_header_and_unterminated_quote(tmp_path):
    path = write_csv(tmp_path / "s.csv", rows())
    text = path.read_text().splitlines()
    expect_error(write_lines(tmp_path / "d.csv", [text[0] + ",brightness"] + [t + ",1" for t in text[1:]]),
                 1, "brightness", "twice")
    expect_error(write_lines(tmp_path / "u.csv", text[:3] + [text[3] + ',"open'] + text[4:]), 4, None, "malformed CSV")


# ---------- valid CSV still loads like pandas writes it ----------

@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=step5_frames())
def test_random_valid_frames_load_the_same_from_csv_as_from_jsonl(tmp_path, case):
    data_rows, _ = case
    assert_same_data(load_dataset(write_jsonl(tmp_path / "p.jsonl", data_rows)),
                     load_dataset(write_csv(tmp_path / "p.csv", data_rows)))


# ---------- the CLI: one line, exit 2, no traceback ----------

CLI_CASES = {
    "nested.jsonl": "\n".join(json.dumps(dict(r, clip_img_features=[[0.1], [0.2], [0.3], [0.4]]))
                              for r in rows(2)),
    "deep.jsonl": json.dumps(rows(1)[0])[:-1] + ', "m": ' + "[" * 5000 + "]" * 5000 + "}",
    "big.jsonl": json.dumps(rows(1)[0]).replace('"contrast": ', '"contrast": ' + "1" + "0" * 400 + ", \"x\": "),
    "unicode.txt": "1 qid:1 1:0.5\n0 qid:1 \u00b2:1\n",
    "f32.jsonl": "\n".join(json.dumps(dict(r, brightness=1e39)) for r in rows(2)),
    "label.txt": "1e300 qid:1 1:0.5\n0 qid:1 1:1\n",
    "single.jsonl": "\n".join(json.dumps(step5_row(f"q{i}", "a")) for i in range(3)),
    "nofeat.txt": "1 qid:1\n0 qid:1\n",
    "index.txt": "1 qid:1 100000000:1\n0 qid:1 1:1\n",
    "underscore.txt": "1_0 qid:1 1:1\n0 qid:1 1:1\n",
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_validate_prints_one_error_line(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_text(CLI_CASES[name] + "\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_unreadable_file_is_an_error_line(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 2  # a directory named like data
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def test_cli_subprocess_deep_json_no_traceback(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text(CLI_CASES["deep.jsonl"] + "\n")
    out = subprocess.run([sys.executable, "-m", "cotrr_core", "validate", str(path)], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "Traceback" not in out.stderr


def test_wide_files_are_refused_early(tmp_path):
    header = ",".join(f"c{i}" for i in range(200_000))  # a 1.5 MB header: was a quadratic duplicate check
    expect_error(write_lines(tmp_path / "w.csv", [header, header]), 1, None, "columns; at most")
    wide = dict(step5_row("q", "a"), **{f"x{i}": 1 for i in range(5000)})
    expect_error(write_jsonl(tmp_path / "w.jsonl", [wide]), 1, None, "distinct fields")


def test_parquet_that_aborted_pyarrow_is_a_data_error(tmp_path):
    """Found by the damaged-file fuzz: reading its column-chunk statistics makes pyarrow terminate the
    process (uncatchable), so the check runs in a child that would die instead of the test run."""
    path = REPO_ROOT / "tests" / "data" / "fixtures" / "damaged_footer_stats.parquet"
    out = subprocess.run([sys.executable, "-m", "cotrr_core", "validate", str(path)], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 2 and "cannot read Parquet" in out.stderr, out.stderr[-500:]
