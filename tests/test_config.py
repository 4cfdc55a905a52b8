import dataclasses

import pytest

from dreamer.config import (
    MODEL_PRESETS,
    Config,
    ConfigError,
    TrainingConfig,
    config_from_dict,
    load_config,
    override,
)


def test_defaults_resolve_the_model_preset():
    cfg = config_from_dict({})
    assert cfg.model.size == "size1m"
    assert cfg.model.deter == 512 and cfg.model.classes == 4 and cfg.model.blocks == 8
    assert cfg.model.feature_dim == 512 + 32 * 4
    assert cfg.behavior.gamma == pytest.approx(1 - 1 / 333)


def test_attribute_access_and_frozen():
    cfg = config_from_dict({"training": {"lr": 3.0e-4}})
    assert cfg.training.lr == 3.0e-4
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.training.lr = 1.0


@pytest.mark.parametrize("size", sorted(MODEL_PRESETS))
def test_every_preset_loads(size):
    assert config_from_dict({"model": {"size": size}}).model.deter == MODEL_PRESETS[size]["deter"]


def test_preset_keys_can_be_overridden_one_by_one():
    cfg = config_from_dict({"model": {"size": "size1m", "units": 128, "classes": 16}})
    assert (cfg.model.units, cfg.model.classes, cfg.model.deter) == (128, 16, 512)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"training": {"lr": "1e-3"}}, "training.lr: expected a float, got '1e-3'"),
        ({"training": {"lr": -1.0}}, "training.lr: expected a positive float, got -1.0"),
        ({"training": {"env_steps": -5}}, "training.env_steps: expected a positive integer"),
        ({"training": {"env_steps": 1.5}}, "training.env_steps: expected an integer, got 1.5"),
        ({"training": {"lrr": 1.0}}, "training.lrr: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"model": {"size": "XXL"}}, "model.size: unknown size 'XXL'"),
        ({"model": {"size": "size1m", "blocks": 7}}, "model.blocks: 7 must divide model.deter"),
        ({"training": {"optimizer": "sgd"}}, "training.optimizer: expected one of 'laprop', 'adam'"),
        ({"env": {"kwargs": [1]}}, "env.kwargs: expected a mapping"),
        ({"env": "CartPole-v1"}, "env: expected a mapping"),
        ({"evaluate": {"video": "yes"}}, "evaluate.video: expected a boolean"),
        ({"world_model": {"loss_scales": {"reward": 1.0}}}, "world_model.loss_scales."),
        ({"behavior": {"return_lambda": 1.5}}, "behavior.return_lambda: expected a float in [0, 1], got 1.5"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_load_config_reads_yaml_and_reports_yaml_errors(tmp_path):
    good = tmp_path / "params.yaml"
    good.write_text("seed: 3\ntraining:\n  lr: 1.0e-4\n")
    cfg = load_config(good)
    assert cfg.seed == 3 and cfg.training.lr == 1e-4
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_flat_hash_and_override():
    cfg = Config()
    flat = config_from_dict({}).flat()
    assert flat["training.lr"] == 4e-5
    assert flat["world_model.loss_scales.kl_representation"] == 0.1
    changed = override(config_from_dict({}), **{"training.lr": 3e-4, "model.size": "debug"})
    assert changed.training.lr == 3e-4 and changed.model.deter == MODEL_PRESETS["debug"]["deter"]
    assert changed.hash() != config_from_dict({}).hash()
    assert config_from_dict({}).hash() == config_from_dict({}).hash()
    assert cfg.seed == 0


def test_updates_per_agent_step_is_train_ratio_over_batch_steps():
    cfg = config_from_dict({"training": {"train_ratio": 512, "batch_size": 16,
                                         "batch_length": 64}})
    assert cfg.training.updates_per_agent_step == pytest.approx(0.5)


PRESETS = {"presets": {"CartPole-v1": {"training": {"train_ratio": 128.0}},
                       "CarRacing-v3": {"env": {"action_repeat": 2}}}}


def test_env_preset_applies_to_its_env_only():
    assert config_from_dict({**PRESETS, "training": {"train_ratio": 64}}).training.train_ratio == 64
    cartpole = config_from_dict({**PRESETS, "env": {"id": "CartPole-v1"},
                                 "training": {"train_ratio": 64, "lr": 1.0e-4}})
    assert cartpole.training.train_ratio == 128.0  # the preset wins over the top level
    assert cartpole.training.lr == 1.0e-4  # keys it does not name keep the top-level value
    assert "presets" not in cartpole.to_dict()  # the config holds the merged values only


def test_namespaced_ids_have_nested_presets_that_dvc_can_set():
    """dm_control/cartpole-balance-v0 → presets.dm_control.cartpole-balance-v0 (``-S`` cannot
    address a key containing "/"); errors name the nested key."""
    presets = {"presets": {"dm_control": {"cartpole-balance-v0": {"training": {"env_steps": 500}},
                                          "walker-stand-v0": {"training": {"env_steps": 700}}}}}
    cfg = config_from_dict({**presets, "env": {"id": "dm_control/cartpole-balance-v0"}})
    assert cfg.training.env_steps == 500
    assert config_from_dict(presets).training.env_steps == TrainingConfig().env_steps
    bad = {"presets": {"dm_control": {"walker-stand-v0": {"training": {"env_step": 1}}}}}
    with pytest.raises(ConfigError, match=r"^presets\.dm_control\.walker-stand-v0\.training\.env_step: unknown key"):
        config_from_dict(bad)


def test_load_config_changes_are_set_before_the_preset(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("training:\n  train_ratio: 64.0\npresets:\n  CarRacing-v3:\n    env:\n"
                    "      action_repeat: 2\n      kwargs: {continuous: false}\n")
    cfg = load_config(path, {"env.id": "CarRacing-v3", "env.kwargs": {"lap_complete_percent": 0.9}})
    assert cfg.env.action_repeat == 2 and cfg.env.kwargs == {"continuous": False}
    assert load_config(path, {"training.lr": 2.0e-4}).training.lr == 2.0e-4


@pytest.mark.parametrize(("presets", "message"), [
    ({"CartPole-v1": {"training": {"lr": "1e-3"}}},
     "presets.CartPole-v1.training.lr: expected a float"),
    ({"CartPole-v1": {"trainig": {}}}, "presets.CartPole-v1.trainig: unknown key"),
    ({"CartPole-v1": {"env": {"id": "Pendulum-v1"}}}, "presets.CartPole-v1.env.id: a preset"),
    ({"CartPole-v1": 3}, "presets.CartPole-v1: expected a mapping"),
    ([1, 2], "presets: expected a mapping"),
])
def test_bad_presets_are_named(presets, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict({"presets": presets})


def test_the_shipped_params_file_and_its_presets_are_valid():
    from pathlib import Path

    params = Path(__file__).resolve().parents[1] / "params.yaml"
    base = load_config(params)
    for env_id in ("CartPole-v1", "CarRacing-v3", "dm_control/cartpole-balance-v0",
                   "dm_control/cartpole-balance_sparse-v0", "dm_control/cartpole-swingup-v0",
                   "dm_control/walker-stand-v0"):
        cfg = load_config(params, {"env.id": env_id})
        assert cfg.env.id == env_id and cfg != base
