"""Predefined splits: a dataset that comes as separate train / val / test files (LETOR folds, a held-out set).

A splits file (`*.splits.json`) names them, so a run can reload its data like any benchmark:

    {"train": "train.txt", "val": "vali.txt", "test": "test.txt"}   (+ optional "cal")

Paths are relative to the splits file. Without "cal", val is cut into val / cal halves by whole queries
(seeded). Every file is read with the train file's spec (given, saved beside it, or inferred).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from cotrr_core.data.errors import DataError
from cotrr_core.io import read_json, write_json

__all__ = ["SPLITS_SUFFIX", "is_splits_file", "read_splits", "checked_files", "write_splits", "splits_sha256"]

SPLITS_SUFFIX = ".splits.json"
REQUIRED = ("train", "val", "test")
OPTIONAL = ("cal",)


def is_splits_file(name: str | Path) -> bool:
    return str(name).endswith(SPLITS_SUFFIX)


def read_splits(path: str | Path) -> dict[str, Path]:
    """The splits file's {split: file path}, each checked: DataError naming the splits file and the field."""
    path = Path(path)
    try:
        raw = read_json(path)
    except (OSError, ValueError) as exc:
        raise DataError(str(path), None, None, f"not a readable JSON splits file: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataError(str(path), None, None, f"expected an object {{'train', 'val', 'test'[, 'cal']}}, got "
                                               f"{type(raw).__name__}")
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    missing = [k for k in REQUIRED if k not in raw]
    if unknown or missing:
        raise DataError(str(path), None, (unknown or missing)[0],
                        f"unknown key(s) {unknown}" if unknown else f"missing key(s) {missing}")
    out = {}
    for split, value in raw.items():
        if not isinstance(value, str) or not value:
            raise DataError(str(path), None, split, f"expected a file path, got {value!r}")
        file = (path.parent / value).resolve()
        if not file.is_file():
            raise DataError(str(path), None, split, f"no such file: {file}")
        out[split] = file
    return out


def checked_files(files: dict[str, str | Path | None], source: str) -> dict[str, Path]:
    """{split: path} given on a command line (None: not given) -> resolved existing files; DataError naming
    `source` and the split otherwise."""
    missing = [k for k in REQUIRED if not files.get(k)]
    if missing:
        raise DataError(source, None, missing[0], f"predefined splits need {', '.join(REQUIRED)} files")
    out = {}
    for split, value in files.items():
        if value:
            out[split] = Path(value).resolve()
            if not out[split].is_file():
                raise DataError(source, None, split, f"no such file: {value}")
    return out


def write_splits(path: str | Path, files: dict[str, Path]) -> Path:
    """Write a splits file naming `files` ({split: path}, absolute), atomically; returns its path."""
    path = Path(path)
    if not is_splits_file(path):
        raise ValueError(f"a splits file's name ends in {SPLITS_SUFFIX}, got {path.name}")
    write_json(path, {k: str(v) for k, v in files.items()})
    return path


def splits_sha256(path: str | Path) -> str:
    """One digest of the splits file's data files (names and bytes): a changed file is a different dataset."""
    digest = hashlib.sha256()
    for split, file in sorted(read_splits(path).items()):
        digest.update(split.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
