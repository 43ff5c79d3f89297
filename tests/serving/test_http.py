"""`python -m cotrr_core serve` as a real process on 127.0.0.1: rerank, batch (JSON and Arrow), health,
readiness, metrics, every bad request's status and field, and one decision-log record per request."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cotrr_core.serving.arrow_body import ARROW_TYPE, arrow_request
from cotrr_core.serving.decision_log import read_decisions
from tests.serving.conftest import ids, lists_of, original_ids

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, path: str, body=None, content_type: str = "application/json") -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("decisions")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cotrr_core", "serve", str(run_dir), "--port", str(port),
                             "--policy", "shadow", "--log-dir", str(logs), "--max-candidates", "40",
                             "--max-body-bytes", "200000"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):  # bounded: 60 s to load and warm
        try:
            if call(base, "/readyz")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("serve exited early")
        time.sleep(0.1)
    state = {"base": base, "logs": logs, "sent": 0, "proc": proc}
    yield state
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_rerank_batch_health_and_metrics(server):
    base = server["base"]
    query, cands = lists_of(1)[0]
    status, body = call(base, "/v1/rerank", {"query": query, "candidates": cands, "unit_id": "u1", "mc_samples": 2})
    res = json.loads(body)
    assert status == 200 and res["fallback_reason"] is None and res["request_id"]
    assert ids(res["served"]) == original_ids(cands)  # shadow: the original order is served
    assert sorted(ids(res["wouldbe"])) == sorted(ids(cands)) and res["served"][0]["uncertainty"] is not None
    assert {"clip_img_features", "brightness"} <= set(res["served"][0])
    status, body = call(base, "/v1/rerank", {"query": query, "candidates": cands, "return_features": False})
    lean = json.loads(body)["served"][0]
    assert status == 200 and not {"clip_img_features", "brightness"} & set(lean) and lean["candidate_id"]
    status, body = call(base, "/v1/rerank_batch", {"lists": [{"query": q, "candidates": c, "unit_id": f"u{k}"}
                                                             for k, (q, c) in enumerate(lists_of(3))]})
    assert status == 200 and [r["fallback_reason"] for r in json.loads(body)["results"]] == [None] * 3
    assert call(base, "/healthz")[0] == 200
    status, body = call(base, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    status, body = call(base, "/metrics")
    text = body.decode()
    assert status == 200 and 'cotrr_requests_total{endpoint="/v1/rerank",outcome="shadow",status="200"} 2.0' in text
    assert "cotrr_request_latency_seconds_bucket" in text and "cotrr_requests_in_flight" in text
    server["sent"] += 2 + 3


def test_the_arrow_batch_body_answers_in_arrow(server, loaded):
    lists = lists_of(2)
    rows = [c for _, cands in lists for c in sorted(cands, key=lambda c: -c["first_stage_score"])]
    offsets = np.cumsum([0] + [len(c) for _, c in lists])
    feats = loaded.featurizer(rows, offsets)
    for t in loaded.run.spec.tokens:  # list-constant tokens come back one row per list: repeat them per row
        if len(feats[t.name]) != len(rows):
            feats[t.name] = np.repeat(feats[t.name], np.diff(offsets), axis=0)
    status, body = call(server["base"], "/v1/rerank_batch", arrow_request(feats, offsets, unit_ids=["a", "b"]),
                        ARROW_TYPE)
    table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    meta = json.loads(table.schema.metadata[b"cotrr"])
    assert status == 200 and table.num_rows == len(rows)
    assert [m["fallback_reason"] for m in meta["lists"]] == [None, None]
    assert sorted(table.column("row").to_pylist()) == list(range(len(rows)))
    server["sent"] += 2


BAD = [  # (body, content type, status, field)
    (b"{not json", "application/json", 400, "body"),
    (b"[1, 2]", "application/json", 422, "body"),
    ({"query": "q", "candidates": "nope"}, "application/json", 422, "candidates"),
    ({"query": 3, "candidates": []}, "application/json", 422, "query"),
    ({"query": "q", "candidates": [{}] * 41}, "application/json", 413, "candidates"),
    ({"query": "q", "candidates": [], "mc_samples": -1}, "application/json", 422, "mc_samples"),
    ({"query": "q", "candidates": [], "time_budget_ms": 10**6}, "application/json", 422, "time_budget_ms"),
    (b"x" * 300_000, "application/json", 413, "body"),
    (b'{"query": "q", "candidates": [], "top_m": ' + b"1" * 5000 + b"}", "application/json", 400, "body"),
    ({"query": "q", "candidates": [], "mc_samples": 10**30}, "application/json", 422, "mc_samples"),
]


@pytest.mark.parametrize("body,ctype,status,field", BAD)
def test_each_bad_request_gets_its_status_naming_the_field(server, body, ctype, status, field):
    got, answer = call(server["base"], "/v1/rerank", body, ctype)
    doc = json.loads(answer)
    assert (got, doc["field"]) == (status, field) and doc["error"] and doc["request_id"]
    server.setdefault("rejected", []).append((doc["request_id"], status))


def test_bad_candidates_are_served_as_given_not_refused(server):
    query, cands = lists_of(1)[0]
    cands = [dict(c) for c in cands]
    cands[2]["brightness"] = "bright"
    status, body = call(server["base"], "/v1/rerank", {"query": query, "candidates": cands})
    res = json.loads(body)
    assert status == 200 and res["fallback_reason"] == "invalid_input" and "brightness" in res["detail"]
    server["sent"] += 1


def test_a_nan_feature_is_served_as_given_naming_the_field(server):
    """Python's JSON reads NaN (not JSON proper): the list falls back naming the field; the echo is null."""
    query, cands = lists_of(1)[0]
    cands = [dict(c) for c in cands]
    cands[3]["contrast"] = float("nan")
    status, body = call(server["base"], "/v1/rerank", {"query": query, "candidates": cands, "mc_samples": 0})
    res = json.loads(body)
    assert status == 200 and res["fallback_reason"] == "invalid_input" and "contrast" in res["detail"]
    assert [c["contrast"] for c in res["served"] if c["candidate_id"] == cands[3]["candidate_id"]] == [None]
    server["sent"] += 1


def test_every_request_is_in_the_decision_log_once_after_shutdown(server):
    """Runs last in this module: stops the server (SIGTERM, a clean shutdown) and reads its log."""
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its clean shutdown
    records = read_decisions(server["logs"])
    request_ids = [r["request_id"] for r in records]
    assert len(request_ids) == len(set(request_ids)) == server["sent"] + len(server["rejected"])
    by_id = {r["request_id"]: r for r in records}
    assert all(by_id[rid]["status"] == status and by_id[rid]["rejected"] for rid, status in server["rejected"])
    shadow = [r for r in records if r.get("shadow_scores")]
    assert shadow and all(len(r["shadow_scores"]) == len(r["wouldbe"]) == r["n_candidates"] for r in shadow)
