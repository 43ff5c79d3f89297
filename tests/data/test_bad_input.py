"""Fuzzed bad input across JSONL, CSV, Parquet and LETOR (issue 13).

Every generated input carries exactly one defect at a known place. Loading it must raise DataError
naming the file, the line (Parquet: row) and the field: never another exception type, never a
silent accept. The default suite runs a fast sample; `-m slow` runs 10,000+ inputs.
"""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cotrr_core.data import DataError, load_dataset

VISUAL = ["subject_ratio", "object_area", "aspect_ratio", "brightness", "contrast", "saturation",
          "hue_variance", "edge_density"]
CONFLICT = ["color_delta_e", "temperature_conflict", "clarity_conflict", "garnish_mismatch",
            "overall_conflict_prob"]
SCALARS = VISUAL + CONFLICT + ["compliance_score", "first_stage_rank"]
EXT = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet", "letor": "txt"}
SEEN: Counter = Counter()  # (format, kind) -> inputs tried (printed at the end of the module with -s)


@dataclass
class Case:
    """A file with one defect: where it is (1-based line or row of the defect) and which field."""

    fmt: str
    content: bytes
    line: int | None
    field: str | None
    kind: str


# ---------- valid bases ----------

def base_rows(seed: int, n_queries: int, list_len: int, dim: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        text = rng.normal(size=dim).round(3).tolist()
        for c in range(list_len):
            row = {"query_id": f"q{q}", "candidate_id": f"c{c}", "compliance_score": round(float(rng.uniform(0, 1)), 3),
                   "first_stage_rank": c + 1, "clip_img_features": rng.normal(size=dim).round(3).tolist(),
                   "clip_text_features": list(text), "query": f"query {q}"}
            row.update({f: round(float(rng.uniform(0, 1)), 3) for f in VISUAL + CONFLICT})
            rows.append(row)
    return rows


def jsonl_bytes(rows: list[dict], raw: dict[int, str] | None = None) -> bytes:
    raw = raw or {}
    return "".join((raw[i] if i in raw else json.dumps(r)) + "\n" for i, r in enumerate(rows)).encode()


def csv_cell(v) -> str:
    return json.dumps(v) if isinstance(v, list) else ("" if v is None else str(v))


def csv_bytes(rows: list[dict], cells: dict[int, list[str]] | None = None) -> bytes:
    header = list(rows[0])
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for i, r in enumerate(rows):
        w.writerow((cells or {}).get(i, [csv_cell(r.get(h)) for h in header]))
    return out.getvalue().encode()


def parquet_bytes(columns: dict[str, pa.Array | list]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def parquet_columns(rows: list[dict]) -> dict:
    return {k: [r[k] for r in rows] for k in rows[0]}


def letor_lines(seed: int, n_queries: int, list_len: int, n_feat: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{int(rng.integers(0, 3))} qid:{q + 1} " + " ".join(f"{i}:{rng.uniform(0, 5):.3f}" for i in
                                                                 range(1, n_feat + 1)) + f" # docid = d{q}_{c}"
            for q in range(n_queries) for c in range(list_len)]


# ---------- the defects ----------

JSON_SCALAR_BAD = ["abc", "0.5", "1_0", "", True, False, [], [0.5], {"a": 1}, 1e39, -1e39, 3.5e38, 10**400, None]
JSON_LITERALS = ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 5000]
LABEL_BAD = [-0.5, 1.5, 1e300, 1.0000001]
CSV_SCALAR_BAD = ["", "abc", "1_0", "\u0661", "\u00b2", "True", "inf", "-Infinity", "nan", "NA", "1e39", "-1e39",
                  "1" + "0" * 400, "0x10", "1,5", " ", "--1", "1e", "2024-01-01", "[0.5]"]
LETOR_LABEL_BAD = ["1_0", "\u0661", "1e300", "-1", "0.5", "nan", "inf", "abc", "25", "+", "1e39"]
LETOR_ITEM_BAD = ["0:1", "-1:2", "\u00b2:1", "\u0661:1", "x:1", "1.5:1", ":1", "3=1", "20000:1", "100000000:1",
                  "1025:1"]
LETOR_VALUE_BAD = ["1_0", "nan", "inf", "-inf", "1e39", "-3.5e38", "abc", "", "0x1", "\u0661", "1e", "1" + "0" * 400]


