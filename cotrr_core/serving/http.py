"""`cotrr_core serve`: the Reranker over HTTP (Starlette on uvicorn), with limits, metrics and decision logs.

    POST /v1/rerank        {"query", "candidates": [Step5 dicts], "unit_id"?, "mc_samples"?, "top_m"?,
                            "time_budget_ms"?, "strict"?, "return_features"?} -> RerankResult's fields +
                           request_id ("return_features": false leaves the run's feature fields out of the answer)
    POST /v1/rerank_batch  {"lists": [{"query", "candidates", "unit_id"?}], ...same options} -> {"results": [...]}
                           or an Arrow IPC stream (Content-Type application/vnd.apache.arrow.stream, see
                           serving/arrow_body.py) -> an Arrow IPC stream of the served order and scores
    GET /healthz (alive), /readyz (model loaded and warmed), /metrics (Prometheus text)

Bad requests get 400 (not JSON), 401 (token), 413 (body, candidates or lists over a limit), 422 (a field of
the wrong kind), each {"error": ..., "field": ...}; a full scoring queue is 503 only when the caller sent
"strict": true (else the original order with fallback_reason "overloaded"). Every request, rejected or
served, gets one decision-log record and one count in /metrics. Scoring runs on a thread (the Reranker's
dynamic batcher combines concurrent requests); the event loop only parses and answers.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from contextlib import asynccontextmanager

import msgspec
import numpy as np
from anyio import to_thread
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cotrr_core.serving.arrow_body import ARROW_TYPE, read_arrow_lists, write_arrow_result
from cotrr_core.serving.decision_log import DecisionLog
from cotrr_core.serving.limits import Limits, RequestError
from cotrr_core.serving.results import RerankResult

__all__ = ["Limits", "RequestError", "create_app"]


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cotrr_requests", "Requests by endpoint, HTTP status and outcome (reranked, "
                                "shadow, or the fallback reason / rejection)", ["endpoint", "status", "outcome"],
                                registry=self.registry)
        self.latency = Histogram("cotrr_request_latency_seconds", "Server-side latency of served lists by arm",
                                 ["arm"], registry=self.registry,
                                 buckets=(.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))
        self.in_flight = Gauge("cotrr_requests_in_flight", "Requests being handled", registry=self.registry)


def create_app(reranker_factory, *, token: str | None = None, limits: Limits | None = None,
               log_dir: str | None = None) -> Starlette:
    """The ASGI app. `reranker_factory()` loads and warms the Reranker when the app starts (readyz then
    turns 200); `token`: require "Authorization: Bearer <token>" on /v1/* and /metrics."""
    limits = limits or Limits()
    state = {"reranker": None, "log": None, "metrics": _Metrics()}

    @asynccontextmanager
    async def lifespan(app):
        state["log"] = DecisionLog(log_dir) if log_dir else None
        state["reranker"] = await to_thread.run_sync(reranker_factory)
        yield
        state["reranker"].close(wait_s=5.0)  # uvicorn has finished the requests in flight by now
        if state["log"] is not None:
            state["log"].close()

    handler = _Handler(state, limits, token)
    routes = [Route("/v1/rerank", handler.rerank, methods=["POST"]),
              Route("/v1/rerank_batch", handler.rerank_batch, methods=["POST"]),
              Route("/healthz", handler.healthz), Route("/readyz", handler.readyz),
              Route("/metrics", handler.metrics)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.serving = state
    return app


class _Handler:
    def __init__(self, state: dict, limits: Limits, token: str | None) -> None:
        self.state, self.limits, self.token = state, limits, token

    @property
    def _m(self) -> _Metrics:
        return self.state["metrics"]

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        rr = self.state["reranker"]
        if rr is None:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True, **rr.health()})

    async def metrics(self, request: Request) -> Response:
        try:
            self._auth(request, "/metrics")
        except RequestError as exc:
            return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)
        return Response(generate_latest(self._m.registry), media_type="text/plain; version=0.0.4")

    async def rerank(self, request: Request) -> Response:
        return await self._serve(request, "/v1/rerank", self._one)

    async def rerank_batch(self, request: Request) -> Response:
        return await self._serve(request, "/v1/rerank_batch", self._many)

    async def _serve(self, request: Request, endpoint: str, work) -> Response:
        """Parse, score on a thread, answer; every outcome is counted and logged once."""
        rid, t0 = uuid.uuid4().hex, time.perf_counter()
        self._m.in_flight.inc()
        try:
            self._auth(request, endpoint)
            body = await self._body(request)
            return await work(request, body, rid, t0)
        except RequestError as exc:
            self._reject(endpoint, rid, t0, exc)
            return JSONResponse({"error": exc.message, "field": exc.field, "request_id": rid},
                                status_code=exc.status)
        finally:
            self._m.in_flight.dec()

    def _auth(self, request: Request, endpoint: str) -> None:
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            raise RequestError(401, "Authorization", "a bearer token is required")

    async def _body(self, request: Request) -> bytes:
        """The body, refused past max_body_bytes (413) or when it trickles in slower than body_timeout_s (408)."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            raise RequestError(413, "body", f"{declared} bytes > the limit of {self.limits.max_body_bytes}")
        chunks, size = [], 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.limits.max_body_bytes:
                    raise RequestError(413, "body", f"more than the limit of {self.limits.max_body_bytes} bytes")
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), self.limits.body_timeout_s)
        except TimeoutError:
            raise RequestError(408, "body", f"the body took longer than {self.limits.body_timeout_s:g} s") from None
        return b"".join(chunks)

    def _options(self, doc: dict) -> dict:
        """mc_samples, top_m, time_budget_ms, strict: checked against the limits (422 / 413 naming the field)."""
        rr = self.state["reranker"]
        out = {"mc_samples": _int(doc, "mc_samples", rr.config.mc_samples, 0, self.limits.max_mc_samples),
               "top_m": _int(doc, "top_m", rr.config.top_m, 1, self.limits.max_candidates)}
        budget = doc.get("time_budget_ms", rr.config.time_budget_ms)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget:
            raise RequestError(422, "time_budget_ms", "must be a number > 0")
        if budget > self.limits.max_budget_ms:
            raise RequestError(422, "time_budget_ms", f"{budget} > the limit of {self.limits.max_budget_ms:g} ms")
        out["time_budget_ms"] = float(budget)
        for name, default in (("strict", False), ("return_features", True)):
            out[name] = doc.get(name, default)
            if not isinstance(out[name], bool):
                raise RequestError(422, name, "must be true or false")
        return out

    def _list(self, doc: dict, where: str) -> tuple[str | None, list, str | None]:
        query, cands, unit = doc.get("query"), doc.get("candidates"), doc.get("unit_id")
        if query is not None and not isinstance(query, str):
            raise RequestError(422, f"{where}query", "must be a string or null")
        if unit is not None and not isinstance(unit, str):
            raise RequestError(422, f"{where}unit_id", "must be a string or null")
        if not isinstance(cands, list):
            raise RequestError(422, f"{where}candidates", "must be a list of candidate objects")
        if len(cands) > self.limits.max_candidates:
            raise RequestError(413, f"{where}candidates",
                               f"{len(cands)} candidates > the limit of {self.limits.max_candidates} per list")
        return query, cands, unit

    async def _one(self, request: Request, body: bytes, rid: str, t0: float) -> Response:
        doc = _json_object(body)
        query, cands, unit = self._list(doc, "")
        opts = self._options(doc)
        rr = self.state["reranker"]
        res = await to_thread.run_sync(lambda: rr.rerank_batch(
            [(query, cands)], unit_ids=[unit], top_m=opts["top_m"], mc_samples=opts["mc_samples"],
            time_budget_ms=opts["time_budget_ms"])[0])
        status = 503 if opts["strict"] and res.fallback_reason == "overloaded" else 200
        self._served("/v1/rerank", rid, unit, res, status, t0, query)
        drop = () if opts["return_features"] else self._feature_fields()
        return Answer({"request_id": rid, **_result_fields(res, drop)}, status_code=status)

    async def _many(self, request: Request, body: bytes, rid: str, t0: float) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() == ARROW_TYPE:
            return await self._arrow(body, rid, t0)
        doc = _json_object(body)
        lists = doc.get("lists")
        if not isinstance(lists, list):
            raise RequestError(422, "lists", "must be a list of {query, candidates, unit_id} objects")
        if len(lists) > self.limits.max_lists:
            raise RequestError(413, "lists", f"{len(lists)} lists > the limit of {self.limits.max_lists}")
        parsed = [self._list(_object(x, f"lists[{i}]"), f"lists[{i}].") for i, x in enumerate(lists)]
        opts = self._options(doc)
        rr = self.state["reranker"]
        results = await to_thread.run_sync(lambda: rr.rerank_batch(
            [(q, c) for q, c, _ in parsed], unit_ids=[u for _, _, u in parsed], top_m=opts["top_m"],
            mc_samples=opts["mc_samples"], time_budget_ms=opts["time_budget_ms"]))
        over = opts["strict"] and any(r.fallback_reason == "overloaded" for r in results)
        status = 503 if over else 200
        drop = () if opts["return_features"] else self._feature_fields()
        out = []
        for k, ((query, _, unit), res) in enumerate(zip(parsed, results)):
            self._served("/v1/rerank_batch", f"{rid}-{k}", unit, res, status, t0, query)
            out.append({"request_id": f"{rid}-{k}", **_result_fields(res, drop)})
        return Answer({"request_id": rid, "results": out}, status_code=status)

    async def _arrow(self, body: bytes, rid: str, t0: float) -> Response:
        rr = self.state["reranker"]
        features, offsets, queries, units = read_arrow_lists(body, rr.token_names, self.limits)
        budget = rr.config.time_budget_ms
        res = await to_thread.run_sync(lambda: rr.rerank_arrays(features, offsets, queries=queries, unit_ids=units,
                                                                time_budget_ms=budget))
        for k, unit in enumerate(units):
            self._log({"request_id": f"{rid}-{k}", "endpoint": "/v1/rerank_batch", "status": 200, "unit_id": unit,
                       "arm": res.arm[k], "fallback_reason": res.fallback_reason[k], "reranked": bool(res.reranked[k]),
                       "latency_ms": res.latency_ms, "n_candidates": int(offsets[k + 1] - offsets[k]),
                       "served": res.order[offsets[k]:offsets[k + 1]].tolist()})
            self._count("/v1/rerank_batch", 200, res.fallback_reason[k] or "reranked", res.arm[k], res.latency_ms)
        return Response(write_arrow_result(res, rid), media_type=ARROW_TYPE)

    def _feature_fields(self) -> frozenset[str]:
        """The run's feature fields: left out of an answer whose caller sent "return_features": false."""
        return frozenset(f for t in self.state["reranker"].featurizer.layout for f in t.fields)

    def _served(self, endpoint: str, rid: str, unit: str | None, res: RerankResult, status: int, t0: float,
                query: str | None = None) -> None:
        """Count and log one served list; the query is logged as a short hash (its cluster in the analysis)."""
        rr = self.state["reranker"]
        query_key = None if query is None else hashlib.sha1(query.encode()).hexdigest()[:12]
        shadow = rr.policy.mode == "shadow" and res.wouldbe is not None
        outcome = res.fallback_reason or ("shadow" if shadow else "reranked" if res.reranked else "control")
        self._count(endpoint, status, outcome, res.arm, res.latency_ms)
        self._log({
            "request_id": rid, "endpoint": endpoint, "status": status, "unit_id": unit, "arm": res.arm,
            "mode": res.mode, "bucket": res.bucket, "reranked": res.reranked, "fallback_reason": res.fallback_reason,
            "latency_ms": res.latency_ms, "server_ms": 1e3 * (time.perf_counter() - t0),
            "n_candidates": len(res.served), "served": [_cid(c) for c in res.served],
            "wouldbe": None if res.wouldbe is None else [_cid(c) for c in res.wouldbe],
            "shadow_scores": [c.get("raw_score") for c in res.wouldbe] if shadow else None,
            "share": rr.policy.share, "query_key": query_key, "run_id": rr.run.run_dir.name})

    def _reject(self, endpoint: str, rid: str, t0: float, exc: RequestError) -> None:
        self._m.requests.labels(endpoint, str(exc.status), f"rejected:{exc.field}").inc()
        rr = self.state["reranker"]
        self._log({"request_id": rid, "endpoint": endpoint, "status": exc.status, "rejected": exc.field,
                   "error": exc.message, "server_ms": 1e3 * (time.perf_counter() - t0),
                   "run_id": rr.run.run_dir.name if rr is not None else None})

    def _count(self, endpoint: str, status: int, outcome: str, arm: str, latency_ms: float) -> None:
        self._m.requests.labels(endpoint, str(status), outcome).inc()
        self._m.latency.labels(arm).observe(latency_ms / 1e3)

    def _log(self, record: dict) -> None:
        if self.state["log"] is not None:
            self.state["log"].write({"time": time.time(), **record})


_DECODE = msgspec.json.Decoder().decode


def parse_json(body: bytes):
    """The JSON value of a body, exactly as the standard library's `json.loads` gives it, faster (bench/http_load.py).

    msgspec's strict parser reads the body first (it runs on the event loop): what it accepts it decodes to the
    same values as the stdlib (floats correctly rounded, integers of any size exact, the last of duplicate keys).
    Anything it refuses goes to the stdlib, which either accepts it as it always did (NaN / Infinity, a BOM,
    UTF-16 / 32, lone surrogates) or raises its own error (JSONDecodeError, UnicodeDecodeError, RecursionError)
    naming the line and column."""
    try:
        return _DECODE(body)
    except (msgspec.MsgspecError, RecursionError):
        return json.loads(body)


class Answer(Response):
    """A JSON answer encoded by msgspec: the same JSON value as Starlette's JSONResponse (compact, UTF-8), faster
    (an answer that echoes the candidates' vectors is large, and it is encoded on the event loop). A non-finite
    float becomes null (valid JSON; the stdlib refused it, a 500); what msgspec cannot encode (a lone surrogate
    echoed from a request) is written by the stdlib with ASCII escapes."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        try:
            return _ENCODE(content)
        except (msgspec.MsgspecError, TypeError, UnicodeEncodeError):
            return json.dumps(content, separators=(",", ":"), default=_plain_array).encode("ascii")


def _plain_array(x):
    """numpy values (an in-process caller's candidate) as plain lists / numbers; anything else is refused."""
    if isinstance(x, (np.ndarray, np.generic)):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON")


_ENCODE = msgspec.json.Encoder(enc_hook=_plain_array).encode


def _json_object(body: bytes) -> dict:
    """The body as a JSON object: 400 when it is not JSON at all, 422 when it is JSON but not an object."""
    try:
        doc = parse_json(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of > 4300 digits
        raise RequestError(400, "body", f"not valid JSON: {exc}") from None
    return _object(doc, "body")


def _object(doc, field: str) -> dict:
    if not isinstance(doc, dict):
        raise RequestError(422, field, "must be a JSON object")
    return doc


def _int(doc: dict, name: str, default: int, low: int, high: int) -> int:
    value = doc.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, name, "must be an integer")
    if not low <= value <= high:
        raise RequestError(422, name, f"must be in [{low}, {high}], got {value}")
    return value


def _cid(c):
    return c.get("candidate_id") if isinstance(c, dict) else None


def _result_fields(res: RerankResult, drop: frozenset[str] | tuple = ()) -> dict:
    """RerankResult's fields; `drop`: candidate fields left out of served and wouldbe (the echoed features)."""
    def trim(items):
        if items is None:
            return None
        if not drop:
            return list(items)  # an AnnotatedList: annotated as it is encoded
        return [{k: v for k, v in c.items() if k not in drop} if isinstance(c, dict) else c for c in items]

    return {"served": trim(res.served), "wouldbe": trim(res.wouldbe), "reranked": res.reranked, "mode": res.mode, "arm": res.arm,
            "fallback_reason": res.fallback_reason, "latency_ms": res.latency_ms, "detail": res.detail,
            "bucket": res.bucket}
