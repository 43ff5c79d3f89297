"""The serving process's malloc tuning: applied on glibc, optional at load."""
from __future__ import annotations

import platform

import pytest

from cotrr_core.serving import allocator, reranker
from cotrr_core.serving.reranker import Reranker


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_tuning_and_it_is_idempotent():
    assert allocator.retain_freed_memory() and allocator.retain_freed_memory()


@pytest.mark.parametrize("retain", [True, False])
def test_load_tunes_malloc_only_when_asked(run_dir, monkeypatch, retain):
    calls = []
    monkeypatch.setattr(reranker, "retain_freed_memory", lambda: calls.append(1) or True)
    Reranker.load(run_dir, device="cpu", retain_memory=retain).close()
    assert calls == ([1] if retain else [])