def json_vector_bad(v: list, i: int) -> list[tuple[object, str]]:
    d = len(v)
    return [([], "vec-empty-row"), ([[x] for x in v], "vec-nested"), (v + [0.5], "vec-long"), (v[:-1], "vec-short"),
            ([True] * d, "vec-bool"), (["0.5"] * d, "vec-text"), ([None] * d, "vec-null"),
            ([1e39] + v[1:], "vec-f32"), ([10**400] + v[1:], "vec-bigint"), (0.5, "vec-scalar"),
            ({"a": 1}, "vec-dict"), ("[0.5, 0.5]", "vec-string"), ([v], "vec-nested2")][i]


@st.composite
def step5_case(draw, fmt: str) -> Case:
    seed = draw(st.integers(0, 2**32 - 1))
    nq, ll, dim = draw(st.integers(2, 3)), draw(st.integers(3, 4)), draw(st.integers(2, 3))
    rows = base_rows(seed, nq, ll, dim)
    n = len(rows)
    r = draw(st.integers(0, n - 1))
    not_first = draw(st.sampled_from([i for i in range(n) if i % ll]))
    first_line = {"jsonl": 1, "csv": 2, "parquet": 1}[fmt]
    line = r + first_line
    family = draw(st.sampled_from(["scalar", "label", "vector", "list_constant", "duplicate", "id", "structure",
                                   "single"]))
    if family == "scalar":
        f = draw(st.sampled_from(SCALARS))
        return _scalar_case(draw, fmt, rows, r, f, line)
    if family == "label":
        rows[r]["compliance_score"] = draw(st.sampled_from(LABEL_BAD))
        return _encode(fmt, rows, line, "compliance_score", "label-range")
    if family == "vector":
        return _vector_case(draw, fmt, rows, r, line)
    if family == "list_constant":
        rows[not_first]["clip_text_features"] = [x + 1.0 for x in rows[not_first]["clip_text_features"]]
        return _encode(fmt, rows, not_first + first_line, "clip_text_features", "list-constant")
    if family == "duplicate":
        rows[not_first]["candidate_id"] = rows[not_first - 1]["candidate_id"]
        return _encode(fmt, rows, not_first + first_line, "candidate_id", "duplicate")
    if family == "id":
        return _id_case(draw, fmt, rows, r, line, ll)
    if family == "single":
        for i, row in enumerate(rows):
            row["query_id"] = f"solo{i}"
        return _encode(fmt, rows, first_line, "query_id", "all-single")
    return _structure_case(draw, fmt, rows, r, line)


def _encode(fmt: str, rows: list[dict], line: int, field: str | None, kind: str) -> Case:
    if fmt == "jsonl":
        return Case(fmt, jsonl_bytes(rows), line, field, kind)
    if fmt == "csv":
        return Case(fmt, csv_bytes(rows), line, field, kind)
    return Case(fmt, parquet_bytes(parquet_columns(rows)), line, field, kind)


def _scalar_case(draw, fmt: str, rows: list[dict], r: int, f: str, line: int) -> Case:
    if fmt == "jsonl":
        if draw(st.booleans()):
            token = draw(st.sampled_from(JSON_LITERALS))
            text = json.dumps(rows[r]).replace(f'"{f}": ', f'"{f}": {token}, "was_{f}": ', 1)
            return Case(fmt, jsonl_bytes(rows, {r: text}), line, f, "json-literal")
        value = draw(st.sampled_from(JSON_SCALAR_BAD))
        if value is None and draw(st.booleans()):
            del rows[r][f]
            return Case(fmt, jsonl_bytes(rows), line, f, "missing")
        rows[r][f] = value
        return Case(fmt, jsonl_bytes(rows), line, f, f"json-scalar-{type(value).__name__}")
    if fmt == "csv":
        header = list(rows[0])
        cells = [csv_cell(rows[r][h]) for h in header]
        cells[header.index(f)] = draw(st.sampled_from(CSV_SCALAR_BAD))
        return Case(fmt, csv_bytes(rows, {r: cells}), line, f, "csv-cell")
    cols = parquet_columns(rows)
    kind = draw(st.sampled_from(["nan", "inf", "f32", "null", "bool-col", "text-col", "date-col", "list-col"]))
    if kind in ("nan", "inf", "f32", "null"):
        cols[f][r] = {"nan": float("nan"), "inf": float("-inf"), "f32": 1e39, "null": None}[kind]
        cols[f] = pa.array(cols[f], pa.float64())
        return Case(fmt, parquet_bytes(cols), line, f, f"parquet-{kind}")
    n = len(rows)
    cols[f] = {"bool-col": pa.array([i % 2 == 0 for i in range(n)]),
               "text-col": pa.array([str(v) for v in cols[f]]),
               "date-col": pa.array(np.arange(n).astype("datetime64[D]")),
               "list-col": pa.array([[0.5]] * n)}[kind]
    return Case(fmt, parquet_bytes(cols), 1, f, f"parquet-{kind}")


