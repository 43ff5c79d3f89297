"""Display glue shared by the pages: sidebar pickers, cached loads, errors, charts with CSV downloads.

No computation lives here: every number comes from cotrr_core.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from cotrr_core.training import jobs
from cotrr_core.config import ConfigError
from cotrr_core.data import DataError
from cotrr_core.data.benchmarks import BENCHMARKS, Benchmark, load_benchmark, shared_datasets_dir
from cotrr_core.io import REPO_ROOT, read_json
from cotrr_core.training.runs import RunInfo, dataset_identity, read_status, runs_for_dataset

# what a page shows as st.error instead of a traceback
ERRORS = (DataError, ConfigError, RuntimeError, ValueError, KeyError, OSError)
# the extensions load_dataset infers a format from
UPLOAD_TYPES = ["jsonl", "json", "ndjson", "csv", "parquet", "pq", "txt", "letor", "svm", "svmlight"]


def uploads_dir() -> Path:
    return Path(os.environ.get("COTRR_UPLOADS", REPO_ROOT / "artifacts" / "uploads"))


@contextlib.contextmanager
def shown_errors(what: str = "", stop: bool = True):
    """Show a library error as an in-page st.error (the message is already precise); stop the page."""
    try:
        yield
    except ERRORS as exc:
        st.error(f"{what}: {exc}" if what else str(exc))
        if stop:
            st.stop()


# ---------- cached loads ----------------------------------------------------------------------

@st.cache_resource(show_spinner="Loading the benchmark (first time builds the demo data)...", max_entries=4)
def get_benchmark(name: str) -> Benchmark:
    return load_benchmark(name)


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def _load_run(run_dir: str, stamp: float):
    from cotrr_core.training.runs import load_run

    return load_run(run_dir, device="auto")


def run_stamp(run_dir: Path) -> float:
    """Cache key part: changes when the weights or calibrator are rewritten."""
    stamps = [p.stat().st_mtime for p in (run_dir / "model.pt", run_dir / "calibrator.json") if p.exists()]
    return max(stamps, default=0.0)


def get_run(run_dir: Path):
    return _load_run(str(run_dir), run_stamp(Path(run_dir)))


@st.cache_data(show_spinner="Scoring the test split (MC dropout)...", max_entries=16)
def split_scores(run_dir: str, stamp: float, dataset: str, split: str = "test", mc_samples: int = 10):
    from cotrr_core.views import score_split

    return score_split(_load_run(run_dir, stamp), get_benchmark(dataset).splits[split], mc_samples)


# ---------- datasets and runs --------------------------------------------------------------------

def dataset_key(name: str) -> str:
    """A dataset's stable key (benchmark name, or file name @ content hash): cotrr_core.training.runs."""
    return dataset_identity(name, missing_ok=True)["key"] or Path(name).name


def dataset_label(name: str) -> str:
    return name if name in BENCHMARKS else f"upload: {Path(name).name}"


def dataset_options() -> list[str]:
    opts = ["demo", "demo-small"]
    shared = shared_datasets_dir()
    if (shared / "mq2008" / "S1.txt").exists():
        opts.append("mq2008")
    if (shared / "mslr_web_tiny_sample").exists():
        opts.append("mslr-tiny")
    up = uploads_dir()
    if up.exists():
        opts += [str(p) for p in sorted(up.iterdir()) if p.is_file() and not p.name.startswith(".")]
    return opts


def done_runs(dataset: str) -> list[RunInfo]:
    """Finished runs on this dataset (same name and content), best test nDCG@10 first."""
    return runs_for_dataset(dataset, jobs.runs_root())


def run_label(r: RunInfo) -> str:
    nd = r.metrics.get("test", {}).get("cotrr", {}).get("ndcg@10")
    return r.run_id + (f"  ·  test nDCG@10 {nd:.3f}" if nd is not None else "")


