"""One answer on every path (issue 28): the whole-file load, the streamed cache build, and the columnar
JSONL fast path against the precise line-by-line reader, case by case on the fuzz suite's inputs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cotrr_core.data import DataError, columnar, load_dataset, loaders, stream
from cotrr_core.data.spec import builtin_spec
from tests.data.test_bad_input import EXT, FUZZ, _encode, base_rows, damaged_files, step5_case

STEP5 = builtin_spec("step5")


def _outcome(fn):
    """('error', message) or ('ok', fingerprint, extras) of one load."""
    try:
        data = fn()
    except DataError as err:
        return ("error", str(err))
    data.stored_fingerprint = None  # hash what was read, not what the cache stored
    return ("ok", data.fingerprint(), data.num_queries, data.extras.reset_index(drop=True))


def _same(a, b, what: str) -> None:
    assert a[0] == b[0], f"{what}: {a[:2]} vs {b[:2]}"
    if a[0] == "error":
        assert a[1] == b[1], what
    else:
        assert a[1:3] == b[1:3], what
        pd.testing.assert_frame_equal(a[3], b[3], check_dtype=False, obj=what)


def _precise_only(monkeypatch) -> None:
    def miss(*_a, **_k):
        raise columnar.FastPathMiss("forced")
    monkeypatch.setattr(loaders, "fast_jsonl_table", miss)
    monkeypatch.setattr(stream, "fast_jsonl_chunks", miss)
    monkeypatch.setattr(stream, "fast_parquet_chunks", miss)


def agree(fmt: str, content: bytes, tmp_path: Path, monkeypatch) -> None:
    """Whole-file and streamed loads give the same outcome; JSONL also fast vs precise, Parquet's streamed
    build too."""
    path = tmp_path / f"case.{EXT[fmt]}"
    path.write_bytes(content)
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))
    whole = _outcome(lambda: load_dataset(path, spec=STEP5))
    streamed = _outcome(lambda: stream.cached_dataset(path, STEP5))
    _same(whole, streamed, f"{fmt} whole vs streamed")
    if fmt == "jsonl":
        with monkeypatch.context() as m:
            _precise_only(m)
            _same(whole, _outcome(lambda: load_dataset(path, spec=STEP5)), "jsonl fast vs precise (whole)")
            path.touch()  # a new cache key: the streamed build runs again, precise only
            _same(streamed, _outcome(lambda: stream.cached_dataset(path, STEP5)), "jsonl fast vs precise (stream)")
    if fmt == "parquet":
        with monkeypatch.context() as m:
            _precise_only(m)
            path.touch()
            _same(streamed, _outcome(lambda: stream.cached_dataset(path, STEP5)), "parquet fast vs precise (stream)")


def _streamable_bad():
    return st.one_of(step5_case("jsonl"), step5_case("parquet"))


@settings(max_examples=120, **FUZZ)
@given(case=_streamable_bad())
def test_fuzzed_bad_input_same_error_on_every_path(tmp_path, monkeypatch, case):
    agree(case.fmt, case.content, tmp_path, monkeypatch)


@settings(max_examples=120, **FUZZ)
@given(case=damaged_files().filter(lambda c: c[0] in ("jsonl", "parquet")))
def test_damaged_files_same_outcome_on_every_path(tmp_path, monkeypatch, case):
    agree(*case, tmp_path, monkeypatch)


@pytest.mark.slow
@settings(max_examples=3000, **FUZZ)
@given(case=_streamable_bad())
def test_fuzzed_bad_input_same_error_on_every_path_3k(tmp_path, monkeypatch, case):
    agree(case.fmt, case.content, tmp_path, monkeypatch)


@pytest.mark.slow
@settings(max_examples=3000, **FUZZ)
@given(case=damaged_files().filter(lambda c: c[0] in ("jsonl", "parquet")))
def test_damaged_files_same_outcome_on_every_path_3k(tmp_path, monkeypatch, case):
    agree(*case, tmp_path, monkeypatch)


# valid JSONL with the values the two readers could read differently
_EDGE_VALUES = st.sampled_from([0, -0.0, 1, 2**53 + 1, 2**60, 1e-400, 5e-324, 3.4028234663852886e38, 1.0000001,
                                0.1, 1e-45, 123456789.123456789, -7])


@settings(max_examples=60, **FUZZ)
@given(seed=st.integers(0, 2**32 - 1), edits=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(
    ["brightness", "first_stage_rank", "clip_img_features", "candidate_id", "query", "extra"]), _EDGE_VALUES),
    max_size=4))
def test_valid_jsonl_reads_the_same_fast_and_precise(tmp_path, monkeypatch, seed, edits):
    rows = base_rows(seed, 2, 3, 2)
    for r, field, value in edits:
        if field == "clip_img_features":
            rows[r][field] = [value, rows[r][field][1]]
        elif field == "candidate_id":
            rows[r][field] = f"c{r}\u0000" if isinstance(value, float) else rows[r][field]
        elif field == "extra":
            rows[r]["note"] = value
        else:
            rows[r][field] = value
    agree("jsonl", _encode("jsonl", rows, 0, None, "valid").content, tmp_path, monkeypatch)


def test_the_fast_path_is_taken_for_a_valid_file(tmp_path, monkeypatch):
    """Not a test that cannot fail: a valid file must not silently drop to the precise reader."""
    path = tmp_path / "ok.jsonl"
    path.write_bytes(_encode("jsonl", base_rows(3, 2, 3, 2), 0, None, "valid").content)

    def precise(*_a, **_k):
        raise AssertionError("precise reader used for a valid file")
    monkeypatch.setattr(loaders, "jsonl_chunks", precise)
    monkeypatch.setattr(stream, "jsonl_chunks", precise)
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))
    assert load_dataset(path, spec=STEP5).num_candidates == 6
    assert stream.cached_dataset(path, STEP5).num_candidates == 6


@pytest.mark.parametrize("text", ['{"a": 1}{"a": 2}', '{"a": 1}\n\n{"a": 2}', ' {"a": 1}', '{"a": NaN}'])
def test_lines_pyarrow_reads_differently_are_not_vouched_for(tmp_path, text):
    path = tmp_path / "x.jsonl"
    path.write_text(text + "\n")
    with pytest.raises(columnar.FastPathMiss):
        columnar.fast_jsonl_table(path)


def test_a_bad_value_after_the_fast_path_gets_the_precise_error(tmp_path):
    rows = base_rows(1, 2, 3, 2)
    rows[4]["brightness"] = True
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_encode("jsonl", rows, 0, None, "valid").content)
    with pytest.raises(DataError, match=r"bad.jsonl: line 5: field 'brightness': expected a number, got a boolean"):
        load_dataset(path, spec=STEP5)


# ---------- ids kept exactly as given, or refused with one error on every path ----------

def _id_rows(**changes):
    rows = base_rows(5, 2, 3, 2)
    for r, (field, value) in changes.items():
        rows[int(r[1:])][field] = value
    return rows


@pytest.mark.parametrize("changes, line, words", [
    ({"r2": ("candidate_id", " c2")}, 3, "leading or trailing whitespace"),
    ({"r1": ("query_id", "   ")}, 2, "leading or trailing whitespace"),
    ({"r4": ("query_id", "[1, 2]")}, 5, "looks like a list"),
    ({"r3": ("candidate_id", 1.0)}, 4, "got float"),
])
def test_bad_ids_get_the_same_error_from_every_format_and_path(tmp_path, monkeypatch, changes, line, words):
    rows = _id_rows(**changes)
    for fmt in ("jsonl", "csv", "parquet"):
        if fmt != "jsonl" and isinstance(next(iter(changes.values()))[1], float):
            continue  # CSV cells are text; a float column in Parquet: checked below
        path = tmp_path / f"ids.{EXT[fmt]}"
        path.write_bytes(_encode(fmt, rows, 0, None, "ids").content)
        at = f"row {line}" if fmt == "parquet" else f"line {line + (fmt == 'csv')}"  # CSV: a header line first
        with pytest.raises(DataError, match=rf"{at}: .*{words}"):
            load_dataset(path, spec=STEP5)
        if fmt != "csv":
            (tmp_path / fmt).mkdir()
            agree(fmt, path.read_bytes(), tmp_path / fmt, monkeypatch)


def test_integer_ids_stay_integers_when_another_id_is_text(tmp_path):
    rows = _id_rows(r0=("candidate_id", 2**60 + 1), r1=("candidate_id", 2**60 + 2))
    path = tmp_path / "ids.jsonl"
    path.write_bytes(_encode("jsonl", rows, 0, None, "ids").content)
    ids = set(load_dataset(path, spec=STEP5).candidate_ids)
    assert {str(2**60 + 1), str(2**60 + 2)} <= ids


def test_csv_true_is_the_text_true_as_in_jsonl(tmp_path):
    rows = _id_rows(r0=("query_id", "True"), r1=("query_id", "True"), r2=("query_id", "True"))
    a = load_dataset(_write(tmp_path / "t.jsonl", _encode("jsonl", rows, 0, None, "ids").content), spec=STEP5)
    b = load_dataset(_write(tmp_path / "t.csv", _encode("csv", rows, 0, None, "ids").content), spec=STEP5)
    assert "True" in set(a.query_ids) and list(a.query_ids) == list(b.query_ids)


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_letor_qid_written_two_ways_is_refused(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("1 qid:1 1:0.5\n0 qid:1 1:0.1\n1 qid:01 1:0.3\n0 qid:2 1:0.2\n")
    with pytest.raises(DataError, match=r"line 3: field 'qid': qid:01 and qid:1"):
        load_dataset(path)


def test_a_parquet_map_column_is_one_data_error_on_both_paths(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.data.test_bad_input import parquet_columns

    rows = base_rows(2, 2, 3, 2)
    table = pa.table(parquet_columns(rows))
    table = table.append_column("m", pa.array([[("a", 1)]] * len(rows), pa.map_(pa.string(), pa.int64())))
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    agree("parquet", buf.getvalue().to_pybytes(), tmp_path, monkeypatch)
    with pytest.raises(DataError, match="field 'm': .*maps are not supported"):
        load_dataset(tmp_path / "case.parquet", spec=STEP5)
