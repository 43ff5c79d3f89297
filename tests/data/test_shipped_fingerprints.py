"""The shipped datasets keep the fingerprints they had before the loaders changed (issue 28): recorded from
commit fc44a8c, through the cache (stored fingerprint) and recomputed from the arrays read back."""
from __future__ import annotations

import pytest

from cotrr_core.data.benchmarks import load_benchmark, shared_datasets_dir

RECORDED = {  # load_benchmark(name) at fc44a8c, split -> RankingData.fingerprint()
    "demo-small": {"train": "1ea955b26b0d0622", "val": "d0a6032e54980f0a", "cal": "386541037c41b0bb",
                   "test": "66771d44fc706bdc"},
    "demo": {"train": "463010936c94bb90", "val": "070d350105e21df6", "cal": "77953c53e89e335d",
             "test": "ae619eb973bc69c0"},
    "mq2008": {"train": "a2ea2f62af390fad", "val": "27164d296008a9c3", "cal": "c6773ecbfb47fefa",
               "test": "0298336be6859c19"},
}


def _check(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))
    for attempt in ("built", "reopened"):
        splits = load_benchmark(name).splits
        assert {k: v.fingerprint() for k, v in splits.items()} == RECORDED[name], attempt
        for k, v in splits.items():
            v.stored_fingerprint = None
            assert v.fingerprint() == RECORDED[name][k], (attempt, k)


def test_demo_small_fingerprints_unchanged(tmp_path, monkeypatch):
    _check("demo-small", tmp_path, monkeypatch)


@pytest.mark.slow
def test_demo_fingerprints_unchanged(tmp_path, monkeypatch):
    _check("demo", tmp_path, monkeypatch)


@pytest.mark.skipif(not (shared_datasets_dir() / "mq2008").exists(), reason="MQ2008 not in the shared datasets")
def test_mq2008_fingerprints_unchanged(tmp_path, monkeypatch):
    _check("mq2008", tmp_path, monkeypatch)
