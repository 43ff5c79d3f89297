"""AnnotatedList: an answer's items annotated when read, equal to the eager annotation."""
from __future__ import annotations

import numpy as np
import pytest

from cotrr_core.serving.results import AnnotatedList


def eager(rows, order, raw, probs, unc):
    """The annotation written out for every item (the reference)."""
    m = 0 if raw is None else len(raw)
    out = []
    for new, k in enumerate(order, start=1):
        item = rows[k]
        if not isinstance(item, dict):
            out.append(item)
            continue
        scored = k < m
        out.append({**item, "original_rank": k + 1, "new_rank": new,
                    "raw_score": float(raw[k]) if scored else None,
                    "probability": float(probs[k]) if scored else None,
                    "uncertainty": float(unc[k]) if scored and unc is not None else None})
    return out


@pytest.fixture
def answer():
    rows = [{"candidate_id": f"c{i}", "x": i} for i in range(8)] + ["not a dict"]
    raw = np.array([0.1, 0.9, 0.5])
    order = np.concatenate([np.argsort(-raw, kind="stable"), np.arange(3, len(rows))])
    args = (rows, order, raw, 1 / (1 + np.exp(-raw)), np.array([0.01, 0.02, 0.03]))
    return AnnotatedList(*args), eager(*args), rows


def test_equals_the_eager_annotation(answer):
    lazy, ref, _ = answer
    assert len(lazy) == len(ref)
    assert lazy == ref and ref == lazy
    assert list(lazy) == ref
    assert lazy[0]["candidate_id"] == "c1" and lazy[0]["new_rank"] == 1 and lazy[0]["original_rank"] == 2
    assert lazy[-1] == "not a dict"
    assert lazy[3]["raw_score"] is None and lazy[3]["new_rank"] == 4


def test_indexing_like_a_list(answer):
    lazy, ref, _ = answer
    assert lazy[2:5] == ref[2:5] and lazy[::-1] == ref[::-1]
    assert lazy[-2] == ref[-2]
    with pytest.raises(IndexError):
        lazy[len(ref)]
    with pytest.raises(IndexError):
        lazy[-len(ref) - 1]
    assert sorted(lazy[:3], key=lambda c: c["original_rank"])[0]["candidate_id"] == "c0"


def test_reads_are_stable_and_inputs_untouched(answer):
    lazy, _, rows = answer
    first = lazy[0]
    first["note"] = "kept"
    assert lazy[0] is first and lazy[0]["note"] == "kept"  # the same dict, as in a list
    assert "new_rank" not in rows[1]  # the caller's dicts are copied, never annotated in place


def test_unscored_answer_keeps_the_order():
    rows = [{"candidate_id": str(i)} for i in range(4)]
    lazy = AnnotatedList(rows, np.arange(4), None, None, None)
    assert [c["new_rank"] for c in lazy] == [1, 2, 3, 4]
    assert all(c["probability"] is None for c in lazy)
    assert lazy != [1, 2] and (lazy == "abc") is False


def test_concatenates_like_a_list(answer):
    lazy, ref, _ = answer
    assert lazy + ["x"] == ref + ["x"] and ["x"] + lazy == ["x"] + ref
    assert lazy + lazy == ref + ref and isinstance(lazy + [], list)
    with pytest.raises(TypeError):
        lazy + "abc"
