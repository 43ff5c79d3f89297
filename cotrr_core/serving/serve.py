"""`python -m cotrr_core serve RUN`: the HTTP app (serving/http.py) on uvicorn, one or several worker processes.

Uvicorn and Starlette: an established ASGI stack, already installed with Streamlit (pinned in
requirements.txt); several workers are separate processes, each loading the read-only run directory and
holding nothing but its counters (and its own decision-log files), so replicas need no shared state.
The settings reach each worker through one environment variable (uvicorn starts workers from an import
string); SIGTERM / Ctrl-C stop taking connections and finish the requests in flight (up to 30 s).

Throughput: one worker's interpreter lock serialises its HTTP handling, JSON parsing and scoring, so a worker
uses about one core: run one per core (`--workers 2` on the 2-core machine of bench/http_load.py). uvicorn uses
httptools and uvloop (pinned in requirements.txt) when they are installed, else h11 and asyncio.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict

__all__ = ["serve", "app_from_env"]

ENV = "COTRR_SERVE_SETTINGS"


def serve(run_dir: str, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, policy: dict | None = None,
          token: str | None = None, log_dir: str | None = None, limits: dict | None = None, threads: int = 1,
          graceful_s: float = 30.0) -> None:
    """Serve until stopped. `policy`: Policy's fields; `limits`: Limits' fields; `threads`: torch intra-op threads."""
    import uvicorn

    from cotrr_core.serving.limits import Limits
    from cotrr_core.serving.policy import Policy

    Policy(**(policy or {"mode": "full"}))  # a bad policy fails here, once, not in every worker
    settings = {"run_dir": str(run_dir), "policy": policy or {"mode": "full"}, "token": token, "log_dir": log_dir,
                "limits": asdict(Limits(**(limits or {}))), "threads": threads}
    os.environ[ENV] = json.dumps(settings)
    uvicorn.run("cotrr_core.serving.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                timeout_graceful_shutdown=graceful_s, timeout_keep_alive=5, log_level="warning")


def app_from_env():
    """The ASGI app of one worker, from the settings `serve` left in the environment."""
    from cotrr_core.serving.http import create_app
    from cotrr_core.serving.limits import Limits
    from cotrr_core.serving.policy import Policy
    from cotrr_core.serving.reranker import Reranker

    s = json.loads(os.environ[ENV])

    def load() -> Reranker:
        return Reranker.load(s["run_dir"], device="cpu", policy=Policy(**s["policy"]), threads=s["threads"])

    return create_app(load, token=s["token"], limits=Limits(**s["limits"]), log_dir=s["log_dir"])
