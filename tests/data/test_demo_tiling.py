"""make-demo-data --queries N: the demo's lists repeated with fresh, unique ids."""
from __future__ import annotations

from cotrr_core.data.demo import generate_demo_frame, tile_demo_frame


def test_tiling_gives_n_lists_with_unique_ids():
    frame = generate_demo_frame(n_queries=3, min_candidates=4, max_candidates=5, embed_dim=8)
    big = tile_demo_frame(frame, 7)
    assert big["query_id"].nunique() == 7 and not big["candidate_id"].duplicated().any()
    assert len(big) == len(frame) * 2 + (frame["query_id"] == frame["query_id"].iloc[0]).sum()
    first = big[big["query_id"] == "q0001-t1"]
    orig = frame[frame["query_id"] == "q0001"]
    assert list(first["compliance_score"]) == list(orig["compliance_score"])
    assert tile_demo_frame(frame, 2)["query_id"].nunique() == 2


def test_cli_writes_a_tiled_parquet(tmp_path, monkeypatch):
    from cotrr_core.cli import main
    from cotrr_core.data import load_dataset
    from cotrr_core.data.demo import generate as gen

    monkeypatch.setitem(gen.SIZES, "small", dict(n_queries=3, min_candidates=4, max_candidates=5, embed_dim=8))
    assert main(["make-demo-data", "--small", "--queries", "5", "--format", "parquet", "--out", str(tmp_path)]) == 0
    data = load_dataset(tmp_path / "demo_5q_scored.parquet")
    assert data.num_queries == 5


def test_render_size_is_bounded():
    import json

    import pytest

    from cotrr_core.data.demo import generate_demo_frame, render_candidate_image

    spec = json.loads(generate_demo_frame(n_queries=1, min_candidates=2, max_candidates=2, embed_dim=8)["render_spec"][0])
    assert render_candidate_image(spec).size == (64, 64)
    for size in (30000, 3000, 0, "64", True):
        with pytest.raises(ValueError, match="size"):
            render_candidate_image({**spec, "size": size})


def test_too_few_queries_for_the_four_splits_is_a_named_error(tmp_path):
    import json

    import pytest

    from cotrr_core.data import DataError
    from cotrr_core.data.benchmarks import load_benchmark
    from tests.conftest import make_step5_rows

    path = tmp_path / "three.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_step5_rows(3, 4)))
    with pytest.raises(DataError, match="split"):
        load_benchmark(str(path))
