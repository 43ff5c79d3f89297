"""The HTTP layer's JSON codec: bodies parse to exactly what the standard library's json.loads gives (msgspec
first, the stdlib for what msgspec refuses), answers encode to the same JSON values as Starlette's JSONResponse,
and decision-log lines read back as written."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse

from cotrr_core.serving.decision_log import DecisionLog, read_decisions
from cotrr_core.serving.http import Answer, RequestError, _json_object, parse_json


def same(a, b) -> bool:
    """Deep equality that also tells int from float from bool, -0.0 from 0.0, and NaN from anything but NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-10**40, max_value=10**40)
           | st.floats(allow_nan=False, allow_infinity=False) | st.floats(width=32, allow_nan=False, allow_infinity=False)
           | st.text(max_size=8))
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                         | st.dictionaries(st.text(max_size=5), inner, max_size=5), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_a_body_parses_exactly_as_the_standard_library_parses_it(doc):
    for body in (json.dumps(doc).encode(), json.dumps(doc, indent=1, ensure_ascii=False).encode()):
        assert same(parse_json(body), json.loads(body))


@pytest.mark.parametrize("body", [
    b"123456789012345678901234567890", b"[-9223372036854775809, 18446744073709551616]",  # past 64 bits: exact ints
    b'{"a": 1, "b": 2, "a": 3}',  # the last duplicate wins, in the first one's place
    b"[NaN, Infinity, -Infinity, 1e400]", b'"\\ud800"', b'\xef\xbb\xbf{"a": 1}',  # what only the stdlib accepts
    '{"é": [0.1, -0.0, 5e-324]}'.encode("utf-16"), b" [1.0, 0.30000000000000004] ",
])
def test_edge_bodies_parse_as_the_standard_library_parses_them(body):
    assert same(parse_json(body), json.loads(body))


@pytest.mark.parametrize("body,status", [
    (b"{nope", 400), (b"", 400), (b"\xff\xfe\xfa", 400), (b'{"a": 1} x', 400), (b"[" * 100_000, 400),
    (b'{"top_m": ' + b"1" * 5000 + b"}", 400),  # past the interpreter's 4300-digit limit: was a 500
    (b"[1, 2]", 422), (b'"text"', 422), (b"null", 422),
])
def test_a_bad_body_is_one_request_error(body, status):
    with pytest.raises(RequestError) as err:
        _json_object(body)
    assert (err.value.status, err.value.field) == (status, "body")


@settings(max_examples=200, deadline=None)
@given(documents)
def test_an_answer_is_the_json_value_starlette_would_send(doc):
    content = {"served": [doc], "request_id": "r"}
    assert same(json.loads(Answer(content).body), json.loads(JSONResponse(content).body))


def test_an_answer_writes_what_the_stdlib_refused_or_could_not_encode():
    body = Answer({"nan": math.nan, "vec": np.arange(3, dtype=np.float32), "x": np.float64(0.5), "u": "é"}).body
    assert json.loads(body) == {"nan": None, "vec": [0.0, 1.0, 2.0], "x": 0.5, "u": "é"}
    assert json.loads(Answer({"id": "\ud800", "v": [1, 2]}).body) == {"id": "\ud800", "v": [1, 2]}  # ASCII escapes
    with pytest.raises(TypeError):
        Answer({"what": object()})


def test_decision_log_lines_read_back_as_written(tmp_path):
    records = [{"request_id": "a", "latency_ms": np.float32(1.5), "served": ["x", 3], "big": 10**30},
               {"request_id": "b", "unit_id": "\ud800", "detail": None},  # the stdlib's fallback line
               {"request_id": "c", "shadow_scores": [math.nan, 0.25], "n": np.int64(2)}]
    log = DecisionLog(tmp_path)
    for r in records:
        log.write(r)
    log.close()
    back = read_decisions(tmp_path)
    assert [r["request_id"] for r in back] == ["a", "b", "c"]
    assert back[0] == {"request_id": "a", "latency_ms": 1.5, "served": ["x", 3], "big": 10**30}
    assert back[1]["unit_id"] == "\ud800" and back[2]["shadow_scores"] == [None, 0.25] and back[2]["n"] == 2.0
