"""Training from the memory-mapped dataset cache is the same training as from data held in memory."""
from __future__ import annotations

import numpy as np

from cotrr_core.data.benchmarks import load_benchmark
from cotrr_core.io import read_json
from cotrr_core.training.runs import read_history
from cotrr_core.training.trainer import fit
from tests.training.test_trainer import tiny_config


def test_memmapped_and_in_memory_data_train_identically(synthetic_file, tmp_path, monkeypatch):
    monkeypatch.setenv("COTRR_CACHE", str(tmp_path / "cache"))
    cached = load_benchmark(str(synthetic_file))
    assert isinstance(cached.splits["train"].features["clip_img"], np.memmap)
    monkeypatch.setenv("COTRR_CACHE", "off")
    whole = load_benchmark(str(synthetic_file))
    cfg = tiny_config(epochs=2, max_list_len=6, input_noise=0.05)
    m_disk = fit(cached, cfg, tmp_path / "disk", calibrate=False)
    m_mem = fit(whole, cfg, tmp_path / "mem", calibrate=False)
    for a, b in zip(read_history(tmp_path / "disk"), read_history(tmp_path / "mem")):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert m_disk["test"] == m_mem["test"]
    assert read_json(tmp_path / "disk" / "config.json")["data_fingerprint"] == \
        read_json(tmp_path / "mem" / "config.json")["data_fingerprint"]
    assert read_json(tmp_path / "disk" / "scaler.json") == read_json(tmp_path / "mem" / "scaler.json")
