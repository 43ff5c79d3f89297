"""Typed, validated configs, one dataclass per concern, with a JSON round-trip.

Unknown keys and wrong types raise ConfigError naming the field, so a typo in a
config file fails loudly instead of being silently ignored.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "ModelConfig",
    "LossConfig",
    "TrainConfig",
    "CalibrationConfig",
    "ServeConfig",
    "RunConfig",
    "parse_override",
]

T = TypeVar("T", bound="_Config")


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or out of range."""


class _Config:
    """Mixin: dict/JSON round-trip with validation of keys, types and ranges."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], raw: dict[str, Any], where: str = "") -> T:
        where = where or cls.__name__
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected an object, got {type(raw).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, value in raw.items():
            kwargs[name] = _coerce(value, hints[name], f"{where}.{name}")
        obj = cls(**kwargs)
        obj.validate()  # type: ignore[attr-defined]
        return obj

    def validate(self) -> None:
        """Override to check ranges; raise ConfigError naming the field."""

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[T], text: str, where: str = "") -> T:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where or cls.__name__}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
        return cls.from_dict(raw, where)

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        return cls.from_json(Path(path).read_text(), where=str(path))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint; nested configs are built recursively."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, _Config):
        return hint.from_dict(value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {msg}")


@dataclass
class ModelConfig(_Config):
    """Cross-attention reranker shape. Defaults match the original design (~1.3M params)."""

    hidden: int = 256
    layers: int = 2
    heads: int = 8
    ff_mult: int = 2
    dropout: float = 0.15
    list_context: bool = False  # candidates attend to each other (masked)
    list_context_layers: int = 1

    def validate(self) -> None:
        _check(self.heads >= 1, "ModelConfig.heads", "must be >= 1")
        _check(self.hidden > 0 and self.hidden % self.heads == 0, "ModelConfig.hidden",
               f"must be a positive multiple of heads ({self.heads}), got {self.hidden}")
        _check(self.layers >= 1, "ModelConfig.layers", "must be >= 1")
        _check(self.ff_mult >= 1, "ModelConfig.ff_mult", "must be >= 1")
        _check(0.0 <= self.dropout < 1.0, "ModelConfig.dropout", "must be in [0, 1)")
        _check(self.list_context_layers >= 1, "ModelConfig.list_context_layers", "must be >= 1")


@dataclass
class LossConfig(_Config):
    """ListMLE + focal, weighted, with learnable temperature and a RankNet warm-up."""

    listmle_weight: float = 0.7
    focal_weight: float = 0.3
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    label_smoothing: float = 0.05
    learn_temperature: bool = True
    pairwise_warmup_epochs: int = 1
    # the listwise term: "listmle" (Plackett-Luce) or "softmax" (softmax cross-entropy against
    # 2^label - 1 gains, Qin et al. ICLR 2021), the stronger one on graded LTR labels
    listwise: typing.Literal["listmle", "softmax"] = "listmle"

    def validate(self) -> None:
        _check(self.listmle_weight >= 0 and self.focal_weight >= 0, "LossConfig.weights", "must be >= 0")
        _check(self.listmle_weight + self.focal_weight > 0, "LossConfig.weights", "must not both be 0")
        _check(0.0 <= self.focal_alpha <= 1.0, "LossConfig.focal_alpha", "must be in [0, 1]")
        _check(self.focal_gamma >= 0, "LossConfig.focal_gamma", "must be >= 0")
        _check(0.0 <= self.label_smoothing < 0.5, "LossConfig.label_smoothing", "must be in [0, 0.5)")
        _check(self.pairwise_warmup_epochs >= 0, "LossConfig.pairwise_warmup_epochs", "must be >= 0")


@dataclass
class TrainConfig(_Config):
    """Optimisation and run control."""

    epochs: int = 30
    batch_size: int = 32  # lists per step
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    schedule: typing.Literal["cosine", "plateau", "constant"] = "cosine"
    grad_accum: int = 1
    grad_clip: float = 1.0
    amp: bool = True  # used only where the device supports it
    patience: int = 6  # early stop on validation nDCG@10
    seed: int = 0
    device: str = "auto"
    max_list_len: int = 0  # 0: no truncation
    # std of Gaussian noise added to the standardised training features (Qin et al. 2021); 0: off
    input_noise: float = 0.0
    # signed log1p before standardising: "spec" follows the feature spec, "on"/"off" force it
    log_features: typing.Literal["spec", "on", "off"] = "spec"
    # serve the first-stage order, or the prior alone, when it beats the network on validation
    guard: bool = True
    # "auto": fit LightGBM + ridge peers and blend them with the network when that wins on validation
    # (training/blend.py); "off": the network alone
    blend: typing.Literal["auto", "off"] = "auto"

    def validate(self) -> None:
        _check(self.epochs >= 1, "TrainConfig.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "TrainConfig.batch_size", "must be >= 1")
        _check(self.lr > 0, "TrainConfig.lr", "must be > 0")
        _check(self.weight_decay >= 0, "TrainConfig.weight_decay", "must be >= 0")
        _check(self.warmup_steps >= 0, "TrainConfig.warmup_steps", "must be >= 0")
        _check(self.max_list_len >= 0, "TrainConfig.max_list_len", "must be >= 0 (0: no truncation)")
        _check(self.grad_accum >= 1, "TrainConfig.grad_accum", "must be >= 1")
        _check(self.grad_clip >= 0, "TrainConfig.grad_clip", "must be >= 0")
        _check(self.patience >= 1, "TrainConfig.patience", "must be >= 1")
        _check(self.input_noise >= 0, "TrainConfig.input_noise", "must be >= 0")
        _check(self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
               "TrainConfig.device", f"must be auto/cpu/cuda/mps, got {self.device!r}")


@dataclass
class CalibrationConfig(_Config):
    # "auto": the method with the lowest out-of-fold ECE on the cal split (never chosen on test)
    method: typing.Literal["temperature", "platt", "isotonic", "auto"] = "isotonic"
    # "head": sample only list context + head over one deterministic trunk pass (fast serving);
    # "all": dropout in every layer (S full forwards)
    mc_scope: typing.Literal["all", "head"] = "head"


@dataclass
class ServeConfig(_Config):
    top_m: int = 20
    time_budget_ms: float = 50.0
    mc_samples: int = 0

    def validate(self) -> None:
        _check(self.top_m >= 1, "ServeConfig.top_m", "must be >= 1")
        _check(self.time_budget_ms > 0, "ServeConfig.time_budget_ms", "must be > 0")
        _check(self.mc_samples >= 0, "ServeConfig.mc_samples", "must be >= 0")


@dataclass
class RunConfig(_Config):
    """Everything a run needs, saved as config.json in the run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def with_overrides(self, overrides: dict[str, Any], where: str = "--set") -> RunConfig:
        """A validated copy with {"section.field": value} applied; ConfigError names a bad key or value."""
        raw = self.to_dict()
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            if section not in raw or not name:
                raise ConfigError(f"{where}: {key!r}: expected section.field with a section in {sorted(raw)}")
            raw[section][name] = value
        return RunConfig.from_dict(raw, where=where)


def parse_override(text: str) -> tuple[str, Any]:
    """"train.epochs=5" -> ("train.epochs", 5): the value is JSON when it parses, else a string."""
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"--set {text!r}: expected section.field=value")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