def _save_upload(upload) -> None:
    """Stage the upload and start validating it in a child process (cotrr_core.data.uploads); the file
    only replaces one of the same name once it loads, so a broken upload never costs a good file."""
    from cotrr_core.data.uploads import start_upload

    old = st.session_state.pop("upload_job", None)
    if old is not None:
        old.cancel()
    st.session_state.pop("upload_ok", None)
    st.session_state.pop("upload_error", None)
    try:
        st.session_state["upload_job"] = start_upload(upload.name, upload.getvalue(), uploads_dir())
    except DataError as exc:
        st.session_state["upload_error"] = str(exc)


@st.fragment(run_every=1.0)
def _upload_progress() -> None:
    """Poll the validating upload off the UI thread; when it is done, show its outcome on the whole app."""
    job = st.session_state.get("upload_job")
    if job is None:
        return
    result = job.poll()
    if result is None:
        share = min(job.elapsed / job.timeout_s, 1.0)
        st.progress(share, text=f"Validating {job.name}... {job.elapsed:.0f} s")
        return
    st.session_state.pop("upload_job", None)
    if result.ok:
        get_benchmark.clear()  # a file of the same name may have been replaced
        split_fingerprint.clear()
        st.session_state["upload_ok"] = result.report
        st.session_state["dataset"] = str(result.path)
    else:
        st.session_state["upload_error"] = result.error
    st.rerun(scope="app")


def _persist(widget_key: str, state_key: str) -> None:
    st.session_state[state_key] = st.session_state[widget_key]


def _picker(container, label: str, options: list, state_key: str, **kwargs):
    """A selectbox whose value survives page switches (widget state is per page; 'state_key' is not)."""
    if st.session_state.get(state_key) not in options:
        st.session_state[state_key] = options[0]
    widget_key = f"_{state_key}"
    st.session_state[widget_key] = st.session_state[state_key]
    return container.selectbox(label, options, key=widget_key, on_change=_persist, args=(widget_key, state_key),
                               **kwargs)


def leave_automatic_navigation() -> None:
    """On a fresh server a first request naming a page (/attention) runs it under Streamlit's automatic
    pages/ navigation (every file in pages/, helpers included), because app.py has not yet called
    st.navigation. Do what that call does (turn the pages/ mode off, process-wide and for good) and
    rerun, so app.py's navigation serves the same page."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        if not st.session_state.get("_left_automatic_navigation"):  # once: a rerun drops a form submit
            st.session_state["_left_automatic_navigation"] = True
            st.rerun()


def sidebar() -> None:
    """Dataset and run pickers (session_state 'dataset', 'run_id'), and the upload box."""
    leave_automatic_navigation()
    sb = st.sidebar
    sb.title("CoTRR-Stable")
    opts = dataset_options()
    _read_url(opts)
    default = jobs.default_dataset()
    if st.session_state.get("dataset") not in opts and default in opts:
        st.session_state["dataset"] = default
    _picker(sb, "Dataset", opts, "dataset", format_func=dataset_label)
    with sb.expander("Upload data (Step5 JSONL / CSV / Parquet, LETOR)"):
        up = st.file_uploader("Candidate file", type=UPLOAD_TYPES, key="upload")
        if up is not None and st.session_state.get("upload_seen") != (up.name, up.size):
            st.session_state["upload_seen"] = (up.name, up.size)
            _save_upload(up)
        if st.session_state.get("upload_job") is not None:
            _upload_progress()
        if st.session_state.get("upload_ok"):
            st.success(st.session_state["upload_ok"])
    if st.session_state.get("upload_error"):
        sb.error(f"Upload rejected: {st.session_state['upload_error']}")
    runs = done_runs(st.session_state["dataset"])
    if runs:
        labels = {r.run_id: run_label(r) for r in runs}
        _picker(sb, "Run", list(labels), "run_id", format_func=labels.get,
                help="Finished runs on this dataset, best test nDCG@10 first")
    else:
        sb.caption("No finished run on this dataset yet.")
    _write_url(run=st.session_state.get("run_id") if runs else None)


def _url_name(dataset: str) -> str:
    return dataset if dataset in BENCHMARKS else Path(dataset).name


def _read_url(opts: list[str]) -> None:
    """First run of a session: the URL's ?dataset=&run=&query= win (a shared link, a reload)."""
    if st.session_state.get("_url_read"):
        return
    st.session_state["_url_read"] = True
    params = st.query_params
    want = params.get("dataset")
    match = next((o for o in opts if _url_name(o) == want), None) if want else None
    if match:
        st.session_state["dataset"] = match
    if params.get("run"):
        st.session_state["run_id"] = params["run"]
    if params.get("query"):
        st.session_state["url_query"] = params["query"]


