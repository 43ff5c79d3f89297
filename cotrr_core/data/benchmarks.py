"""Named benchmarks with their fixed splits: the built-in demo, MQ2008, the MSLR sample, or any file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cotrr_core.data.dataset import RankingData
from cotrr_core.data.errors import DataError
from cotrr_core.data.loaders import infer_format, load_dataset
from cotrr_core.data.spec import FeatureSpec, builtin_spec
from cotrr_core.data.split_files import is_splits_file, read_splits
from cotrr_core.data.splits import split_queries
from cotrr_core.io import REPO_ROOT

__all__ = ["Benchmark", "load_benchmark", "split_files_benchmark", "BENCHMARKS", "shared_datasets_dir"]

BENCHMARKS = ("demo", "demo-small", "mq2008", "mslr-tiny", "flickr8k-dev")


@dataclass
class Benchmark:
    """A dataset cut into query-level splits: train / val (early stop) / cal (calibrator) / test."""

    name: str
    splits: dict[str, RankingData]
    note: str

    @property
    def spec(self) -> FeatureSpec:
        return self.splits["train"].spec


def shared_datasets_dir() -> Path:
    """Real benchmark files: $COTRR_DATASETS, else ../shared/datasets beside the repository."""
    return Path(os.environ.get("COTRR_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


def _hash_split(data: RankingData, seed: int) -> dict[str, RankingData]:
    """train / val / cal / test by a seeded hash of the query id; DataError when one comes out empty."""
    splits = split_queries(data.query_ids, seed=seed)
    empty = [k for k, v in splits.items() if len(v) == 0]
    if empty:
        raise DataError(data.report.source, None, "query_id",
                        f"{data.num_queries} usable queries leave the {', '.join(empty)} split(s) empty; "
                        "training needs train, val, cal and test queries (a few dozen at least)")
    return {k: data.subset(v) for k, v in splits.items()}


def load_benchmark(name: str, seed: int = 0, spec: FeatureSpec | None = None) -> Benchmark:
    """Load a named benchmark or a file, cut into whole-query splits.

    Args:
        name: one of BENCHMARKS, a file path (hash split), or a `*.splits.json` naming predefined train / val /
            test files (data/split_files.py).
        seed: the seed of the query-id hash split (files and the demo).
        spec: a feature spec overriding the benchmark's own.
    Returns:
        Benchmark with splits "train", "val" (early stopping), "cal" (calibrators) and "test".
    """
    if name in ("demo", "demo-small"):
        from cotrr_core.data.demo import demo_cache_path

        size = "small" if name == "demo-small" else "default"
        splits = _file_splits(demo_cache_path(size), "parquet", builtin_spec("step5"), f"demo ({size})", seed)
        return Benchmark(name, splits, "built-in cocktail benchmark; hash split 60/15/10/15")
    if name == "mq2008":
        root = shared_datasets_dir() / "mq2008"
        mq = spec or builtin_spec("mq2008")
        val_all = load_dataset(root / "S4.txt", spec=mq)
        halves = split_queries(val_all.query_ids, {"val": 0.5, "cal": 0.5}, seed=seed)
        return Benchmark(name, {"train": load_dataset(root / "S1.txt", spec=mq),
                                "val": val_all.subset(halves["val"]), "cal": val_all.subset(halves["cal"]),
                                "test": load_dataset(root / "S5.txt", spec=mq)},
                         "MQ2008 partitions: train S1, val+cal S4 (hash halves), test S5 (= official Fold1 test)")
    if name == "mslr-tiny":
        root = shared_datasets_dir() / "mslr_web_tiny_sample"
        ms = spec or builtin_spec("mslr136")
        train = load_dataset(root / "search_tiny_train.txt", spec=ms)
        test = load_dataset(root / "search_tiny_test.txt", spec=ms)
        # 7 training queries: val/cal reuse test-free slices of train (smoke test only, say so)
        return Benchmark(name, {"train": train, "val": train, "cal": train, "test": test},
                         "MSLR tiny sample (7 train / 4 test queries): smoke test only, val=cal=train")
    if name == "flickr8k-dev":
        from cotrr_core.data.flickr8k import FLICKR8K_DIR, flickr8k_data

        return Benchmark(name, _hash_split(flickr8k_data(shared_datasets_dir() / FLICKR8K_DIR), seed),
                         "Flickr8k dev: 1000 captions, CLIP top-20 of 1000 photos; hash split by caption 60/15/10/15")
    path = Path(name)
    if is_splits_file(path) and path.is_file():
        return split_files_benchmark(read_splits(path), str(path.resolve()), seed, spec)
    if not path.exists():
        raise DataError(name, None, None, f"not a built-in benchmark {BENCHMARKS} and no such file")
    # the resolved path is the name, so a run can reload its own data later
    return Benchmark(str(path.resolve()), _file_splits(path, None, spec, str(path), seed),
                     f"{path.name}; hash split 60/15/10/15")


def split_files_benchmark(files: dict[str, Path], name: str, seed: int = 0,
                          spec: FeatureSpec | None = None) -> Benchmark:
    """A Benchmark of predefined split files {split: path} (data/split_files.py), named `name`: each file whole
    (through the cache like any file), all read with the train file's spec; val is cut into val / cal halves by
    whole queries (seeded) unless a cal file is given."""
    def whole(path: Path, spec: FeatureSpec | None) -> RankingData:
        return _file_splits(Path(path), None, spec, str(path), seed=None)["all"]

    train = whole(files["train"], spec)
    splits = {"train": train, "val": whole(files["val"], train.spec), "test": whole(files["test"], train.spec)}
    if "cal" in files:
        splits["cal"] = whole(files["cal"], train.spec)
    else:
        halves = split_queries(splits["val"].query_ids, {"val": 0.5, "cal": 0.5}, seed=seed)
        splits.update(val=splits["val"].subset(halves["val"]), cal=splits["val"].subset(halves["cal"]))
    return Benchmark(name, splits, "predefined splits: " + ", ".join(f"{k} {Path(v).name}" for k, v in files.items())
                     + ("" if "cal" in files else " (val cut into val / cal halves)"))


def _file_splits(path: Path, fmt: str | None, spec: FeatureSpec | None, name: str,
                 seed: int | None) -> dict[str, RankingData]:
    """Hash splits of a file (seed None: the whole file as split "all"): Step5 JSONL / Parquet through the
    memory-mapped cache (built on first use, data/stream.py), other formats (or COTRR_CACHE=off) loaded whole."""
    from cotrr_core.data.stream import STREAM_FORMATS, cached_splits

    fmt = fmt or infer_format(path)
    if fmt in STREAM_FORMATS and os.environ.get("COTRR_CACHE") != "off" and (spec is None or spec.format == "step5"):
        from cotrr_core.data.infer import resolve_spec

        return cached_splits(path, spec or resolve_spec(path, fmt, name), name=name, fmt=fmt, seed=seed)
    data = load_dataset(path, fmt, spec, display_name=name)
    return {"all": data} if seed is None else _hash_split(data, seed)