def _vector_case(draw, fmt: str, rows: list[dict], r: int, line: int) -> Case:
    f = "clip_img_features"
    if draw(st.integers(0, 9)) == 0:  # zero-length vectors everywhere
        for row in rows:
            row[f] = []
        first = {"jsonl": 1, "csv": 2, "parquet": 1}[fmt]
        return _encode(fmt, rows, first, f, "vec-empty-all") if fmt != "parquet" else \
            Case(fmt, parquet_bytes({**parquet_columns(rows), f: pa.array([[]] * len(rows), pa.list_(pa.float64()))}),
                 1, f, "vec-empty-all")
    if fmt == "parquet":
        cols = parquet_columns(rows)
        v = list(cols[f][r])
        kind = draw(st.sampled_from(["nan", "inf", "f32", "long", "null", "nested", "bool"]))
        if kind == "nested":
            cols[f] = pa.array([[[x] for x in row] for row in cols[f]])
            return Case(fmt, parquet_bytes(cols), 1, f, "parquet-vec-nested")
        if kind == "bool":
            cols[f] = pa.array([[True] * len(v)] * len(rows))
            return Case(fmt, parquet_bytes(cols), 1, f, "parquet-vec-bool")
        cols[f][r] = {"nan": [float("nan")] + v[1:], "inf": v[:-1] + [float("inf")], "f32": [1e39] + v[1:],
                      "long": v + [0.5], "null": None}[kind]
        cols[f] = pa.array(cols[f], pa.list_(pa.float64()))
        return Case(fmt, parquet_bytes(cols), line, f, f"parquet-vec-{kind}")
    value, kind = json_vector_bad(rows[r][f], draw(st.integers(0, 12)))
    if fmt == "csv" and kind == "vec-string":
        value = "[0.5, 0.5"  # CSV cells are text: a broken JSON list instead
    rows[r][f] = value
    return _encode(fmt, rows, line, f, kind)


def _id_case(draw, fmt: str, rows: list[dict], r: int, line: int, ll: int) -> Case:
    f = draw(st.sampled_from(["query_id", "candidate_id"]))
    options = ["", None] + ([True, [1], {"a": 1}, "clash"] if fmt == "jsonl" else [])
    value = draw(st.sampled_from(options))
    if value == "clash":  # 7 and "7" would merge into one query
        for i, row in enumerate(rows):
            row["query_id"] = 7 if i < ll else ("7" if i < 2 * ll else "other")
        return Case(fmt, jsonl_bytes(rows), ll + 1, "query_id", "id-clash")
    rows[r][f] = value
    if fmt == "parquet":
        cols = parquet_columns(rows)
        return Case(fmt, parquet_bytes(cols), line, f, "id-empty")
    return _encode(fmt, rows, line, f, f"id-{type(value).__name__}")