def _write_url(**extra) -> None:
    """Keep the selections in the URL so a view can be shared and survives a reload."""
    want = {"dataset": _url_name(st.session_state["dataset"]), **extra}
    for key, value in want.items():
        if value is None:
            st.query_params.pop(key, None)
        elif st.query_params.get(key) != str(value):
            st.query_params[key] = str(value)


@dataclass
class Context:
    dataset: str
    bench: Benchmark
    run_dir: Path
    stamp: float

    @property
    def run(self):
        return get_run(self.run_dir)

    @property
    def test(self):
        return self.bench.splits["test"]

    @property
    def metrics(self) -> dict:
        path = self.run_dir / "metrics.json"
        return read_json(path) if path.exists() else {}

    def scores(self, mc_samples: int = 10):
        return split_scores(str(self.run_dir), self.stamp, self.dataset, "test", mc_samples)


def context() -> Context:
    """Selected dataset + run, or a waiting/empty state that stops the page."""
    dataset = st.session_state.get("dataset") or jobs.default_dataset()
    if st.session_state.get("upload_error"):
        st.error(f"Upload rejected: {st.session_state['upload_error']}")
    runs = done_runs(dataset)
    run_id = st.session_state.get("run_id")
    run = next((r for r in runs if r.run_id == run_id), runs[0] if runs else None)
    if run is None:  # before loading any data: the training process should start at once
        if dataset == jobs.default_dataset():
            wait_for_default_run()
        else:
            st.info("No finished run on this dataset yet: train one on the Train page.")
            st.page_link("pages/train.py", label="Go to Train")
        st.stop()
    with shown_errors("Could not load the dataset"):
        bench = get_benchmark(dataset)
    with shown_errors("Could not load the run"):
        loaded = get_run(run.path)
    trained_on = loaded.meta.get("data_fingerprint", {}).get("test")
    if trained_on and trained_on != split_fingerprint(dataset, "test"):
        st.warning(f"The {dataset_label(dataset)} test split has changed since run {run.run_id} was trained "
                   "(data fingerprint differs): its numbers below are on the current data.")
    return Context(dataset, bench, run.path, run_stamp(run.path))


@st.cache_resource(show_spinner=False, max_entries=8)
def split_fingerprint(dataset: str, split: str) -> str:
    return get_benchmark(dataset).splits[split].fingerprint()


def wait_for_default_run() -> None:
    """First launch: start the fast default run (once) and show its progress until it is done."""
    with shown_errors("Could not start the default run"):
        run_dir = jobs.start_default_run(retry=bool(st.session_state.pop("retry_default", False)))
    st.info("First launch: training the fast default model on the built-in demo benchmark. "
            "Every page works as soon as it is done (it keeps running if you reload).")
    if run_dir is not None:
        run_progress(run_dir, rerun_app_when_done=True)
        if jobs.default_run_state()[0] == "failed":
            st.button("Retry the default run", key="retry-default",
                      on_click=lambda: st.session_state.update(retry_default=True))


@st.fragment(run_every=1.5)
def run_progress(run_dir: Path, rerun_app_when_done: bool = False) -> None:
    """Live progress of a training run from its status.json (polled)."""
    s = read_status(Path(run_dir))
    state, progress = s.get("state", "unknown"), float(s.get("progress", 0.0))
    st.progress(min(max(progress, 0.0), 1.0), text=f"{Path(run_dir).name}: {state} · {s.get('message', '')}")
    if rerun_app_when_done:  # first launch: say which step it is in and how long it has taken
        from cotrr_core.views.runs import launch_steps

        steps, eta = launch_steps(Path(run_dir).name, s)
        marks = {"done": "✅", "active": "⏳", "pending": "▫️", "failed": "❌"}
        st.markdown("  \n".join(f"{marks[r['state']]} {i}. {r['step']}" for i, r in enumerate(steps, 1)))
        if eta:
            st.caption(eta)
    watching = st.session_state.setdefault("_runs_in_progress", set())
    if state == "done":
        # once, when this session saw it finish: the rest of the page (runs table, pickers) is stale
        if rerun_app_when_done or str(run_dir) in watching:
            watching.discard(str(run_dir))
            st.rerun(scope="app")
    elif state in ("queued", "running"):
        watching.add(str(run_dir))
    if state in ("failed", "cancelled") or (state in ("queued", "running") and not jobs.is_alive(run_dir)):
        log = Path(run_dir) / "process.log"
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        st.error(f"Run {Path(run_dir).name} is {state if state != 'running' else 'no longer running'}: "
                 f"{s.get('message', '')}" + (f"\n\n```\n{tail}\n```" if tail and state != "cancelled" else ""))


