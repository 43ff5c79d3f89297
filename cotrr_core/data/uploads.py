"""Safe ingestion of uploaded files: staged, validated in a bounded child process, then renamed.

An upload is written to a hidden temporary file beside its target, validated by `load_dataset`
in a separate process (memory and time capped, so a hostile file can neither hang nor exhaust
the app), and only then moved onto its name with os.replace. A rejected upload is deleted and
never touches an existing file of the same name.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cotrr_core.data.errors import DataError
from cotrr_core.data.infer import spec_sidecar
from cotrr_core.data.loaders import infer_format
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.io import write_json

__all__ = ["MAX_UPLOAD_BYTES", "VALIDATE_TIMEOUT_S", "VALIDATE_MEMORY_BYTES", "UploadJob", "UploadResult",
           "start_upload", "ingest_upload", "clean_stale_uploads", "save_upload_spec", "rerank_upload"]

# 2x the built-in demo benchmark as Parquet (50 MB for 24k candidates with 1024-d CLIP vectors);
# a larger file belongs on disk (`python -m cotrr_core validate` / train --dataset PATH), not in a browser upload
MAX_UPLOAD_BYTES = 100 * 2**20
VALIDATE_TIMEOUT_S = 180.0  # far above what the demo Parquet needs on 2 cores
VALIDATE_MEMORY_BYTES = 4 * 2**30  # address space of the validating process (the demo needs ~3 GiB)
STALE_AFTER_S = 3600.0  # staged files older than this were left by a killed app: removed
MAX_NAME_CHARS = 200
RERANK_TIMEOUT_S = 600.0  # an own-file rerank on the Compare page: model load plus scoring
RERANK_MEMORY_BYTES = 8 * 2**30  # address space of the reranking process (torch reserves some at import)
_TMP_PREFIX = ".upload-"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class UploadResult:
    """The outcome: `path` and `report` when the file was kept, else `error`."""

    name: str
    path: Path | None = None
    report: str = ""
    error: str = ""
    spec: dict | None = None  # the feature spec the file loaded with (inferred, data/infer.py), as JSON

    @property
    def ok(self) -> bool:
        return self.path is not None


@dataclass
class UploadJob:
    """A staged upload being validated in a child process; poll() until it returns a result."""

    name: str
    target: Path
    staged: Path
    proc: subprocess.Popen
    timeout_s: float = VALIDATE_TIMEOUT_S
    started: float = field(default_factory=time.monotonic)
    result: UploadResult | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> UploadResult | None:
        """None while validating; then the result (the file kept under its name, or deleted)."""
        if self.result is not None:
            return self.result
        if self.proc.poll() is None:
            if self.elapsed < self.timeout_s:
                return None
            self.proc.kill()
            self.proc.wait()
            return self._finish(None, f"validation took longer than {self.timeout_s:.0f} s; "
                                      "validate the file with `python -m cotrr_core validate`")
        out, err = self.proc.communicate()
        try:
            answer = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            last = " ".join(err.strip().splitlines()[-1:])[:200]
            return self._finish(None, f"{self.name}: could not be validated (exit code {self.proc.returncode}"
                                      + (f": {last})" if last else ")"))
        return self._finish(answer.get("report", ""), answer.get("error", ""), answer.get("spec"))

    def cancel(self) -> None:
        if self.result is None:
            self.proc.kill()
            self.proc.wait()
            self._finish(None, "cancelled")

    def _finish(self, report: str | None, error: str, spec: dict | None = None) -> UploadResult:
        if report is not None and not error:
            os.replace(self.staged, self.target)
            spec_sidecar(self.target).unlink(missing_ok=True)  # a spec chosen for the file this one replaced
            self.result = UploadResult(self.name, path=self.target, report=report, spec=spec)
        else:
            self.staged.unlink(missing_ok=True)
            self.result = UploadResult(self.name, error=error or "rejected")
        return self.result


def safe_name(name: str) -> str:
    """The file name an upload is stored under: no folders, no hidden names, plain characters, short
    enough for the staged name (prefix and suffix added) to fit a file system's 255 bytes."""
    base = _SAFE_NAME.sub("_", Path(name).name).lstrip(".")
    if not base or base.startswith(_TMP_PREFIX.lstrip(".")):
        raise DataError(name[:80], None, None, "not a usable file name")
    if len(base) > MAX_NAME_CHARS:
        raise DataError(name[:80] + "...", None, None, f"file name of {len(base)} characters; at most {MAX_NAME_CHARS}")
    return base


def _checked(name: str, content: bytes) -> tuple[str, str]:
    """(safe file name, format) of an upload within the size limit; DataError otherwise."""
    base = safe_name(name)
    fmt = infer_format(base)
    if len(content) > MAX_UPLOAD_BYTES:
        raise DataError(base, None, None, f"{len(content) / 2**20:.1f} MB; uploads are limited to "
                                          f"{MAX_UPLOAD_BYTES // 2**20} MB")
    return base, fmt


def start_upload(name: str, content: bytes, directory: str | Path, *, timeout_s: float = VALIDATE_TIMEOUT_S,
                 memory_bytes: int = VALIDATE_MEMORY_BYTES) -> UploadJob:
    """Stage `content` beside its target and start validating it; raises DataError for a file that is
    too large or has no known format (nothing is written then)."""
    base, fmt = _checked(name, content)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clean_stale_uploads(directory)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.chmod(tmp, 0o644)  # as atomic_write: mkstemp makes 0600, the app and other users read uploads
        cmd = [sys.executable, "-m", "cotrr_core.data.uploads", tmp, fmt, base, str(memory_bytes)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env=_child_env())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return UploadJob(base, directory / base, Path(tmp), proc, timeout_s)


