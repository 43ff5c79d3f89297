"""Loaders: Step5 JSONL / CSV / Parquet and LETOR, on tiny hand-made files.

Every bad input must raise ONE DataError naming the file, the line (Parquet: row),
the field and the problem.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cotrr_core.data import DataError, FeatureSpec, builtin_spec, infer_format, load_dataset
from cotrr_core.data.benchmarks import shared_datasets_dir

VISUAL = ["subject_ratio", "object_area", "aspect_ratio", "brightness", "contrast", "saturation",
          "hue_variance", "edge_density"]
CONFLICT = ["color_delta_e", "temperature_conflict", "clarity_conflict", "garnish_mismatch",
            "overall_conflict_prob"]
DIM = 4


# ---------- helpers: tiny Step5 files ----------

def _value(*key) -> float:
    """A distinct, exactly representable number per (query, candidate, slot)."""
    return (zlib.crc32(repr(key).encode()) % 1000) / 8.0


def step5_row(q: str, c: str, label: float = 0.5, dim: int = DIM, **extra) -> dict:
    row = {"query_id": q, "candidate_id": c, "compliance_score": label,
           "clip_img_features": [_value(q, c, "img", j) for j in range(dim)],
           "clip_text_features": [_value(q, "text", j) for j in range(dim)]}
    for f in VISUAL + CONFLICT:
        row[f] = _value(q, c, f)
    row.update(extra)
    return row


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    frame = pd.DataFrame(rows)
    for col in frame.columns:
        if frame[col].map(lambda v: isinstance(v, list)).any():
            frame[col] = frame[col].map(json.dumps)
    frame.to_csv(path, index=False)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_same_data(a, b) -> None:
    np.testing.assert_array_equal(a.query_ids.astype(str), b.query_ids.astype(str))
    np.testing.assert_array_equal(a.queries.astype(str), b.queries.astype(str))
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.candidate_ids.astype(str), b.candidate_ids.astype(str))
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.features.keys() == b.features.keys()
    for k in a.features:
        assert a.features[k].dtype == np.float32
        np.testing.assert_array_equal(a.features[k], b.features[k], err_msg=k)
    assert sorted(a.extras.columns) == sorted(b.extras.columns)
    for col in a.extras.columns:
        assert a.extras[col].tolist() == b.extras[col].tolist(), col
    assert a.fingerprint() == b.fingerprint()


def expect_error(path: Path, line: int | None, field: str | None, problem: str = "", label: str = "line",
                 **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_dataset(path, **kwargs)
    err = info.value
    msg = str(err)
    assert str(path) in msg
    assert err.line == line, msg
    if line is not None:
        assert f"{label} {line}:" in msg
    assert err.field == field, msg
    if field is not None:
        assert f"'{field}'" in msg
    assert problem.lower() in msg.lower(), msg
    return err


def mixed_rows() -> list[dict]:
    """Two queries, interleaved in the file, with ranks that reorder them, plus extras."""
    return [
        step5_row("q1", "a", 0.9, first_stage_rank=2, query="red drink", source="s1"),
        step5_row("q2", "x", 0.1, first_stage_rank=1, query="blue drink", source="s2"),
        step5_row("q1", "b", 0.2, first_stage_rank=1, query="red drink", source="s3"),
        step5_row("q2", "y", 1.0, first_stage_rank=3, query="blue drink", source="s4"),
        step5_row("q1", "c", 0.0, first_stage_rank=3, query="red drink", source="s5"),
        step5_row("q2", "z", 0.5, first_stage_rank=2, query="blue drink", source="s6"),
    ]


# ---------- Step5: formats agree, order, grouping, extras ----------

def test_jsonl_csv_parquet_of_same_rows_load_identically(tmp_path):
    rows = mixed_rows()
    a = load_dataset(write_jsonl(tmp_path / "s.jsonl", rows))
    b = load_dataset(write_csv(tmp_path / "s.csv", rows))
    c = load_dataset(write_parquet(tmp_path / "s.parquet", rows))
    assert a.num_queries == 2 and a.num_candidates == 6
    assert a.token_dims == {"clip_img": DIM, "clip_text": DIM, "visual": 8, "conflict": 5}
    assert_same_data(a, b)
    assert_same_data(a, c)


def test_features_and_labels_follow_their_rows(tmp_path):
    rows = mixed_rows()
    data = load_dataset(write_jsonl(tmp_path / "s.jsonl", rows))
    by_id = {(r["query_id"], r["candidate_id"]): r for r in rows}
    for q in range(data.num_queries):
        for i in range(*data.rows(q).indices(data.num_candidates)):
            r = by_id[(data.query_ids[q], data.candidate_ids[i])]
            assert data.labels[i] == np.float32(r["compliance_score"])
            np.testing.assert_array_equal(data.features["clip_img"][i], np.float32(r["clip_img_features"]))
            np.testing.assert_array_equal(data.features["visual"][i], np.float32([r[f] for f in VISUAL]))
            np.testing.assert_array_equal(data.features["conflict"][i], np.float32([r[f] for f in CONFLICT]))


def test_original_order_from_first_stage_rank(tmp_path):
    data = load_dataset(write_jsonl(tmp_path / "s.jsonl", mixed_rows()))
    assert data.report.order_from == "first_stage_rank"
    assert data.candidate_ids.tolist() == ["b", "a", "c", "x", "z", "y"]
    assert data.offsets.tolist() == [0, 3, 6]


def test_original_order_from_first_stage_score_descending(tmp_path):
    rows = [step5_row("q1", "a", first_stage_score=0.2), step5_row("q1", "b", first_stage_score=0.9),
            step5_row("q1", "c", first_stage_score=-1.0), step5_row("q1", "d", first_stage_score=0.5)]
    data = load_dataset(write_jsonl(tmp_path / "s.jsonl", rows))
    assert data.report.order_from.startswith("first_stage_score")
    assert data.candidate_ids.tolist() == ["b", "d", "a", "c"]


def test_rank_wins_over_score(tmp_path):
    rows = [step5_row("q1", "a", first_stage_rank=2, first_stage_score=0.9),
            step5_row("q1", "b", first_stage_rank=1, first_stage_score=0.1)]
    data = load_dataset(write_jsonl(tmp_path / "s.jsonl", rows))
    assert data.candidate_ids.tolist() == ["b", "a"]


def test_original_order_from_file_order_without_rank_or_score(tmp_path):
    rows = [step5_row("q1", c) for c in ["m", "k", "z", "a"]]
    data = load_dataset(write_jsonl(tmp_path / "s.jsonl", rows))
    assert data.report.order_from == "file order"
    assert data.candidate_ids.tolist() == ["m", "k", "z", "a"]


def test_rank_ties_keep_file_order(tmp_path):
    rows = [step5_row("q1", "a", first_stage_rank=2), step5_row("q1", "b", first_stage_rank=1),
            step5_row("q1", "c", first_stage_rank=1)]
    data = load_dataset(write_jsonl(tmp_path / "s.jsonl", rows))
    assert data.candidate_ids.tolist() == ["b", "c", "a"]


def test_non_contiguous_queries_are_grouped_in_first_appearance_order(tmp_path):
    rows = [step5_row("q9", "a"), step5_row("q1", "b"), step5_row("q9", "c"), step5_row("q5", "d"),
            step5_row("q1", "e"), step5_row("q5", "f"), step5_row("q9", "g")]
    data = load_dataset(write_jsonl(tmp_path / "s.jsonl", rows))
    assert data.query_ids.tolist() == ["q9", "q1", "q5"]
    assert data.offsets.tolist() == [0, 3, 5, 7]
    assert data.candidate_ids.tolist() == ["a", "c", "g", "b", "e", "d", "f"]


def test_extras_and_query_text_kept_aligned_with_rows(tmp_path):
    data = load_dataset(write_jsonl(tmp_path / "s.jsonl", mixed_rows()))
    assert data.queries.tolist() == ["red drink", "blue drink"]
    assert "source" in data.extras and "first_stage_rank" in data.extras
    assert len(data.extras) == data.num_candidates
    # row i of extras belongs to candidate i
    expected = {"a": "s1", "x": "s2", "b": "s3", "y": "s4", "c": "s5", "z": "s6"}
    assert data.extras["source"].tolist() == [expected[c] for c in data.candidate_ids]
    for col in ("query_id", "candidate_id", "compliance_score", "clip_img_features", "brightness", "_line"):
        assert col not in data.extras


def test_parquet_extra_list_of_strings_is_kept(tmp_path):
    rows = [step5_row("q1", "a", tags=["x", "y"]), step5_row("q1", "b", tags=["z"])]
    data = load_dataset(write_parquet(tmp_path / "s.parquet", rows))
    assert [list(t) for t in data.extras["tags"]] == [["x", "y"], ["z"]]


def test_numeric_ids_match_across_formats(tmp_path):
    rows = [step5_row(7, 1), step5_row(7, 2), step5_row(8, 1), step5_row(8, 2)]
    a = load_dataset(write_jsonl(tmp_path / "s.jsonl", rows))
    b = load_dataset(write_csv(tmp_path / "s.csv", rows))
    assert a.query_ids.tolist() == ["7", "8"] == b.query_ids.tolist()
    assert_same_data(a, b)


def test_blank_lines_in_jsonl_are_skipped_and_line_numbers_stay_true(tmp_path):
    lines = [json.dumps(step5_row("q1", "a")), "", "   ", json.dumps(step5_row("q1", "b", brightness="high"))]
    expect_error(write_lines(tmp_path / "s.jsonl", lines), 4, "brightness", "not a number")


def test_spec_dim_is_enforced_and_custom_spec_selects_fields(tmp_path):
    spec = FeatureSpec.from_dict({"name": "tiny", "format": "step5", "tokens": [
        {"name": "img", "fields": ["clip_img_features"], "dim": 3},
        {"name": "vis", "fields": ["brightness", "contrast"]}]})
    rows = [step5_row("q1", "a", dim=3), step5_row("q1", "b", dim=3)]
    data = load_dataset(write_jsonl(tmp_path / "ok.jsonl", rows), spec=spec)
    assert data.token_dims == {"img": 3, "vis": 2}
    # clip_text_features and the other scalars are not in the spec: they are extras
    assert "clip_text_features" in data.extras and "saturation" in data.extras
    bad = write_jsonl(tmp_path / "bad.jsonl", [step5_row("q1", "a", dim=4), step5_row("q1", "b", dim=4)])
    expect_error(bad, 1, "clip_img_features", "length 4, expected 3", spec=spec)


# ---------- Step5: bad input -> one DataError naming line and field ----------

def _jsonl_lines(n: int = 3) -> list[str]:
    return [json.dumps(step5_row("q1", f"c{i}")) for i in range(n)]


def test_malformed_json_line(tmp_path):
    lines = _jsonl_lines()
    lines[1] = lines[1][:-5]
    expect_error(write_lines(tmp_path / "s.jsonl", lines), 2, None, "malformed JSON")


@pytest.mark.parametrize("text", ["[1, 2]", "42", '"a string"', "null"])
def test_non_object_json_line(tmp_path, text):
    lines = _jsonl_lines()
    lines[2] = text
    expect_error(write_lines(tmp_path / "s.jsonl", lines), 3, None, "expected a JSON object")


def test_missing_field(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    del rows[1]["contrast"]
    expect_error(write_jsonl(tmp_path / "s.jsonl", rows), 2, "contrast", "missing")


def test_field_missing_on_every_line(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    for r in rows:
        del r["clip_text_features"]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    expect_error(path, 1, "clip_text_features", "missing", spec=builtin_spec("step5"))
    # without a spec the file gets one inferred from its fields (data/infer.py), without that token
    assert "clip_text" not in load_dataset(path, min_candidates=1).spec.token_names


@pytest.mark.parametrize("field", ["query_id", "candidate_id", "compliance_score", "clip_img_features", "hue_variance"])
def test_null_field(tmp_path, field):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    rows[2][field] = None
    expect_error(write_jsonl(tmp_path / "s.jsonl", rows), 3, field, "null")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_literal_in_scalar(tmp_path, literal):
    lines = _jsonl_lines()
    lines[1] = lines[1].replace('"saturation": ', f'"saturation": {literal}, "was": ')
    expect_error(write_lines(tmp_path / "s.jsonl", lines), 2, "saturation", literal)


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_nan_or_infinity_literal_inside_vector(tmp_path, literal):
    lines = _jsonl_lines()
    row = step5_row("q1", "c2")
    row["clip_img_features"] = [1.0, 2.0, "@@", 4.0]
    lines[2] = json.dumps(row).replace('"@@"', literal)
    expect_error(write_lines(tmp_path / "s.jsonl", lines), 3, "clip_img_features", literal)


def test_huge_number_overflowing_to_infinity(tmp_path):
    lines = _jsonl_lines()
    lines[0] = lines[0].replace('"contrast": ', '"contrast": 1e999, "was": ')
    expect_error(write_lines(tmp_path / "s.jsonl", lines), 1, "contrast", "infinite")


@pytest.mark.parametrize("value", ["high", "", [1.0, 2.0], {"a": 1}, True])
def test_wrong_type_where_number_expected(tmp_path, value):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    rows[1]["edge_density"] = value
    err = expect_error(write_jsonl(tmp_path / "s.jsonl", rows), 2, "edge_density")
    assert "number" in err.problem


def test_string_label(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    rows[2]["compliance_score"] = "good"
    expect_error(write_jsonl(tmp_path / "s.jsonl", rows), 3, "compliance_score", "not a number")


def test_wrong_vector_length_after_first_line_sets_it(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(4)]
    rows[2]["clip_img_features"] = [0.0] * (DIM + 1)
    expect_error(write_jsonl(tmp_path / "s.jsonl", rows), 3, "clip_img_features", f"length {DIM + 1}, expected {DIM}")


def test_non_number_inside_vector(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    rows[1]["clip_text_features"] = [0.0, "x", 0.0, 0.0]
    expect_error(write_jsonl(tmp_path / "s.jsonl", rows), 2, "clip_text_features", "not a number")


def test_scalar_where_vector_expected(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    rows[1]["clip_img_features"] = 0.5
    expect_error(write_jsonl(tmp_path / "s.jsonl", rows), 2, "clip_img_features", "expected a vector")


@pytest.mark.parametrize("label", [1.5, -0.1])
def test_label_out_of_range(tmp_path, label):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    rows[1]["compliance_score"] = label
    expect_error(write_jsonl(tmp_path / "s.jsonl", rows), 2, "compliance_score", "out of range")


def test_duplicate_candidate_names_the_second_occurrence(tmp_path):
    rows = [step5_row("q1", "a"), step5_row("q2", "a"), step5_row("q1", "b"), step5_row("q1", "a"),
            step5_row("q2", "b")]
    expect_error(write_jsonl(tmp_path / "s.jsonl", rows), 4, "candidate_id", "duplicate candidate 'a' in query 'q1'")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_jsonl_file(tmp_path, text):
    path = tmp_path / "s.jsonl"
    path.write_text(text)
    expect_error(path, None, None, "no candidates")


def test_empty_csv_files(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    expect_error(empty, None, None, "empty")
    header_only = tmp_path / "h.csv"
    header_only.write_text("query_id,candidate_id,compliance_score\n")
    expect_error(header_only, None, None, "no candidates")


def test_empty_parquet_file(tmp_path):
    path = tmp_path / "s.parquet"
    pd.DataFrame(columns=["query_id", "candidate_id", "compliance_score"]).to_parquet(path)
    expect_error(path, None, None, "no candidates")


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "s.jsonl"
    good = json.dumps(step5_row("q1", "a")).encode()
    path.write_bytes(good + b"\n" + good + b"\n" + b'{"query_id": "\xff\xfe"}\n')
    expect_error(path, 3, None, "UTF-8")


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(_l + "\n" for _l in _jsonl_lines()).encode())
    assert load_dataset(path).num_candidates == 3


def test_csv_nan_inside_vector_cell(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    path = write_csv(tmp_path / "s.csv", rows)
    text = path.read_text().splitlines()
    text[3] = text[3].replace(f'"{json.dumps(rows[2]["clip_img_features"])}"', '"[0.5, NaN, 0.5, 0.5]"')
    assert "NaN" in text[3]
    write_lines(path, text)
    expect_error(path, 4, "clip_img_features", "NaN")  # header is line 1: third row is line 4


def test_csv_malformed_vector_cell(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    rows[1]["clip_text_features"] = "[0.5, 0.5"
    path = tmp_path / "s.csv"
    pd.DataFrame(rows).assign(
        clip_img_features=[json.dumps(r["clip_img_features"]) for r in rows],
        clip_text_features=[r["clip_text_features"] if isinstance(r["clip_text_features"], str)
                            else json.dumps(r["clip_text_features"]) for r in rows]).to_csv(path, index=False)
    expect_error(path, 3, "clip_text_features", "malformed vector")


def test_csv_blank_lines_keep_line_numbers_true(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    rows[2]["brightness"] = "dark"
    path = write_csv(tmp_path / "s.csv", rows)
    text = path.read_text().splitlines()
    text.insert(2, "")  # blank line 3: the bad row moves from line 4 to line 5
    write_lines(path, text)
    expect_error(path, 5, "brightness", "not a number")


def test_csv_string_in_numeric_column(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(4)]
    rows[3]["object_area"] = "big"
    expect_error(write_csv(tmp_path / "s.csv", rows), 5, "object_area", "not a number")


def test_parquet_nan_inside_vector_says_row(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    rows[1]["clip_img_features"] = [0.0, 0.0, float("nan"), 0.0]
    err = expect_error(write_parquet(tmp_path / "s.parquet", rows), 2, "clip_img_features", "element 2",
                       label="row")
    assert "line 2" not in str(err)


def test_parquet_null_vector_says_row(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    rows[2]["clip_text_features"] = None
    expect_error(write_parquet(tmp_path / "s.parquet", rows), 3, "clip_text_features", "null", label="row")


def test_parquet_wrong_vector_length_says_row(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    rows[2]["clip_img_features"] = [0.0] * 2
    expect_error(write_parquet(tmp_path / "s.parquet", rows), 3, "clip_img_features", "length 2", label="row")


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "s.parquet"
    path.write_bytes(b"not parquet at all")
    expect_error(path, None, None, "cannot read Parquet")


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="extension"):
        infer_format(tmp_path / "s.xlsx")
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "absent.jsonl")
    assert infer_format("a.JSONL") == "jsonl" and infer_format("b.txt") == "letor"


# ---------- small lists ----------

def test_one_item_lists_are_skipped_and_counted(tmp_path):
    rows = [step5_row("q1", "a"), step5_row("solo", "s"), step5_row("q1", "b"), step5_row("q2", "x"),
            step5_row("q2", "y"), step5_row("alone", "t")]
    data = load_dataset(write_jsonl(tmp_path / "s.jsonl", rows))
    assert data.query_ids.tolist() == ["q1", "q2"]
    assert data.candidate_ids.tolist() == ["a", "b", "x", "y"]
    assert len(data.extras) == 4
    r = data.report
    assert (r.lines, r.queries_kept, r.candidates_kept, r.queries_skipped, r.candidates_skipped) == (6, 2, 4, 2, 2)
    assert sum(r.skip_reasons.values()) == 2
    assert "skipped 2 queries" in str(r)


def test_one_item_list_rejected_names_its_line(tmp_path):
    rows = [step5_row("q1", "a"), step5_row("q1", "b"), step5_row("solo", "s")]
    expect_error(write_jsonl(tmp_path / "s.jsonl", rows), 3, "query_id", "'solo' has 1 candidate",
                 on_small_list="reject")


def test_min_candidates_threshold(tmp_path):
    rows = [step5_row("q1", c) for c in "ab"] + [step5_row("q2", c) for c in "xyz"]
    data = load_dataset(write_jsonl(tmp_path / "s.jsonl", rows), min_candidates=3)
    assert data.query_ids.tolist() == ["q2"] and data.report.candidates_skipped == 2


def test_all_lists_too_small_is_an_error_not_an_empty_dataset(tmp_path):
    # 0 queries used to load "fine" and fail only in training (need at least one array to concatenate)
    path = write_jsonl(tmp_path / "s.jsonl", [step5_row("q1", "a"), step5_row("q2", "b")])
    expect_error(path, 1, "query_id", "no query has at least 2 candidates")
    assert load_dataset(path, min_candidates=1).num_queries == 2  # scoring (rerank) keeps single candidates


# ---------- LETOR ----------

def test_letor_dense_and_sparse_parse_identically(tmp_path):
    dense = ["2 qid:10 1:0.5 2:0 3:1.5 4:0 5:2 #docid = D1 inc = 1 prob = 0.3",
             "0 qid:10 1:0 2:0 3:0 4:0 5:0 #docid = D2 inc = 1 prob = 0.1",
             "1 qid:11 1:1 2:2 3:3 4:4 5:5 #docid = D3",
             "0 qid:11 1:0 2:0.25 3:0 4:0 5:0 #docid = D4"]
    sparse = ["2 qid:10 1:0.5 3:1.5 5:2 #docid = D1 inc = 1 prob = 0.3",
              "0 qid:10 5:0 #docid = D2 inc = 1 prob = 0.1",
              "1 qid:11 5:5 4:4 3:3 2:2 1:1 #docid = D3",
              "0 qid:11 2:0.25 #docid = D4"]
    a = load_dataset(write_lines(tmp_path / "dense.txt", dense))
    b = load_dataset(write_lines(tmp_path / "sparse.txt", sparse))
    assert_same_data(a, b)
    assert a.candidate_ids.tolist() == ["D1", "D2", "D3", "D4"]
    assert a.query_ids.tolist() == ["10", "11"]
    assert a.labels.tolist() == [2, 0, 1, 0]
    assert a.token_dims == {"f1_5": 5}
    np.testing.assert_array_equal(a.features["f1_5"][0], np.float32([0.5, 0, 1.5, 0, 2]))
    np.testing.assert_array_equal(b.features["f1_5"][3], np.float32([0, 0.25, 0, 0, 0]))


def test_letor_without_comment_gets_line_ids_and_comment_lines_are_skipped(tmp_path):
    lines = ["# a header comment", "1 qid:1 1:1 2:2", "0 qid:1 1:3 2:4"]
    data = load_dataset(write_lines(tmp_path / "s.txt", lines))
    assert data.candidate_ids.tolist() == ["line2", "line3"]
    assert data.report.order_from == "file order"


def test_letor_comment_with_hash_text_is_not_parsed_as_features(tmp_path):
    lines = ["1 qid:1 1:1 #docid = A 9:9", "0 qid:1 1:2 #docid = B x:y"]
    data = load_dataset(write_lines(tmp_path / "s.txt", lines))
    assert data.spec.num_features == 1 and data.candidate_ids.tolist() == ["A", "B"]


@pytest.mark.parametrize("bad", ["1 1:0.5 2:0.1", "1 qid: 1:0.5", "1 QID:3 1:0.5", "1"])
def test_letor_bad_qid(tmp_path, bad):
    lines = ["1 qid:1 1:0.5 2:0.1", "0 qid:1 1:0.5 2:0.1", bad]
    expect_error(write_lines(tmp_path / "s.txt", lines), 3, "qid", "qid")


@pytest.mark.parametrize("item", ["3=0.5", "x:1", "0:1", "-1:2", ":4"])
def test_letor_bad_index_value_pair(tmp_path, item):
    lines = ["1 qid:1 1:0.5 2:0.1", f"0 qid:1 1:0.5 {item}"]
    expect_error(write_lines(tmp_path / "s.txt", lines), 2, item, "<index>:<value>")


def test_letor_duplicate_feature_index(tmp_path):
    lines = ["1 qid:1 1:0.5 2:0.1", "0 qid:1 1:0.5 2:0.1 1:0.7"]
    expect_error(write_lines(tmp_path / "s.txt", lines), 2, "feature 1", "twice")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity"])
def test_letor_nan_or_infinite_value(tmp_path, value):
    lines = ["1 qid:1 1:0.5 2:0.1", "0 qid:1 1:0.5 2:0.1", f"0 qid:2 1:1 2:{value}"]
    expect_error(write_lines(tmp_path / "s.txt", lines), 3, "feature 2", "NaN or infinite")


def test_letor_value_not_a_number(tmp_path):
    lines = ["1 qid:1 1:0.5 2:abc", "0 qid:1 1:0.5 2:0.1"]
    expect_error(write_lines(tmp_path / "s.txt", lines), 1, "feature 2", "not a number")


def test_letor_bad_label(tmp_path):
    lines = ["1 qid:1 1:0.5", "high qid:1 1:0.5"]
    expect_error(write_lines(tmp_path / "s.txt", lines), 2, "label", "not a number")


def test_letor_fractional_grade_without_spec(tmp_path):
    lines = ["1 qid:1 1:0.5", "0.5 qid:1 1:0.5"]
    expect_error(write_lines(tmp_path / "s.txt", lines), 2, "label", "integers")


def test_letor_grade_outside_spec_range(tmp_path):
    lines = ["1 qid:1 1:0.5", "3 qid:1 1:0.5"]
    expect_error(write_lines(tmp_path / "s.txt", lines), 2, "label", "out of range", spec=builtin_spec("mq2008"))


def test_letor_index_beyond_spec_names_the_offending_line_and_index(tmp_path):
    lines = ["1 qid:1 1:0.5 46:1", "0 qid:1 1:0.5 47:1", "0 qid:1 1:0.5 90:1"]
    expect_error(write_lines(tmp_path / "s.txt", lines), 2, "feature 47", "46 features", spec=builtin_spec("mq2008"))


def test_letor_duplicate_docid_in_a_query(tmp_path):
    lines = ["1 qid:1 1:0.5 #docid = A", "0 qid:2 1:0.5 #docid = A", "0 qid:1 1:0.7 #docid = A"]
    expect_error(write_lines(tmp_path / "s.txt", lines), 3, "candidate_id", "duplicate")


def test_letor_empty_file(tmp_path):
    expect_error(write_lines(tmp_path / "s.txt", ["# only a comment", ""]), None, None, "no candidates")


def test_letor_sparse_file_with_spec_pads_missing_high_indices(tmp_path):
    lines = ["2 qid:1 1:1 3:3 #docid = A", "0 qid:1 41:7 #docid = B"]
    data = load_dataset(write_lines(tmp_path / "s.txt", lines), spec=builtin_spec("mq2008"))
    assert data.token_dims == {"body": 8, "anchor": 8, "title": 8, "url": 8, "document": 8, "link_page": 6}
    np.testing.assert_array_equal(data.features["body"][0], np.float32([1, 0, 0, 0, 0, 0, 0, 0]))
    np.testing.assert_array_equal(data.features["title"][0], np.float32([3, 0, 0, 0, 0, 0, 0, 0]))
    np.testing.assert_array_equal(data.features["link_page"][1], np.float32([7, 0, 0, 0, 0, 0]))


def test_default_letor_spec_when_none_given(tmp_path):
    lines = [f"{g} qid:{q} " + " ".join(f"{i}:{i * 0.5}" for i in range(1, 21)) for q, g in
             [(1, 0), (1, 3), (2, 1), (2, 0)]]
    data = load_dataset(write_lines(tmp_path / "s.txt", lines))
    spec = data.spec
    assert spec.format == "letor" and spec.num_features == 20 and spec.label_field == "label"
    assert spec.label_max == 3.0
    assert [t.indices for t in spec.tokens] == [tuple(range(1, 17)), tuple(range(17, 21))]
    assert data.token_dims == {"f1_16": 16, "f17_20": 4}
    np.testing.assert_array_equal(data.features["f17_20"][0], np.float32([8.5, 9, 9.5, 10]))


# ---------- real benchmark files ----------

def _shared(*parts: str) -> Path:
    path = shared_datasets_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared benchmark file {path} is not available on this machine")
    return path


def test_real_mq2008_s5_loads_with_mq2008_spec():
    data = load_dataset(_shared("mq2008", "S5.txt"), spec=builtin_spec("mq2008"))
    assert data.num_queries == 156 and data.num_candidates == 2874
    assert data.token_dims == {"body": 8, "anchor": 8, "title": 8, "url": 8, "document": 8, "link_page": 6}
    assert set(np.unique(data.labels).tolist()) <= {0.0, 1.0, 2.0}
    assert data.report.queries_skipped == 0
    assert data.candidate_ids[0].startswith("GX")
    assert all(math.isfinite(v) for v in data.features["body"].ravel()[:1000])
    assert int(data.list_lengths.sum()) == 2874 and data.list_lengths.min() >= 2


def test_real_mq2008_without_spec_gets_default_46_feature_spec():
    data = load_dataset(_shared("mq2008", "S5.txt"))
    assert data.spec.num_features == 46
    assert sum(data.token_dims.values()) == 46
    assert data.num_candidates == 2874


def test_real_mslr_tiny_loads_with_136_features():
    path = _shared("mslr_web_tiny_sample", "search_tiny_train.txt")
    data = load_dataset(path)
    assert data.spec.num_features == 136 and sum(data.token_dims.values()) == 136
    spec_data = load_dataset(path, spec=builtin_spec("mslr136"))
    assert sum(spec_data.token_dims.values()) == 136
    assert spec_data.num_candidates == data.num_candidates and spec_data.num_queries == 7
    assert set(np.unique(spec_data.labels).tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}


# ---------- property: random valid frames round-trip through JSONL and Parquet ----------

_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=6)


@st.composite
def step5_frames(draw):
    n_queries = draw(st.integers(1, 5))
    qids = draw(st.lists(_ids, min_size=n_queries, max_size=n_queries, unique=True))
    order = draw(st.sampled_from(["rank", "score", "file"]))
    rows = []
    for q in qids:
        n = draw(st.integers(2, 8))
        cids = draw(st.lists(_ids, min_size=n, max_size=n, unique=True))
        ranks = draw(st.permutations(list(range(1, n + 1))))
        for c, rank in zip(cids, ranks):
            label = draw(st.floats(0, 1, allow_nan=False, width=32))
            row = step5_row(q, c, label)
            if order == "rank":
                row["first_stage_rank"] = rank
            elif order == "score":
                row["first_stage_score"] = float(-rank)  # distinct: descending score = ascending rank
            rows.append(row)
    perm = draw(st.permutations(list(range(len(rows)))))
    return [rows[i] for i in perm], order


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=step5_frames())
def test_random_frames_round_trip_and_every_row_lands_once_in_original_order(tmp_path, case):
    rows, order = case
    a = load_dataset(write_jsonl(tmp_path / "p.jsonl", rows))
    b = load_dataset(write_parquet(tmp_path / "p.parquet", rows))
    assert_same_data(a, b)

    # every input row lands in exactly one query
    assert a.num_candidates == len(rows)
    placed = {}
    for q in range(a.num_queries):
        for i in range(a.offsets[q], a.offsets[q + 1]):
            key = (a.query_ids[q], a.candidate_ids[i])
            assert key not in placed
            placed[key] = i
    assert set(placed) == {(r["query_id"], r["candidate_id"]) for r in rows}
    # queries in first-appearance order, candidates in the original order
    first_seen = list(dict.fromkeys(r["query_id"] for r in rows))
    assert a.query_ids.tolist() == first_seen
    for q, qid in enumerate(first_seen):
        mine = [r for r in rows if r["query_id"] == qid]
        if order == "rank":
            mine.sort(key=lambda r: r["first_stage_rank"])
        elif order == "score":
            mine.sort(key=lambda r: -r["first_stage_score"])
        got = a.candidate_ids[a.rows(q)].tolist()
        assert got == [r["candidate_id"] for r in mine]
        np.testing.assert_array_equal(a.labels[a.rows(q)], np.float32([r["compliance_score"] for r in mine]))


def test_csv_row_of_empty_cells_is_an_error_not_dropped(tmp_path):
    rows = [step5_row("q1", f"c{i}") for i in range(3)]
    path = write_csv(tmp_path / "s.csv", rows)
    text = path.read_text().splitlines()
    text.insert(3, "," * (len(rows[0]) - 1))
    write_lines(path, text)
    expect_error(path, 4, "query_id", "missing")


def test_text_mentioning_nan_is_not_a_nan_literal(tmp_path):
    rows = [step5_row("q1", "a", query="NaN Infinity sour"), step5_row("q1", "b", query="NaN Infinity sour")]
    data = load_dataset(write_jsonl(tmp_path / "s.jsonl", rows))
    assert data.queries.tolist() == ["NaN Infinity sour"]


def test_scoring_only_input_may_omit_labels_when_asked(tmp_path):
    rows = [step5_row("q1", c) for c in ("a", "b", "c")]
    for r in rows:
        del r["compliance_score"]
    path = write_jsonl(tmp_path / "unlabelled.jsonl", rows)
    with pytest.raises(DataError, match="compliance_score"):
        load_dataset(path)
    data = load_dataset(path, require_labels=False)
    assert data.num_candidates == 3 and (data.labels == data.spec.label_min).all()