def default_query(data, key: str) -> None:
    """Set session_state[key] to the URL's query (by id), else keep a valid one, else the first query
    that has a relevant candidate (so metrics and ablations are defined)."""
    ids = [str(i) for i in data.query_ids]
    url = st.session_state.pop("url_query", None)
    if url in ids:
        st.session_state[key] = ids.index(url)
    elif st.session_state.get(key) not in range(data.num_queries):
        rel = data.relevant()
        st.session_state[key] = next((q for q in range(data.num_queries) if rel[data.rows(q)].any()), 0)


def query_picker(data, key: str, label: str = "Query") -> int:
    """Selectbox over the split's queries (text + id); returns the query index (also put in the URL)."""
    default_query(data, key)
    q = st.selectbox(label, list(range(data.num_queries)), key=key,
                     format_func=lambda q: f"{data.query_ids[q]} · {data.queries[q]} ({data.list_lengths[q]})")
    _write_url(query=str(data.query_ids[q]))
    return q


@st.cache_resource(show_spinner="Loading the serving path (Reranker)...", max_entries=4)
def _reranker(run_dir: str, stamp: float):
    from cotrr_core.serving.reranker import Reranker

    return Reranker.load(run_dir)


def get_reranker(ctx: "Context"):
    """cotrr_core.serving.reranker.Reranker for the run, or None when serving cannot load (the caller says so)."""
    try:
        return _reranker(str(ctx.run_dir), ctx.stamp)
    except (ImportError, AttributeError):
        return None


@st.cache_data(show_spinner="Timing the serving path on every test list (once per run, then stored)...",
               max_entries=8)
def rollout_inputs_cached(run_dir: str, stamp: float, dataset: str):
    from cotrr_core.views import rollout_inputs

    ctx = Context(dataset, get_benchmark(dataset), Path(run_dir), stamp)
    scores = split_scores(run_dir, stamp, dataset, "test", 10).scores
    return rollout_inputs(ctx.run, ctx.test, scores, reranker=get_reranker(ctx), dataset_key=dataset_key(dataset))


@st.cache_data(show_spinner="Timing the serving path on every test list (once per run, then stored)...",
               max_entries=8)
def serving_latency_cached(run_dir: str, stamp: float, dataset: str):
    """The run's stored serving latency on this dataset's test lists (simulate.latency.Latency)."""
    from cotrr_core.views import stored_serving_latency

    ctx = Context(dataset, get_benchmark(dataset), Path(run_dir), stamp)
    return stored_serving_latency(get_reranker(ctx), ctx.test, dataset_key(dataset))


# module level and free of Streamlit calls: a cached function that draws (a progress bar) cannot be
# replayed in another session (CacheReplayClosureError)
@st.cache_data(show_spinner="Measuring the Top-M frontier: serving each test list at every M (latency once per "
                            "run, then stored)...", max_entries=8)
def topm_frontier_cached(run_dir: str, stamp: float, dataset: str):
    from cotrr_core.views import topm_inputs

    ctx = Context(dataset, get_benchmark(dataset), Path(run_dir), stamp)
    return topm_inputs(ctx.run, ctx.test, reranker=get_reranker(ctx), dataset_key=dataset_key(dataset))


if __name__ == "__main__":  # opened as a page (cold deep link to /shared): it is a helper, not a page
    leave_automatic_navigation()
