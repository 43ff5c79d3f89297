"""The feature spec of an uploaded dataset, as the app shows and edits it: the spec in use (saved beside the
file, else inferred from its first rows), the fields a user may pick, and the chosen spec saved."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cotrr_core.data.benchmarks import BENCHMARKS
from cotrr_core.data.infer import feature_fields, infer_spec, label_fields, read_head, resolve_spec, spec_sidecar
from cotrr_core.data.loaders import infer_format
from cotrr_core.data.spec import FeatureSpec
from cotrr_core.data.split_files import is_splits_file
from cotrr_core.data.uploads import save_upload_spec

__all__ = ["SpecView", "has_editable_spec", "spec_view", "spec_table", "choose_spec", "save_spec"]


@dataclass
class SpecView:
    """What the spec editor shows for one file."""

    spec: FeatureSpec  # in use now
    saved: bool  # chosen by a user (saved beside the file), else inferred
    table: pd.DataFrame  # one row per token: token, fields, dim, list_constant
    fields: dict[str, str]  # every field that can be a feature -> "vector" / "scalar"
    chosen: list[str]  # the fields the spec uses now
    labels: list[str]  # columns that can be the label


def has_editable_spec(dataset: str) -> bool:
    """A Step5 file (not a built-in benchmark, not LETOR): its spec can be shown and chosen."""
    if dataset in BENCHMARKS or is_splits_file(dataset) or not Path(dataset).is_file():
        return False
    try:
        return infer_format(dataset) != "letor"
    except ValueError:
        return False


def spec_table(spec: FeatureSpec) -> pd.DataFrame:
    """One row per token: its fields, vector length (blank for scalars), list-constant or not."""
    rows = [{"token": t.name, "fields": ", ".join(t.fields or map(str, t.indices)),
             "dim": t.dim if t.dim is not None else len(t.fields or t.indices) if len(t.fields) != 1 else None,
             "list_constant": t.list_constant,
             "similarity": {spec.similarity[0]: "query", spec.similarity[1]: "candidate"}.get(t.name, "")
             if spec.similarity else ""} for t in spec.tokens]
    table = pd.DataFrame(rows, columns=["token", "fields", "dim", "list_constant", "similarity"])
    return table.astype({"dim": "Int64"})


def spec_view(dataset: str) -> SpecView:
    """The file's spec in use and its choices (raises DataError / ConfigError naming the file)."""
    path = Path(dataset)
    head = read_head(path, infer_format(path), str(path))
    spec = resolve_spec(path, infer_format(path), str(path), head=head)
    return SpecView(spec=spec, saved=spec_sidecar(path).exists(), table=spec_table(spec),
                    fields=feature_fields(head, spec.label_field),
                    chosen=[f for t in spec.tokens for f in t.fields], labels=label_fields(head))


def choose_spec(dataset: str, features: list[str], label: str, threshold: float) -> FeatureSpec:
    """The spec for these feature fields, label column and relevance threshold (tokens as inference makes them:
    a token per vector field, the scalars as one, first_stage_score its own). Raises DataError / ConfigError."""
    path = Path(dataset)
    head = read_head(path, infer_format(path), str(path))
    return infer_spec(head, str(path), features=list(features), label_field=label, relevance_threshold=threshold)


def save_spec(dataset: str, spec: FeatureSpec) -> str:
    """Validate the whole file with `spec` (capped child process) and save it beside the file; every page and
    every training run launched on this dataset then uses it. Returns the load report."""
    return save_upload_spec(dataset, spec)
