"""Decision logs: one JSON line per request, written off the request path by one background writer thread,
rotated by size into `decisions-<pid>-<start>-<n>.jsonl` files in a folder.

Durability: `close()` drains the queue and flushes, so a clean shutdown loses nothing. The writer flushes
to the OS after every drained batch of records; a crash of the process loses the records still queued in
memory (at most those submitted since the writer last woke, typically a few milliseconds of traffic), and
a crash of the machine also what the OS had not yet written to disk (no fsync per record).
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path

import msgspec

from cotrr_core.data.errors import DataError

__all__ = ["DecisionLog", "read_decisions"]

_STOP = object()


class DecisionLog:
    """`write(record)` queues a dict (never blocks on disk); a thread appends it as a JSON line."""

    def __init__(self, folder: str | Path, max_bytes: int = 64 * 2**20) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stem = f"decisions-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}"
        self._part, self._file, self.written = 0, None, 0
        self._thread = threading.Thread(target=self._loop, name="cotrr-decision-log", daemon=True)
        self._thread.start()

    def write(self, record: dict) -> None:
        self._queue.put(record)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write every queued record, flush and close the file."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    def _open(self):
        path = self.folder / f"{self._stem}-{self._part:04d}.jsonl"
        self._part += 1
        return path.open("a", encoding="utf-8")

    def _loop(self) -> None:
        self._file = self._open()
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while True:  # everything already queued goes out in one write
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(r is _STOP for r in batch)
            lines = "".join(_line(r) for r in batch if r is not _STOP)
            if self._file.tell() + len(lines) > self.max_bytes and self._file.tell() > 0:
                self._file.close()
                self._file = self._open()
            self._file.write(lines)
            self._file.flush()
            self.written += len(batch) - stop
        self._file.close()


def _line(record: dict) -> str:
    """One record as a JSON line: msgspec (this thread shares the server's interpreter lock, so it is kept
    short), the stdlib for what msgspec refuses (a lone surrogate in a unit id)."""
    try:
        return _ENCODE(record).decode() + "\n"
    except (msgspec.MsgspecError, TypeError, UnicodeError):
        return json.dumps(record, default=_plain) + "\n"


def _plain(x):
    """numpy scalars and anything else JSON does not know: as a float, else as text."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


_ENCODE = msgspec.json.Encoder(enc_hook=_plain).encode


def read_decisions(path: str | Path) -> list[dict]:
    """Every record of a decision log file, or of every decisions-*.jsonl file in a folder (by name)."""
    p = Path(path)
    files = sorted(p.glob("decisions-*.jsonl")) if p.is_dir() else [p]
    if not files:
        raise DataError(str(p), None, None, "no decisions-*.jsonl file here")
    out = []
    for f in files:
        with f.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh, start=1):
                if line.strip():
                    out.append(_record(line, str(f), i))
    return out


def _record(line: str, file: str, number: int) -> dict:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:  # a crash can leave a cut last line: named, never guessed at
        raise DataError(file, number, None, f"not a JSON line ({exc.msg})") from None
    if not isinstance(rec, dict) or "request_id" not in rec:
        raise DataError(file, number, "request_id", "a decision record is a JSON object with a request_id")
    return rec
