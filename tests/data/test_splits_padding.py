"""Query-level splits, the padded view, subset() and fingerprint()."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cotrr_core.data import DEFAULT_FRACTIONS, FeatureSpec, build_ranking_data, split_queries

SPEC = FeatureSpec.from_dict({"name": "tiny", "format": "step5", "label_min": 0, "label_max": 4,
                              "relevance_threshold": 1, "tokens": [
                                  {"name": "vec", "fields": ["v"], "dim": 3},
                                  {"name": "pair", "fields": ["a", "b"]}]})
LENGTHS = {"q0": 3, "q1": 5, "q2": 2, "q3": 4}


def make_data(lengths: dict[str, int] = LENGTHS):
    """Queries with known lengths; candidate j of query q has rank j+1 but is written in reverse."""
    rows = []
    for qn, (q, n) in enumerate(lengths.items()):
        for j in reversed(range(n)):
            rows.append({"query_id": q, "candidate_id": f"{q}_c{j}", "score": float(j % 5),
                         "v": [100 * qn + j + 1, 0.5, -1.0], "a": qn + 1.0, "b": j + 1.0,
                         "first_stage_rank": j + 1})
    frame = pd.DataFrame(rows).rename(columns={"score": "compliance_score"})
    frame["_line"] = np.arange(1, len(frame) + 1)
    return build_ranking_data(frame, SPEC, "memory")


# ---------- split_queries ----------

IDS = [f"query-{i}" for i in range(5000)]


def _as_sets(ids, splits):
    return {k: {ids[i] for i in v} for k, v in splits.items()}


def test_split_is_deterministic():
    a, b = split_queries(IDS, seed=3), split_queries(list(IDS), seed=3)
    assert a.keys() == b.keys() == DEFAULT_FRACTIONS.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_split_is_disjoint_and_covers_every_query():
    splits = split_queries(IDS)
    all_idx = np.concatenate(list(splits.values()))
    assert len(all_idx) == len(IDS) == len(set(all_idx.tolist()))
    assert set(all_idx.tolist()) == set(range(len(IDS)))
    for v in splits.values():
        assert np.all(np.diff(v) > 0)  # sorted indices


def test_split_sizes_roughly_match_fractions():
    splits = split_queries(IDS, seed=0)
    for name, frac in DEFAULT_FRACTIONS.items():
        share = len(splits[name]) / len(IDS)
        assert abs(share - frac) < 0.025, (name, share, frac)
    custom = split_queries(IDS, {"a": 1, "b": 3}, seed=1)  # fractions are normalised
    assert abs(len(custom["a"]) / len(IDS) - 0.25) < 0.025


def test_zero_fraction_split_is_empty():
    splits = split_queries(IDS, {"train": 0.5, "none": 0.0, "test": 0.5})
    assert len(splits["none"]) == 0
    assert len(splits["train"]) + len(splits["test"]) == len(IDS)


def test_query_keeps_its_split_when_other_queries_are_added_or_removed():
    full = _as_sets(IDS, split_queries(IDS, seed=7))
    fewer = IDS[::3]
    more = [f"new-{i}" for i in range(700)] + list(reversed(IDS))
    for ids in (fewer, more):
        part = _as_sets(ids, split_queries(ids, seed=7))
        for name in full:
            old_here = full[name] & set(ids)
            assert old_here == part[name] & set(IDS), name


def test_different_seeds_give_different_splits():
    a = _as_sets(IDS, split_queries(IDS, seed=0))
    b = _as_sets(IDS, split_queries(IDS, seed=1))
    assert a["test"] != b["test"]
    moved = sum(len(a[k] - b[k]) for k in a)
    assert moved > len(IDS) // 4


def test_bad_fractions_rejected():
    with pytest.raises(ValueError):
        split_queries(IDS, {"a": -0.1, "b": 1.1})
    with pytest.raises(ValueError):
        split_queries(IDS, {"a": 0, "b": 0})


def test_split_of_no_queries():
    splits = split_queries([])
    assert all(len(v) == 0 for v in splits.values())


# ---------- padded() ----------

def test_padded_shapes_mask_and_values():
    data = make_data()
    p = data.padded()
    B, L = 4, 5
    assert p.tokens["vec"].shape == (B, L, 3) and p.tokens["pair"].shape == (B, L, 2)
    assert p.labels.shape == (B, L) and p.mask.shape == (B, L)
    assert p.mask.dtype == bool and p.tokens["vec"].dtype == np.float32 and p.labels.dtype == np.float32
    assert p.mask.sum(axis=1).tolist() == [3, 5, 2, 4]
    for b, n in enumerate([3, 5, 2, 4]):
        assert p.mask[b, :n].all() and not p.mask[b, n:].any()
        rows = data.rows(b)
        np.testing.assert_array_equal(p.tokens["vec"][b, :n], data.features["vec"][rows])
        np.testing.assert_array_equal(p.tokens["pair"][b, :n], data.features["pair"][rows])
        np.testing.assert_array_equal(p.labels[b, :n], data.labels[rows])
        # padded slots are zero, not copies of row 0
        assert not p.tokens["vec"][b, n:].any() and not p.tokens["pair"][b, n:].any()
        assert not p.labels[b, n:].any()
    np.testing.assert_array_equal(p.query_index, np.arange(4))


def test_padded_chosen_queries_pad_to_their_own_longest():
    data = make_data()
    p = data.padded([2, 0])
    assert p.tokens["vec"].shape == (2, 3, 3)
    assert p.mask.tolist() == [[True, True, False], [True, True, True]]
    # first slot of each list is original rank 1: v[0] = 100 * qn + 1
    assert p.tokens["vec"][:, 0, 0].tolist() == [201.0, 1.0]
    np.testing.assert_array_equal(p.query_index, [2, 0])


def test_padded_max_len_truncation_keeps_original_top():
    data = make_data()
    p = data.padded(max_len=3)
    assert p.tokens["vec"].shape == (4, 3, 3)
    assert p.mask.sum(axis=1).tolist() == [3, 3, 2, 3]
    # the kept slots are ranks 1..3 of each list, in order
    np.testing.assert_array_equal(p.tokens["pair"][1, :, 1], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(p.tokens["vec"][3, :, 0], [301.0, 302.0, 303.0])
    assert not p.tokens["vec"][2, 2].any()
    # max_len longer than every list changes nothing
    np.testing.assert_array_equal(data.padded(max_len=50).tokens["vec"], data.padded().tokens["vec"])


def test_padded_batch_to_torch():
    torch = pytest.importorskip("torch")
    padded = make_data().padded()
    tokens, mask, labels = padded.batch(slice(None))
    assert tokens["vec"].shape == (4, 5, 3) and tokens["vec"].dtype == torch.float32
    assert mask.dtype == torch.bool and labels.shape == (4, 5)
    # a batch is trimmed to its own longest list
    short = int(padded.mask.sum(1).argmin())
    tokens, mask, _ = padded.batch([short])
    assert mask.shape == (1, int(padded.mask[short].sum())) and mask.all()
    np.testing.assert_array_equal(tokens["vec"][0].numpy(), padded.tokens["vec"][short, :mask.shape[1]])


def test_padded_of_no_queries():
    p = make_data().padded([])
    assert p.mask.shape == (0, 0) and p.tokens["vec"].shape == (0, 0, 3)


# ---------- subset() ----------

def test_subset_keeps_candidate_order_and_given_query_order():
    data = make_data()
    sub = data.subset([3, 1])
    assert sub.query_ids.tolist() == ["q3", "q1"]
    assert sub.offsets.tolist() == [0, 4, 9]
    assert sub.candidate_ids.tolist() == [f"q3_c{j}" for j in range(4)] + [f"q1_c{j}" for j in range(5)]
    np.testing.assert_array_equal(sub.features["vec"][:4], data.features["vec"][data.rows(3)])
    np.testing.assert_array_equal(sub.labels[4:], data.labels[data.rows(1)])
    assert sub.extras["first_stage_rank"].tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 5]
    assert len(sub.extras) == sub.num_candidates


def test_subset_empty_and_full():
    data = make_data()
    empty = data.subset([])
    assert empty.num_queries == 0 and empty.num_candidates == 0 and empty.offsets.tolist() == [0]
    full = data.subset(range(data.num_queries))
    assert full.fingerprint() == data.fingerprint()


def test_original_order_within_lists_comes_from_rank_not_file_order():
    data = make_data()
    assert data.candidate_ids[data.rows(0)].tolist() == ["q0_c0", "q0_c1", "q0_c2"]


# ---------- fingerprint() ----------

def test_fingerprint_is_stable_and_changes_with_content():
    data = make_data()
    base = data.fingerprint()
    assert base == make_data().fingerprint()

    data.labels[3] += 1
    assert data.fingerprint() != base
    data.labels[3] -= 1
    assert data.fingerprint() == base

    data.features["pair"][0, 1] = 42.0
    assert data.fingerprint() != base


def test_fingerprint_changes_when_ids_or_grouping_change():
    a = make_data({"q0": 2, "q1": 3})
    b = make_data({"q0": 2, "q1": 3})
    b.candidate_ids[0] = "other"
    assert a.fingerprint() != b.fingerprint()
    # same rows, same query ids, but one candidate moved from list 1 to list 0
    c = make_data({"q0": 2, "q1": 3})
    c.offsets = np.array([0, 3, 5])
    assert a.fingerprint() != c.fingerprint()