def _structure_case(draw, fmt: str, rows: list[dict], r: int, line: int) -> Case:
    if fmt == "jsonl":
        text = json.dumps(rows[r])
        kind = draw(st.sampled_from(["truncated", "deep", "dup-key", "utf8", "not-object", "bigint-digits"]))
        if kind == "utf8":
            body = jsonl_bytes(rows).split(b"\n")
            body[r] = body[r].replace(b'"c', b'"\xff\xfe', 1)
            return Case(fmt, b"\n".join(body), line, None, "utf8")
        raw, field = {"truncated": (text[:-3], None),
                      "deep": (text[:-1] + ', "meta": ' + "[" * 3000 + "]" * 3000 + "}", "meta"),
                      "dup-key": (text[:-1] + ', "brightness": 0.5}', "brightness"),
                      "not-object": ("[1, 2]", None),
                      "bigint-digits": (text[:-1] + ', "n": ' + "9" * 5000 + "}", "n")}[kind]
        field = None if kind == "deep" else field
        return Case(fmt, jsonl_bytes(rows, {r: raw}), line, field, f"json-{kind}")
    if fmt == "csv":
        kind = draw(st.sampled_from(["trailing-comma", "missing-cell", "utf8", "unterminated-quote", "multiline"]))
        lines = csv_bytes(rows).split(b"\n")
        if kind == "multiline":  # a quoted cell spanning lines before the bad row: the line must still be true
            rows[0]["query"] = "two\nlines"
            rows[r]["brightness"] = "dark"
            return Case(fmt, csv_bytes(rows), line + (r > 0), "brightness", "csv-multiline")
        lines[r + 1] = {"trailing-comma": lines[r + 1] + b",",
                        "missing-cell": lines[r + 1].rsplit(b",", 1)[0],
                        "utf8": lines[r + 1].replace(b"c", b"\xff", 1),
                        "unterminated-quote": lines[r + 1] + b',"open'}[kind]
        return Case(fmt, b"\n".join(lines), line, None, f"csv-{kind}")
    data = parquet_bytes(parquet_columns(rows))
    cut = draw(st.integers(1, len(data) - 1))
    return Case(fmt, data[:cut] if draw(st.booleans()) else data[:cut] + b"\0" * 8, None, None, "parquet-corrupt")


@st.composite
def letor_case(draw) -> Case:
    seed = draw(st.integers(0, 2**32 - 1))
    nq, ll, nf = draw(st.integers(2, 3)), draw(st.integers(3, 4)), draw(st.integers(2, 5))
    lines = letor_lines(seed, nq, ll, nf)
    r = draw(st.integers(0, len(lines) - 1))
    parts = lines[r].split(" ")  # label, qid, i:v ..., "#", ...
    family = draw(st.sampled_from(["label", "qid", "item", "value", "duplicate-index", "no-features",
                                   "duplicate-docid", "utf8", "single"]))
    field: str | None
    if family == "label":
        parts[0], field = draw(st.sampled_from(LETOR_LABEL_BAD)), "label"
    elif family == "qid":
        parts[1], field = draw(st.sampled_from(["", "qid:", "QID:1", "q:1", "1"])), "qid"
    elif family == "item":
        item = draw(st.sampled_from(LETOR_ITEM_BAD))
        j = draw(st.integers(2, 1 + nf))
        parts[j] = item
        index = item.split(":")[0]
        field = f"feature {index}" if index.isascii() and index.isdigit() and int(index) > 1 else item
    elif family == "value":
        j = draw(st.integers(2, 1 + nf))
        parts[j] = f"{j - 1}:{draw(st.sampled_from(LETOR_VALUE_BAD))}"
        field = f"feature {j - 1}"
    elif family == "duplicate-index":
        parts.insert(2 + nf, "1:0.5")
        field = "feature 1"
    elif family == "no-features":
        lines = [" ".join(ln.split(" ")[:2]) for ln in lines]
        return Case("letor", ("\n".join(lines) + "\n").encode(), 1, "features", "letor-no-features")
    elif family == "duplicate-docid":
        if r % ll == 0:
            r += 1
        lines[r] = lines[r].rsplit("= ", 1)[0] + "= " + lines[r - 1].rsplit("= ", 1)[1]
        return Case("letor", ("\n".join(lines) + "\n").encode(), r + 1, "candidate_id", "letor-duplicate-docid")
    elif family == "utf8":
        body = ("\n".join(lines) + "\n").encode().split(b"\n")
        body[r] = body[r].replace(b"qid", b"\xffqid", 1)
        return Case("letor", b"\n".join(body), r + 1, None, "letor-utf8")
    else:
        lines = [f"{ln.split(' ')[0]} qid:{i} {' '.join(ln.split(' ')[2:])}" for i, ln in enumerate(lines)]
        return Case("letor", ("\n".join(lines) + "\n").encode(), 1, "query_id", "letor-all-single")
    lines[r] = " ".join(parts)
    return Case("letor", ("\n".join(lines) + "\n").encode(), r + 1, field, f"letor-{family}")


def bad_inputs():
    return st.one_of(step5_case("jsonl"), step5_case("csv"), step5_case("parquet"), letor_case())


