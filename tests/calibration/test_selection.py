"""Calibrator selection on held-out calibration data only (cal, + val when it is its own split): out-of-fold ECE, never test."""
from __future__ import annotations

import numpy as np

from cotrr_core.calibration.evaluate import METHODS, cal_cv_table, fit_splits, select_method
from cotrr_core.data.benchmarks import Benchmark


def test_out_of_fold_table_and_selection():
    rng = np.random.default_rng(0)
    s = rng.normal(size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-2 * s))).astype(int)  # Platt-shaped truth
    groups = np.repeat(np.arange(200), 10)
    table = cal_cv_table(s, y, groups)
    assert set(table) == set(METHODS)
    assert all(0.0 <= t["ece"] <= 1.0 for t in table.values())
    assert select_method(table) == min(METHODS, key=lambda m: table[m]["ece"])
    assert table["platt"]["ece"] < 0.05


def test_selection_prefers_the_simpler_method_on_ties():
    same = {"ece": 0.01}
    assert select_method({m: same for m in METHODS}) == METHODS[0]


def test_calibration_data_is_cal_plus_a_held_out_val_never_train():
    train, val, cal, test = object(), object(), object(), object()
    assert fit_splits(Benchmark("b", {"train": train, "val": val, "cal": cal, "test": test}, "")) == ["cal", "val"]
    assert fit_splits(Benchmark("b", {"train": train, "val": train, "cal": train, "test": test}, "")) == ["cal"]
    assert fit_splits(Benchmark("b", {"train": train, "val": cal, "cal": cal, "test": test}, "")) == ["cal"]

