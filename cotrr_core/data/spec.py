"""Feature specs: which input fields (or LETOR feature indices) form which token.

A spec is JSON. Step5 specs name fields (a vector field, or several scalar
fields grouped into one token); LETOR specs name 1-based feature indices.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cotrr_core.config import ConfigError
from cotrr_core.data.limits import MAX_FEATURE_INDEX

__all__ = ["TokenSpec", "FeatureSpec", "builtin_spec", "conform_spec", "default_letor_spec", "BUILTIN_SPECS"]

BUILTIN_SPECS = ("step5", "mq2008", "mslr136")


@dataclass(frozen=True)
class TokenSpec:
    """One token: either `fields` (Step5) or `indices` (LETOR, 1-based)."""

    name: str
    fields: tuple[str, ...] = ()
    indices: tuple[int, ...] = ()
    dim: int | None = None  # for a single vector field: required length (None: same on every line)
    list_constant: bool = False  # identical for every candidate of a list (projected once)
    float16: bool = False  # the dataset cache may store it as float16 (e.g. unit-norm embeddings)


@dataclass(frozen=True)
class FeatureSpec:
    """Maps input columns to named tokens, and says how to read the label."""

    name: str
    format: str  # "step5" or "letor"
    tokens: tuple[TokenSpec, ...]
    label_field: str = "compliance_score"
    label_min: float = 0.0
    label_max: float = 1.0
    relevance_threshold: float = 0.8
    log_transform: bool = False  # signed log1p before standardising (raw LETOR counts)
    num_features: int | None = None  # LETOR: expected feature count
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # (query token, candidate token): a list-constant vector and a per-candidate vector of one length
    # whose similarity the model may compare explicitly (e.g. CLIP text and image embeddings)
    similarity: tuple[str, str] | None = None

    @property
    def token_names(self) -> list[str]:
        return [t.name for t in self.tokens]

    def token(self, name: str) -> TokenSpec:
        return next(t for t in self.tokens if t.name == name)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("tokens", "extra", "similarity")}
        d["tokens"] = [{k: list(v) if isinstance(v, tuple) else v for k, v in t.__dict__.items()
                        if v not in ((), None, False)} for t in self.tokens]
        if self.similarity is not None:  # absent otherwise: older specs (and their cache keys) stay as they were
            d["similarity"] = {"query": self.similarity[0], "candidate": self.similarity[1]}
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "feature spec") -> FeatureSpec:
        known = {"name", "format", "tokens", "label_field", "label_min", "label_max",
                 "relevance_threshold", "log_transform", "num_features", "notes", "similarity"}
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        _check_types(raw, where)
        if raw.get("format") not in ("step5", "letor"):
            raise ConfigError(f"{where}: 'format' must be 'step5' or 'letor', got {raw.get('format')!r}")
        tokens = []
        token_keys = {"name", "fields", "indices", "dim", "list_constant", "float16"}
        for i, t in enumerate(raw.get("tokens") or []):
            bad = sorted(set(t) - token_keys)
            if bad or "name" not in t:
                raise ConfigError(f"{where}: tokens[{i}]: needs 'name'; unknown key(s) {bad}")
            tok = TokenSpec(name=t["name"], fields=tuple(t.get("fields", ())), indices=tuple(t.get("indices", ())),
                            dim=t.get("dim"), list_constant=bool(t.get("list_constant", False)),
                            float16=bool(t.get("float16", False)))
            if bool(tok.fields) == bool(tok.indices):
                raise ConfigError(f"{where}: tokens[{i}] ({tok.name}): give exactly one of 'fields' or 'indices'")
            tokens.append(tok)
        if not tokens:
            raise ConfigError(f"{where}: 'tokens' must list at least one token")
        names = [t.name for t in tokens]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: token names must be unique, got {names}")
        similarity = _similarity(raw.get("similarity"), tokens, where)
        spec = cls(tokens=tuple(tokens), similarity=similarity,
                   **{k: v for k, v in raw.items() if k not in ("tokens", "similarity")})
        if spec.format == "letor":
            if any(t.fields for t in tokens):
                raise ConfigError(f"{where}: LETOR specs use 'indices', not 'fields'")
            idx = [i for t in tokens for i in t.indices]
            if min(idx) < 1 or (spec.num_features and max(idx) > spec.num_features):
                raise ConfigError(f"{where}: feature indices must be in 1..{spec.num_features}")
        elif any(t.indices for t in tokens):
            raise ConfigError(f"{where}: Step5 specs use 'fields', not 'indices'")
        if not spec.label_min <= spec.relevance_threshold <= spec.label_max:
            raise ConfigError(f"{where}: relevance_threshold must lie in [label_min, label_max]")
        return spec

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from exc
        except (UnicodeDecodeError, RecursionError, ValueError) as exc:
            raise ConfigError(f"{path}: not a JSON feature spec: {type(exc).__name__}") from None
        return cls.from_dict(raw, where=str(path))


_NUMBER_KEYS = ("label_min", "label_max", "relevance_threshold")


def _check_types(raw: Any, where: str) -> None:
    """A spec file is user input: wrong types are a ConfigError naming the key, never a TypeError later."""
    for key in _NUMBER_KEYS:
        v = raw.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{where}: '{key}' must be a finite number, got {v!r}")
    n = raw.get("num_features")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_FEATURE_INDEX * 64):
        raise ConfigError(f"{where}: 'num_features' must be a positive integer, got {n!r}")
    for key in ("name", "label_field", "notes"):
        if not isinstance(raw.get(key, ""), str):
            raise ConfigError(f"{where}: '{key}' must be text")
    tokens = raw.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, dict) for t in tokens):
        raise ConfigError(f"{where}: 'tokens' must be a list of objects")
    for i, t in enumerate(tokens):
        fields, indices, dim = t.get("fields", []), t.get("indices", []), t.get("dim")
        if not isinstance(t.get("name"), str) or not isinstance(fields, list) or \
                not all(isinstance(f, str) for f in fields):
            raise ConfigError(f"{where}: tokens[{i}]: 'name' and 'fields' must be text")
        if not isinstance(indices, list) or not all(isinstance(j, int) and not isinstance(j, bool) for j in indices):
            raise ConfigError(f"{where}: tokens[{i}]: 'indices' must be a list of integers")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ConfigError(f"{where}: tokens[{i}]: 'dim' must be a positive integer")


def _similarity(raw: Any, tokens: list[TokenSpec], where: str) -> tuple[str, str] | None:
    """{"query": token, "candidate": token} -> (query, candidate), checked: both single-field vector
    tokens with the same `dim`, the query one list-constant."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"query", "candidate"} or \
            not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError(f"{where}: 'similarity' must be {{\"query\": <token>, \"candidate\": <token>}}")
    by_name = {t.name: t for t in tokens}
    for role in ("query", "candidate"):
        tok = by_name.get(raw[role])
        if tok is None:
            raise ConfigError(f"{where}: similarity.{role}: no token named {raw[role]!r}")
        if len(tok.fields) != 1 or tok.dim is None:
            raise ConfigError(f"{where}: similarity.{role}: token {tok.name!r} must be one vector field with a 'dim'")
    q, c = by_name[raw["query"]], by_name[raw["candidate"]]
    if q.name == c.name or q.dim != c.dim:
        raise ConfigError(f"{where}: similarity: tokens {q.name!r} and {c.name!r} must differ and have the same dim "
                          f"(got {q.dim} and {c.dim})")
    if not q.list_constant:
        raise ConfigError(f"{where}: similarity.query: token {q.name!r} must be list_constant (one per query)")
    return q.name, c.name


def builtin_spec(name: str) -> FeatureSpec:
    """A shipped spec: 'step5' (demo / Step5 default), 'mq2008' (46 LETOR features), 'mslr136'."""
    if name not in BUILTIN_SPECS:
        raise ConfigError(f"unknown built-in spec {name!r}; choose from {list(BUILTIN_SPECS)}")
    text = resources.files("cotrr_core.data").joinpath("specs", f"{name}.json").read_text()
    return FeatureSpec.from_dict(json.loads(text), where=f"built-in spec {name}")


def default_letor_spec(num_features: int, chunk: int = 16, max_label: float = 4.0) -> FeatureSpec:
    """Contiguous chunks of at most `chunk` features, one token each, for any LETOR file."""
    tokens = tuple(TokenSpec(name=f"f{a}_{min(a + chunk - 1, num_features)}",
                             indices=tuple(range(a, min(a + chunk, num_features + 1))))
                   for a in range(1, num_features + 1, chunk))
    return FeatureSpec(name=f"letor{num_features}", format="letor", tokens=tokens, label_field="label",
                       label_min=0.0, label_max=max_label, relevance_threshold=1.0, log_transform=True,
                       num_features=num_features, notes="default: contiguous feature chunks")


def conform_spec(spec: FeatureSpec, reference: FeatureSpec, token_dims: dict[str, int], where: str) -> FeatureSpec:
    """`spec` (how one file names its fields) checked against a run's tokens: the same token names and
    list-constant flags; a single-field token of the run's vectors gets the run's `dim`, so a wrong
    length is refused by the data layer naming its line and field."""
    if spec.format != reference.format or sorted(spec.token_names) != sorted(reference.token_names):
        raise ConfigError(f"{where}: tokens {spec.token_names} ({spec.format}) do not match the run's "
                          f"{reference.token_names} ({reference.format})")
    tokens = []
    for tok in spec.tokens:
        ref = reference.token(tok.name)
        if tok.list_constant != ref.list_constant:
            raise ConfigError(f"{where}: token {tok.name!r}: list_constant must be {ref.list_constant} as in the run")
        dim = token_dims.get(tok.name)
        if len(tok.fields) == 1 and dim and dim > 1 and tok.dim is None:
            tok = TokenSpec(**{**tok.__dict__, "dim": dim})
        tokens.append(tok)
    return FeatureSpec(**{**spec.__dict__, "tokens": tuple(tokens)})
