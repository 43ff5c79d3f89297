"""`python -m cotrr_core ...`: thin wiring from the command line to the library."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cotrr_core.config import ConfigError
from cotrr_core.data import DataError, FeatureSpec, load_dataset

__all__ = ["main"]


def _spec(path: str | None) -> FeatureSpec | None:
    return FeatureSpec.load(path) if path else None


def cmd_validate(args: argparse.Namespace) -> int:
    data = load_dataset(args.file, args.format, _spec(args.spec), on_small_list=args.small_lists)
    print(data.report)
    print(f"tokens: {data.token_dims}; relevant share: {data.relevant().mean():.3f}")
    return 0


def cmd_make_demo_data(args: argparse.Namespace) -> int:
    import time

    from cotrr_core.data.demo import SIZES, generate_demo_frame, write_demo_jsonl

    size = "small" if args.small else "default"
    t0 = time.perf_counter()
    frame = generate_demo_frame(**SIZES[size], seed=args.seed)
    out = Path(args.out) / f"demo_{size}_scored.jsonl"
    write_demo_jsonl(frame, out)
    print(f"wrote {out}: {frame['query_id'].nunique()} queries, {len(frame)} candidates "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_evaluate_order(args: argparse.Namespace) -> int:
    from cotrr_core.data.benchmarks import load_benchmark
    from cotrr_core.evaluation import evaluate_original_order

    bench = load_benchmark(args.dataset, seed=args.seed)
    data = bench.splits[args.split]
    result = evaluate_original_order(data, no_relevant=args.no_relevant)
    print(f"{bench.name} [{args.split}] original order ({data.num_queries} queries; "
          f"queries without a relevant candidate: {args.no_relevant})")
    for key, value in result.items():
        print(f"  {key:>8}: {value:.4f}" if isinstance(value, float) else f"  {key:>8}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cotrr_core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate", help="load a file and print the load report")
    s.add_argument("file")
    s.add_argument("--format", choices=["jsonl", "csv", "parquet", "letor"])
    s.add_argument("--spec", help="feature spec JSON")
    s.add_argument("--small-lists", choices=["skip", "reject"], default="skip")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("make-demo-data", help="write the built-in demo benchmark as Step5 JSONL")
    s.add_argument("--small", action="store_true")
    s.add_argument("--out", default="artifacts/datasets")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_make_demo_data)

    s = sub.add_parser("evaluate-order", help="metrics of the original (first-stage) order")
    s.add_argument("--dataset", default="demo", help="demo, demo-small, mq2008, mslr-tiny or a file")
    s.add_argument("--split", default="test", choices=["train", "val", "cal", "test"])
    s.add_argument("--no-relevant", default="exclude", choices=["exclude", "one", "zero"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json")
    s.set_defaults(func=cmd_evaluate_order)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
