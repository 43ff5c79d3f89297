"""App test paths; the tiny trained run (app_env, tiny_run, small_bench) lives in tests/conftest.py."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
