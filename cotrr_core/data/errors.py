"""The one exception type for bad input, and the load report."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["DataError", "LoadReport"]


class DataError(ValueError):
    """Bad input: the message names the file, the line, the field and the problem."""

    def __init__(self, file: str, line: int | None, field: str | None, problem: str):
        self.file, self.line, self.field, self.problem = file, line, field, problem
        where = file if line is None else f"{file}: line {line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{problem}")


@dataclass
class LoadReport:
    """What a load kept and skipped, and why (nothing is dropped silently)."""

    source: str
    lines: int = 0
    queries_kept: int = 0
    candidates_kept: int = 0
    queries_skipped: int = 0
    candidates_skipped: int = 0
    skip_reasons: Counter = field(default_factory=Counter)
    order_from: str = "file order"

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["skip_reasons"] = dict(self.skip_reasons)
        return d

    def __str__(self) -> str:
        text = (f"{self.source}: {self.lines} lines -> kept {self.queries_kept} queries / "
                f"{self.candidates_kept} candidates; skipped {self.queries_skipped} queries / "
                f"{self.candidates_skipped} candidates; original order from {self.order_from}")
        for reason, n in sorted(self.skip_reasons.items()):
            text += f"\n  skipped {n} x {reason}"
        return text
