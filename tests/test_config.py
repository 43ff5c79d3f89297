"""RunConfig: JSON round trip, unknown keys, wrong types, out-of-range values name the field."""
from __future__ import annotations

import json

import pytest

from cotrr_core.config import (
    CalibrationConfig,
    ConfigError,
    LossConfig,
    ModelConfig,
    RunConfig,
    ServeConfig,
    TrainConfig,
)


def _changed() -> RunConfig:
    cfg = RunConfig()
    cfg.model.hidden, cfg.model.heads, cfg.model.dropout, cfg.model.list_context = 96, 4, 0.0, True
    cfg.loss.focal_weight, cfg.loss.learn_temperature = 0.0, False
    cfg.train.schedule, cfg.train.lr, cfg.train.device, cfg.train.max_list_len = "plateau", 3e-4, "cuda:1", 40
    cfg.calibration.method = "platt"
    cfg.serve.time_budget_ms = 12.5
    return cfg


def test_default_config_json_round_trip():
    cfg = RunConfig()
    assert RunConfig.from_json(cfg.to_json()) == cfg


def test_changed_config_json_round_trip(tmp_path):
    cfg = _changed()
    back = RunConfig.from_json(cfg.to_json())
    assert back == cfg
    assert isinstance(back.model, ModelConfig) and back.train.schedule == "plateau"
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    assert RunConfig.load(path) == cfg
    assert json.loads(cfg.to_json()) == cfg.to_dict()


def test_partial_config_fills_defaults():
    cfg = RunConfig.from_dict({"train": {"epochs": 3}})
    assert cfg.train.epochs == 3 and cfg.train.lr == TrainConfig().lr and cfg.model == ModelConfig()


def test_int_accepted_for_float_field():
    cfg = RunConfig.from_dict({"train": {"lr": 1}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("raw, key", [
    ({"modle": {}}, "modle"),
    ({"model": {"hiden": 3}}, "hiden"),
    ({"train": {"epochs": 2, "epoch": 3}}, "epoch"),
    ({"serve": {"topm": 3}}, "topm"),
])
def test_unknown_key_is_named(raw, key):
    with pytest.raises(ConfigError, match=f"'{key}'") as info:
        RunConfig.from_dict(raw)
    if "model" in raw:
        assert "model" in str(info.value)  # says where the bad key sits


@pytest.mark.parametrize("raw, where", [
    ({"train": {"epochs": "5"}}, "train.epochs"),
    ({"train": {"epochs": 5.0}}, "train.epochs"),
    ({"train": {"epochs": True}}, "train.epochs"),
    ({"train": {"lr": "fast"}}, "train.lr"),
    ({"train": {"lr": None}}, "train.lr"),
    ({"train": {"amp": 1}}, "train.amp"),
    ({"train": {"device": 0}}, "train.device"),
    ({"train": {"schedule": "linear"}}, "train.schedule"),
    ({"model": {"dropout": [0.1]}}, "model.dropout"),
    ({"model": 3}, "model"),
    ({"calibration": {"method": "histogram"}}, "calibration.method"),
])
def test_wrong_type_is_named(raw, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        RunConfig.from_dict(raw)


def test_top_level_not_an_object():
    with pytest.raises(ConfigError, match="expected an object"):
        RunConfig.from_json("[1, 2]")


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{\n  "train": {\n    "epochs": 3,\n  }\n}\n')
    with pytest.raises(ConfigError, match="line 4") as info:
        RunConfig.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("raw, field", [
    ({"model": {"dropout": 1.5}}, "dropout"),
    ({"model": {"dropout": -0.1}}, "dropout"),
    ({"model": {"hidden": 100, "heads": 8}}, "hidden"),
    ({"model": {"hidden": 0}}, "hidden"),
    ({"model": {"heads": 0}}, "heads"),
    ({"model": {"layers": 0}}, "layers"),
    ({"loss": {"focal_alpha": 2.0}}, "focal_alpha"),
    ({"loss": {"label_smoothing": 0.5}}, "label_smoothing"),
    ({"loss": {"listmle_weight": 0, "focal_weight": 0}}, "weights"),
    ({"train": {"epochs": 0}}, "epochs"),
    ({"train": {"lr": 0}}, "lr"),
    ({"train": {"lr": -1e-3}}, "lr"),
    ({"train": {"weight_decay": -0.1}}, "weight_decay"),
    ({"train": {"warmup_steps": -1}}, "warmup_steps"),
    ({"train": {"max_list_len": -5}}, "max_list_len"),
    ({"train": {"batch_size": 0}}, "batch_size"),
    ({"train": {"device": "tpu"}}, "device"),
    ({"calibration": {"mc_samples": 0}}, "mc_samples"),
    ({"serve": {"top_m": 0}}, "top_m"),
    ({"serve": {"time_budget_ms": 0}}, "time_budget_ms"),
])
def test_out_of_range_value_names_the_field(raw, field):
    with pytest.raises(ConfigError, match=field):
        RunConfig.from_dict(raw)


def test_nan_from_json_is_rejected():
    with pytest.raises(ConfigError, match="dropout"):
        RunConfig.from_json('{"model": {"dropout": NaN}}')


@pytest.mark.parametrize("cls", [ModelConfig, LossConfig, TrainConfig, CalibrationConfig, ServeConfig])
def test_each_section_round_trips_alone(cls):
    cfg = cls()
    assert cls.from_json(cfg.to_json()) == cfg


def test_recipe_fields_round_trip_and_are_checked():
    cfg = RunConfig.from_dict({"loss": {"listwise": "softmax"}, "train": {"input_noise": 0.1, "log_features": "on"},
                               "calibration": {"method": "auto"}})
    assert RunConfig.from_json(cfg.to_json()) == cfg
    for raw, where in (({"loss": {"listwise": "ranknet"}}, "listwise"), ({"train": {"input_noise": -1.0}}, "input_noise"),
                       ({"train": {"log_features": "yes"}}, "log_features")):
        with pytest.raises(ConfigError, match=where):
            RunConfig.from_dict(raw)