def check(case: Case, tmp_path: Path) -> DataError:
    """The one contract: a DataError naming file, line/row and field; anything else fails the test."""
    path = tmp_path / f"fuzz.{EXT[case.fmt]}"
    path.write_bytes(case.content)
    SEEN[(case.fmt, case.kind)] += 1
    try:
        data = load_dataset(path)
    except DataError as err:
        msg = str(err)
        assert str(path) in msg, msg
        assert err.line == case.line, f"{case.kind}: expected line {case.line}: {msg}"
        if case.line is not None:
            assert f"{'row' if case.fmt == 'parquet' else 'line'} {case.line}:" in msg, msg
        if case.field is not None:
            assert err.field == case.field, f"{case.kind}: expected field {case.field!r}: {msg}"
        return err
    pytest.fail(f"{case.kind}: accepted silently ({data.num_queries} queries)")


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    if SEEN:
        by_format = Counter()
        for (fmt, _), n in SEEN.items():
            by_format[fmt] += n
        print(f"\nfuzzed bad inputs: {sum(SEEN.values())} -> DataError, other exceptions 0, accepted 0; "
              f"{len(SEEN)} kinds; by format: {dict(by_format)}; by kind: "
              + ", ".join(f"{f}:{k} {n}" for (f, k), n in sorted(SEEN.items())))


FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                  HealthCheck.data_too_large])


@settings(max_examples=300, **FUZZ)
@given(case=bad_inputs())
def test_fuzzed_bad_input_is_one_precise_data_error(tmp_path, case):
    check(case, tmp_path)


@pytest.mark.slow
@settings(max_examples=10_500, **FUZZ)
@given(case=bad_inputs())
def test_fuzzed_bad_input_10k(tmp_path, case):
    check(case, tmp_path)


@settings(max_examples=40, **FUZZ)
@given(seed=st.integers(0, 2**32 - 1), fmt=st.sampled_from(["jsonl", "csv", "parquet"]))
def test_the_valid_bases_load(tmp_path, seed, fmt):
    """The defects above are the only reason those files fail: the same files without one load."""
    rows = base_rows(seed, 2, 3, 2)
    case = _encode(fmt, rows, 0, None, "valid")
    path = tmp_path / f"ok.{EXT[fmt]}"
    path.write_bytes(case.content)
    data = load_dataset(path)
    assert data.num_candidates == 6 and data.token_dims["clip_img"] == 2
    letor = tmp_path / "ok.txt"
    letor.write_text("\n".join(letor_lines(seed, 2, 3, 4)) + "\n")
    assert load_dataset(letor).num_candidates == 6


# ---------- arbitrary damage: whatever happens, only DataError ----------

@st.composite
def damaged_files(draw) -> tuple[str, bytes]:
    """A valid file of any format with random bytes overwritten, inserted or cut away."""
    fmt = draw(st.sampled_from(["jsonl", "csv", "parquet", "letor"]))
    seed = draw(st.integers(0, 2**32 - 1))
    if fmt == "letor":
        data = ("\n".join(letor_lines(seed, 2, 3, 3)) + "\n").encode()
    else:
        data = _encode(fmt, base_rows(seed, 2, 3, 2), 0, None, "valid").content
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        chunk = draw(st.binary(min_size=0, max_size=8) | st.sampled_from(
            [b"[", b"{", b'"', b",", b"\n", b":", b"\xff", b"\x00", "\u00b2".encode(), b"1e39", b"NaN", b"-"]))
        cut = draw(st.integers(0, 4))
        data = data[:at] + chunk + data[at + cut:]
    return fmt, data


def survive(fmt: str, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / f"damaged.{EXT[fmt]}"
    path.write_bytes(data)
    try:
        result = load_dataset(path)
    except DataError as err:
        assert str(path) in str(err)
        return
    for k, v in result.features.items():  # accepted: then it is usable as it stands
        assert v.dtype == np.float32 and np.isfinite(v).all(), k
    assert np.isfinite(result.labels).all() and result.num_queries > 0


@settings(max_examples=150, **FUZZ)
@given(case=damaged_files())
def test_damaged_files_give_data_error_or_clean_data(tmp_path, case):
    survive(*case, tmp_path)


@pytest.mark.slow
@settings(max_examples=5000, **FUZZ)
@given(case=damaged_files())
def test_damaged_files_5k(tmp_path, case):
    survive(*case, tmp_path)