def ingest_upload(name: str, content: bytes, directory: str | Path, **kwargs) -> UploadResult:
    """start_upload and wait for its result (for scripts and tests; the app polls instead)."""
    try:
        job = start_upload(name, content, directory, **kwargs)
    except DataError as exc:
        return UploadResult(name, error=str(exc))
    while (result := job.poll()) is None:
        time.sleep(0.05)
    return result


def save_upload_spec(path: str | Path, spec: FeatureSpec, *, timeout_s: float = VALIDATE_TIMEOUT_S,
                     memory_bytes: int = VALIDATE_MEMORY_BYTES) -> str:
    """Validate the kept upload `path` with `spec` in the capped child process; when it loads, save the spec
    beside it (data/infer.spec_sidecar), so every later load of the file uses it. Returns the load report;
    raises DataError with the child's error (nothing is saved then)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_json(tmp, spec.to_dict())
        cmd = [sys.executable, "-m", "cotrr_core.data.uploads", str(path), infer_format(path), path.name,
               str(memory_bytes), tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=_child_env(),
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DataError(path.name, None, None, f"validation took longer than {timeout_s:.0f} s") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DataError(path.name, None, None, f"could not be validated (exit code {done.returncode})") from None
    if answer.get("error"):
        raise DataError(path.name, None, None, answer["error"])
    write_json(spec_sidecar(path), spec.to_dict())
    return answer["report"]


def rerank_upload(run_dir: str | Path, name: str, content: bytes, directory: str | Path, *, top_m: int | None = None,
                  mc_samples: int | None = 0, timeout_s: float = RERANK_TIMEOUT_S,
                  memory_bytes: int = RERANK_MEMORY_BYTES) -> dict:
    """Rerank an uploaded file with a run, capped like an upload: staged in `directory` (size-checked), read
    and scored in a child process under a memory and time limit. Writes directory/reranked.csv; returns
    rerank_file's summary. Raises DataError (the child's error, a timeout, or a crash without one)."""
    base, fmt = _checked(name, content)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    src, out = directory / base, directory / "reranked.csv"
    src.write_bytes(content)
    cmd = [sys.executable, "-m", "cotrr_core.data.uploads", "--rerank", str(run_dir), str(src), fmt, str(out),
           str(memory_bytes), "" if top_m is None else str(top_m), "" if mc_samples is None else str(mc_samples)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=_child_env(),
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DataError(base, None, None, f"reranking took longer than {timeout_s:.0f} s") from None
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        last = " ".join(done.stderr.strip().splitlines()[-1:])[:200]
        raise DataError(base, None, None, f"could not be reranked (exit code {done.returncode}"
                                          + (f": {last})" if last else ")")) from None
    if answer.get("error"):  # the child's DataError, naming the upload as the user called it
        err = DataError(base, None, None, answer["error"])
        err.args = (answer["error"].replace(str(src), base),)
        raise err
    return answer


def _rerank_main(run_dir: str, path: str, fmt: str, out: str, memory_bytes: str, top_m: str, mc: str) -> int:
    """Child process: rerank under a memory cap, print one JSON line (the summary, or {"error"})."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (int(memory_bytes), int(memory_bytes)))
    from cotrr_core.config import ConfigError
    from cotrr_core.serving.batch import rerank_file

    try:
        answer = rerank_file(run_dir, path, out, fmt=fmt, top_m=int(top_m) if top_m else None,
                             mc_samples=int(mc) if mc else None)
    except (DataError, ConfigError) as exc:
        answer = {"error": str(exc)}
    except MemoryError:
        answer = {"error": f"needs more than {int(memory_bytes) // 2**20} MB of memory to rerank"}
    print(json.dumps(answer, default=str))
    return 0


def clean_stale_uploads(directory: str | Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove staged files a killed app left behind; returns how many."""
    now, removed = time.time(), 0
    for p in Path(directory).glob(f"{_TMP_PREFIX}*.tmp"):
        try:
            if now - p.stat().st_mtime > older_than_s:
                p.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def _child_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def _validate_main(path: str, fmt: str, name: str, memory_bytes: int, spec_path: str | None = None) -> int:
    """Child process: load under a memory cap (with the spec at `spec_path`, else the file's own), print one
    JSON line {"report", "spec"} or {"error"}."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    from cotrr_core.config import ConfigError
    from cotrr_core.data.loaders import load_dataset

    try:
        spec = FeatureSpec.load(spec_path) if spec_path else None
        data = load_dataset(path, fmt, spec, display_name=name)
        answer = {"report": str(data.report), "spec": data.spec.to_dict()}
    except (DataError, ConfigError) as exc:
        answer = {"error": str(exc)}
    except MemoryError:
        answer = {"error": f"{name}: needs more than {memory_bytes // 2**20} MB of memory to load"}
    except RecursionError:
        answer = {"error": f"{name}: nested too deeply to load"}
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--rerank":
        sys.exit(_rerank_main(*sys.argv[2:9]))
    sys.exit(_validate_main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:6]))
