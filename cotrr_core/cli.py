"""`python -m cotrr_core ...`: thin wiring from the command line to the library."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cotrr_core.config import ConfigError, parse_override
from cotrr_core.data import DataError, FeatureSpec, load_dataset
from cotrr_core.data.limits import MAX_FEATURE_INDEX

__all__ = ["main"]


def _spec(path: str | None) -> FeatureSpec | None:
    return FeatureSpec.load(path) if path else None


STREAM_VALIDATE_BYTES = 256 * 2**20  # larger Step5 JSONL / Parquet files are validated chunk by chunk


def cmd_validate(args: argparse.Namespace) -> int:
    """Load report, token dims and the spec used (given with --spec, saved beside the file, or inferred) as JSON."""
    from cotrr_core.data.infer import resolve_spec
    from cotrr_core.data.loaders import infer_format
    from cotrr_core.data.stream import STREAM_FORMATS, validate_file

    fmt, spec = args.format or infer_format(args.file), _spec(args.spec)
    if fmt != "letor" and spec is None and Path(args.file).exists():
        spec = resolve_spec(args.file, fmt, args.file)
    if fmt in STREAM_FORMATS and spec.format == "step5" and Path(args.file).exists() \
            and Path(args.file).stat().st_size > STREAM_VALIDATE_BYTES:
        out = validate_file(args.file, spec, fmt=fmt, on_small_list=args.small_lists)
        print(out["report"])
        print(f"tokens: {out['token_dims']}; relevant share: {out['relevant_share']:.3f} (validated in chunks)")
    else:
        data = load_dataset(args.file, fmt, spec, on_small_list=args.small_lists, max_features=args.max_features)
        spec = data.spec
        print(data.report)
        print(f"tokens: {data.token_dims}; relevant share: {data.relevant().mean():.3f}")
    print("spec:", json.dumps(spec.to_dict(), indent=1))
    return 0


def cmd_make_demo_data(args: argparse.Namespace) -> int:
    import time

    from cotrr_core.data.demo import SIZES, generate_demo_frame, write_demo_jsonl, write_demo_parquet
    from cotrr_core.data.demo.generate import demo_cache_path, read_demo_frame, write_tiled

    size = "small" if args.small else "default"
    t0 = time.perf_counter()
    if args.queries and args.seed == 0:  # tiles of the demo exactly as the app loads it (its cached Parquet)
        frame = read_demo_frame(demo_cache_path(size))
    else:
        frame = generate_demo_frame(**SIZES[size], seed=args.seed)
    ext = "parquet" if args.format == "parquet" else "jsonl"
    if args.queries:  # written one copy of the lists at a time: 10^6 candidates fit in memory
        out = Path(args.out) / f"demo_{args.queries}q_scored.{ext}"
        rows = write_tiled(frame, args.queries, out, ext)
        print(f"wrote {out}: {args.queries} queries (at most), {rows} candidates in {time.perf_counter() - t0:.1f} s")
        return 0
    out = Path(args.out) / f"demo_{size}_scored.{ext}"
    (write_demo_parquet if ext == "parquet" else write_demo_jsonl)(frame, out)
    print(f"wrote {out}: {frame['query_id'].nunique()} queries, {len(frame)} candidates "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_evaluate_order(args: argparse.Namespace) -> int:
    from cotrr_core.data.benchmarks import load_benchmark
    from cotrr_core.evaluation.compare import evaluate_original_order

    bench = load_benchmark(args.dataset, seed=args.seed, spec=_spec(args.spec))
    data = bench.splits[args.split]
    result = evaluate_original_order(data, no_relevant=args.no_relevant)
    print(f"{bench.name} [{args.split}] original order ({data.num_queries} queries; "
          f"queries without a relevant candidate: {args.no_relevant})")
    for key, value in result.items():
        print(f"  {key:>8}: {value:.4f}" if isinstance(value, float) else f"  {key:>8}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cotrr_core.config import RunConfig
    from cotrr_core.data.benchmarks import load_benchmark, split_files_benchmark
    from cotrr_core.data.split_files import checked_files, write_splits
    from cotrr_core.training.recipe import auto_config, fast_config
    from cotrr_core.training.runs import new_run_dir
    from cotrr_core.training.trainer import TrainingCancelled, fit

    if args.resume:
        from cotrr_core.artifacts import stored_config
        from cotrr_core.io import read_json
        from cotrr_core.training.runs import read_status

        run_dir = Path(args.resume)
        if read_status(run_dir).get("state") == "done":
            print(f"{run_dir} has finished: nothing to resume (train a new run to change it)")
            return 0
        if not (run_dir / "config.json").exists():
            raise ConfigError(f"{run_dir}: no config.json (stopped before training began); start a new run")
        meta = read_json(run_dir / "config.json")
        config, dataset = stored_config(meta, run_dir), meta["dataset"]
        bench = load_benchmark(dataset, seed=args.seed, spec=FeatureSpec.from_dict(meta["spec"], str(run_dir)))
    else:
        files = {"train": args.train, "val": args.val, "test": args.test, "cal": args.cal}
        predefined = any(files.values())
        if predefined:  # the run will hold a splits file naming them: its dataset, reloadable like any
            if args.dataset:
                raise ConfigError("give either --dataset or --train/--val/--test, not both")
            files = checked_files(files, "--train/--val/--test")
            dataset = Path(files["train"]).stem
            bench = split_files_benchmark(files, dataset, seed=args.seed, spec=_spec(args.spec))
        else:
            dataset = args.dataset or "demo"
            bench = load_benchmark(dataset, seed=args.seed, spec=_spec(args.spec))
        if args.config or args.fast:
            config = RunConfig.load(args.config) if args.config else fast_config()
        else:  # the automatic recipe: settings from the training split's size and feature kinds
            config, rule = auto_config(bench.splits["train"])
            print(rule)
        config = config.with_overrides(dict(parse_override(o) for o in args.set or []))
        run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(args.name or Path(dataset).stem)
        run_dir.mkdir(parents=True, exist_ok=True)
        if predefined:
            bench.name = str(write_splits(run_dir / "data.splits.json", files).resolve())
    print(f"run: {run_dir}")
    try:
        with _queued(run_dir):  # app launches wait for a training slot (COTRR_TRAINING_SLOTS)
            metrics = fit(bench, config, run_dir, resume=bool(args.resume), on_progress=_print_progress)
    except TrainingCancelled:
        print("\ncancelled; resume with: python -m cotrr_core train --resume", run_dir)
        return 130
    print()
    if "test" in metrics:
        for name in ("original", "cotrr"):
            m = metrics["test"][name]
            print(f"  test {name:>8}: nDCG@10 {m['ndcg@10']:.4f}  C@1 {m['c@1']:.4f}  MRR {m['mrr']:.4f}")
    return 0


def _queued(run_dir: Path):
    import contextlib
    import os

    from cotrr_core.training.jobs import SLOTS_ENV, training_slot
    from cotrr_core.training.runs import runs_root

    slots = os.environ.get(SLOTS_ENV)
    return training_slot(runs_root(), run_dir, int(slots)) if slots else contextlib.nullcontext()


def _print_progress(progress: float, message: str) -> None:
    bar = "#" * int(30 * progress)
    print(f"\r[{bar:<30}] {100 * progress:5.1f}% {message:<60}", end="", flush=True)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from cotrr_core.calibration.evaluate import calibrate_run

    section = calibrate_run(args.run_dir, method=args.method, mc_samples=args.mc_samples)
    print(f"calibrators fitted on {section['cal_queries']} calibration queries, measured on "
          f"{section['test_queries']} held-out test queries; stored: {section['method']}")
    print(f"  {'calibrator':<13}{'ECE':>8}{'adaECE':>8}{'MCE':>8}{'Brier':>8}{'logloss':>9}")
    for name, row in section["table"].items():
        print(f"  {name:<13}{row['ece']:8.4f}{row['adaptive_ece']:8.4f}{row['mce']:8.4f}"
              f"{row['brier']:8.4f}{row['log_loss']:9.4f}")
    u = section["uncertainty"]
    print(f"  MC-dropout ({u['mc_samples']} samples) AURC {u['aurc']:.4f} vs random {u['random_aurc']:.4f} "
          f"(oracle {u['oracle_aurc']:.4f})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cotrr_core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate", help="load a file and print the load report")
    s.add_argument("file")
    s.add_argument("--format", choices=["jsonl", "csv", "parquet", "letor"])
    s.add_argument("--spec", help="feature spec JSON (default: the file's saved spec, else one inferred from it)")
    s.add_argument("--small-lists", choices=["skip", "reject"], default="skip")
    s.add_argument("--max-features", type=int, default=MAX_FEATURE_INDEX,
                   help=f"highest LETOR feature index accepted without a spec (default {MAX_FEATURE_INDEX})")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("make-demo-data", help="write the built-in demo benchmark as Step5 JSONL")
    s.add_argument("--small", action="store_true")
    s.add_argument("--queries", type=int, help="N lists, the demo's lists repeated with fresh ids (scale tests)")
    s.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    s.add_argument("--out", default="artifacts/datasets")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_make_demo_data)

    s = sub.add_parser("evaluate-order", help="metrics of the original (first-stage) order")
    s.add_argument("--dataset", default="demo", help="demo, demo-small, mq2008, mslr-tiny or a file")
    s.add_argument("--split", default="test", choices=["train", "val", "cal", "test"])
    s.add_argument("--no-relevant", default="exclude", choices=["exclude", "one", "zero"])
    s.add_argument("--spec", help="feature spec JSON for a file dataset (default: saved beside it, else inferred)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json")
    s.set_defaults(func=cmd_evaluate_order)

    s = sub.add_parser("train", help="train a reranker into artifacts/runs/<run_id>/")
    s.add_argument("--dataset", help="demo (default), demo-small, mq2008, mslr-tiny, flickr8k-dev, a file (hash "
                                     "split 60/15/10/15) or a *.splits.json naming predefined split files")
    s.add_argument("--train", help="predefined splits instead of --dataset: the training file (with --val, --test)")
    s.add_argument("--val", help="the validation file (cut into val / cal halves unless --cal is given)")
    s.add_argument("--test", help="the test file")
    s.add_argument("--cal", help="the calibration file (optional)")
    s.add_argument("--config", help="RunConfig JSON (default: the automatic recipe, recipe.auto_config)")
    s.add_argument("--fast", action="store_true", help="the quick first-launch config")
    s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override, e.g. train.epochs=5")
    s.add_argument("--name")
    s.add_argument("--run-dir")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    s.add_argument("--spec", help="feature spec JSON for a file dataset (default: saved beside it, else inferred)")
    s.add_argument("--seed", type=int, default=0, help="split seed")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("calibrate", help="fit calibrators on the calibration split, report held-out metrics")
    s.add_argument("run_dir")
    s.add_argument("--method", default="isotonic", choices=["temperature", "platt", "isotonic"])
    s.add_argument("--mc-samples", type=int, default=5)
    s.set_defaults(func=cmd_calibrate)
    _add_serving_commands(sub)

    s = sub.add_parser("simulate", help="A/B rollout, shadow mode or top-M trade-off on a run's real outputs")
    s.add_argument("kind", choices=["ab", "shadow", "topm"])
    s.add_argument("run_dir")
    s.add_argument("--dataset", help="default: the run's own dataset (test split)")
    s.add_argument("--units", type=int, default=2000)
    s.add_argument("--days", type=int, default=7)
    s.add_argument("--share", type=float, default=0.5, help="treatment share of units")
    s.add_argument("--click-model", choices=["cascade", "pbm"], default="pbm")
    s.add_argument("--latency-budget-ms", type=float, default=5.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json")
    s.set_defaults(func=cmd_simulate)
    return p


def cmd_simulate(args: argparse.Namespace) -> int:
    import pandas as pd

    from cotrr_core.io import write_json
    from cotrr_core.simulate.report import simulate_run, to_jsonable

    result = simulate_run(args.kind, args.run_dir, args.dataset, seed=args.seed, n_units=args.units,
                          days=args.days, share=args.share, click_model=args.click_model,
                          latency_budget_ms=args.latency_budget_ms)
    print(f"simulate {args.kind}: run {result['run']} on {result['dataset']} "
          f"({result['test_queries']} test queries)")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 4):
        print(result["table"].to_string(index=False))
    print(json.dumps(result["summary"], indent=1, default=float))
    if args.json:
        write_json(args.json, to_jsonable(result))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from cotrr_core.training.runs import registry

    rows = registry(Path(args.root) if args.root else None)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    for r in rows:
        ndcg = "" if r["test_ndcg@10"] is None else f"{r['test_ndcg@10']:.4f}"
        dataset = r["dataset"].get("name") if isinstance(r["dataset"], dict) else r["dataset"]
        print(f"{r['id']:<40} {r['state']:<10} {ndcg:>7}  {dataset}")
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    from cotrr_core.serving.batch import rerank_file

    summary = rerank_file(args.run_dir, args.file, args.out, top_m=args.top_m, mc_samples=args.mc_samples,
                          fmt=args.format, spec=_spec(args.spec))
    print(f"reranked {summary['lists']} lists / {summary['candidates']} candidates -> {summary['out']}; "
          f"reranked {summary['reranked']}, fallbacks {summary['fallbacks'] or 'none'} "
          f"({summary['seconds']:.2f} s)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from cotrr_core.serving.serve import serve

    policy = {"mode": args.policy, "share": args.share, "salt": args.salt}
    serve(args.run_dir, host=args.host, port=args.port, workers=args.workers, policy=policy,
          token=args.token or os.environ.get("COTRR_SERVE_TOKEN"), log_dir=args.log_dir, threads=args.threads,
          limits={"max_candidates": args.max_candidates, "max_body_bytes": args.max_body_bytes,
                  "max_budget_ms": args.max_budget_ms, "body_timeout_s": args.body_timeout_s})
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from cotrr_core.serving.export import export_onnx

    try:
        info = export_onnx(args.run_dir, args.onnx, opset=args.opset)
    except (ImportError, RuntimeError) as exc:  # onnx / onnxscript are optional (requirements-dev.txt)
        print(f"error: ONNX export failed: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(f"wrote {info['path']} (exporter {info['exporter']}, opset {info['opset']}, inputs {info['inputs']})")
    return 0


def _add_serving_commands(sub) -> None:
    s = sub.add_parser("runs", help="the run registry: id, dataset, state, test nDCG@10, created")
    s.add_argument("--json", action="store_true", help="print a JSON list (the rows the app uses)")
    s.add_argument("--root", help="runs directory (default: $COTRR_RUNS or artifacts/runs)")
    s.set_defaults(func=cmd_runs)

    s = sub.add_parser("rerank", help="rerank every list of a file with a trained run")
    s.add_argument("run_dir")
    s.add_argument("file")
    s.add_argument("--out", help="output .jsonl or .csv (default: <file stem>.reranked.jsonl)")
    s.add_argument("--top-m", type=int)
    s.add_argument("--mc-samples", type=int)
    s.add_argument("--format", choices=["jsonl", "csv", "parquet", "letor"])
    s.add_argument("--spec", help="how this file names the run's tokens (default: the run's own spec)")
    s.set_defaults(func=cmd_rerank)

    s = sub.add_parser("serve", help="serve a run over HTTP: /v1/rerank, /v1/rerank_batch, /healthz, /readyz, /metrics")
    s.add_argument("run_dir")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    s.add_argument("--threads", type=int, default=1, help="torch intra-op threads per worker")
    s.add_argument("--policy", choices=["off", "shadow", "rollout", "full"], default="full")
    s.add_argument("--share", type=float, default=0.0, help="rollout share in [0, 1] (--policy rollout)")
    s.add_argument("--salt", default="cotrr")
    s.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: $COTRR_SERVE_TOKEN)")
    s.add_argument("--log-dir", help="write decision logs (JSONL, rotated) here")
    s.add_argument("--max-candidates", type=int, default=2000, help="candidates per list (413 past it)")
    s.add_argument("--max-body-bytes", type=int, default=16 * 2**20, help="request body size (413 past it)")
    s.add_argument("--max-budget-ms", type=float, default=2000.0, help="largest time_budget_ms a request may ask")
    s.add_argument("--body-timeout-s", type=float, default=10.0, help="a body slower than this is cut off (408)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("export", help="export a run's model to ONNX")
    s.add_argument("run_dir")
    s.add_argument("--onnx", required=True, help="output .onnx path")
    s.add_argument("--opset", type=int, default=18)
    s.set_defaults(func=cmd_export)


def main(argv: list[str] | None = None) -> int:
    """Run a command; bad input (and an unreadable file) is one `error: ...` line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ConfigError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (MemoryError, RecursionError) as exc:
        print(f"error: the input is too large or too deeply nested to process ({type(exc).__name__})",
              file=sys.stderr)
        return 2


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).splitlines())
