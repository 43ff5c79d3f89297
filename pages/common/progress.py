"""Live progress of a training run (a polled fragment), and the first launch's wait for the default run."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from cotrr_core.views import default_run_state, is_alive, launch_steps, process_log_tail, read_status, start_default_run
from pages.common.errors import shown_errors

_MARKS = {"done": "✅", "active": "⏳", "pending": "▫️", "failed": "❌"}


@st.fragment(run_every=1.5)
def run_progress(run_dir: Path, rerun_app_when_done: bool = False) -> None:
    """Progress bar from the run's status.json; the app reruns once when a run this session watched is done."""
    s = read_status(Path(run_dir))
    state, progress = s.get("state", "unknown"), float(s.get("progress", 0.0))
    st.progress(min(max(progress, 0.0), 1.0), text=f"{Path(run_dir).name}: {state} · {s.get('message', '')}")
    if rerun_app_when_done:  # first launch: say which step it is in and how long it has taken
        steps, eta = launch_steps(Path(run_dir).name, s)
        st.markdown("  \n".join(f"{_MARKS[r['state']]} {i}. {r['step']}" for i, r in enumerate(steps, 1)))
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
    if state in ("failed", "cancelled") or (state in ("queued", "running") and not is_alive(run_dir)):
        tail = process_log_tail(run_dir)
        st.error(f"Run {Path(run_dir).name} is {state if state != 'running' else 'no longer running'}: "
                 f"{s.get('message', '')}" + (f"\n\n```\n{tail}\n```" if tail and state != "cancelled" else ""))


def wait_for_default_run() -> None:
    """First launch: start the fast default run (once) and show its progress until it is done."""
    with shown_errors("Could not start the default run"):
        run_dir = start_default_run(retry=bool(st.session_state.pop("retry_default", False)))
    st.info("First launch: training the fast default model on the built-in demo benchmark. "
            "Every page works as soon as it is done (it keeps running if you reload).")
    if run_dir is not None:
        run_progress(run_dir, rerun_app_when_done=True)
        if default_run_state()[0] == "failed":
            st.button("Retry the default run", key="retry-default",
                      on_click=lambda: st.session_state.update(retry_default=True))
