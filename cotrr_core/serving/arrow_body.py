"""The batch endpoint's compact body: Arrow IPC streams, so batch clients skip per-candidate JSON.

Request: one row per candidate, the rows of each list together and in first-stage order; columns
`list` (integer list number, non-decreasing), optional `query` and `unit_id` (strings, read from each
list's first row) and one column per token of the run (raw values as in the Step5 fields: a
fixed-size or variable list of floats of the token's width, or a float for a width-1 token).
Answer: one row per input row, per list in served order: `row` (the input row index), `raw_score`,
`probability`, `uncertainty` (NaN where not scored); the per-list outcomes (request_id, arm, reranked,
fallback_reason) are JSON in the schema metadata under b"cotrr".
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from cotrr_core.serving.limits import Limits, RequestError
from cotrr_core.serving.results import ArrayResult

__all__ = ["ARROW_TYPE", "read_arrow_lists", "write_arrow_result", "arrow_request"]

ARROW_TYPE = "application/vnd.apache.arrow.stream"


def read_arrow_lists(body: bytes, tokens: list[str], limits: Limits):
    """(features {token: [N, d] float32}, offsets [K + 1], queries [K], unit_ids [K]) or RequestError (422 /
    413) naming the column."""
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise RequestError(400, "body", f"not an Arrow IPC stream: {exc}") from None
    if "list" not in table.column_names:
        raise RequestError(422, "list", "an Arrow body needs an integer 'list' column")
    lists = table.column("list").to_numpy(zero_copy_only=False)
    if not np.issubdtype(lists.dtype, np.integer) or (len(lists) and np.any(np.diff(lists) < 0)):
        raise RequestError(422, "list", "must be integers, non-decreasing (the rows of a list together)")
    starts = np.flatnonzero(np.r_[True, np.diff(lists) != 0]) if len(lists) else np.zeros(0, np.int64)
    offsets = np.r_[starts, len(lists)].astype(np.int64)
    if len(starts) > limits.max_lists:
        raise RequestError(413, "list", f"{len(starts)} lists > the limit of {limits.max_lists}")
    if len(starts) and np.diff(offsets).max() > limits.max_candidates:
        raise RequestError(413, "list", f"a list has more than {limits.max_candidates} candidates")
    features = {name: _token(table, name) for name in tokens}
    return features, offsets, _per_list(table, "query", starts), _per_list(table, "unit_id", starts)


def _token(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        raise RequestError(422, name, f"missing token column {name!r}")
    col = table.column(name).combine_chunks()
    try:
        if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
            widths = col.value_lengths().to_numpy(zero_copy_only=False)
            if len(widths) and (widths.min() != widths.max()):
                raise RequestError(422, name, "every row needs the same number of values")
            flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
            return flat.reshape(len(col), -1 if len(col) else 0)
        return col.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 1)
    except (pa.ArrowInvalid, TypeError, ValueError) as exc:
        raise RequestError(422, name, f"must hold numbers: {exc}") from None


def _per_list(table: pa.Table, name: str, starts: np.ndarray) -> list[str | None]:
    if name not in table.column_names:
        return [None] * len(starts)
    values = table.column(name).to_pylist()
    out = [values[int(s)] for s in starts]
    if any(v is not None and not isinstance(v, str) for v in out):
        raise RequestError(422, name, "must be strings")
    return out


def write_arrow_result(res: ArrayResult, request_id: str) -> bytes:
    """The answer as an Arrow IPC stream (see the module docstring)."""
    order = res.order
    table = pa.table({"row": order, "raw_score": res.raw_score[order], "probability": res.probability[order],
                      "uncertainty": res.uncertainty[order]})
    meta = {"request_id": request_id, "latency_ms": res.latency_ms,
            "lists": [{"request_id": f"{request_id}-{k}", "arm": a, "reranked": bool(r), "fallback_reason": f}
                      for k, (a, r, f) in enumerate(zip(res.arm, res.reranked, res.fallback_reason))]}
    table = table.replace_schema_metadata({b"cotrr": json.dumps(meta).encode()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def arrow_request(features: dict[str, np.ndarray], offsets: np.ndarray, queries=None, unit_ids=None) -> bytes:
    """A client's Arrow body for K lists of token arrays {name: [N, d]} with offsets [K + 1]."""
    lengths = np.diff(offsets)
    cols = {"list": np.repeat(np.arange(len(lengths)), lengths)}
    for key, per_list in (("query", queries), ("unit_id", unit_ids)):
        if per_list is not None:
            cols[key] = pa.array(np.repeat(np.asarray(per_list, dtype=object), lengths).tolist(), pa.string())
    for name, x in features.items():
        x = np.asarray(x, dtype=np.float32).reshape(len(cols["list"]), -1)
        cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])
    table = pa.table(cols)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
