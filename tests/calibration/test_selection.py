"""Calibrator selection on the cal split only: out-of-fold ECE, never test."""
from __future__ import annotations

import numpy as np

from cotrr_core.calibration.evaluate import METHODS, cal_cv_table, select_method


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
