import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from dreamer.config import (
    Config,
    ConfigError,
    TrainingConfig,
    config_from_dict,
    load_config,
    override,
)
from dreamer.presets import MODEL_PRESETS, _preset_entries

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.mark.parametrize("size", sorted(MODEL_PRESETS))
def test_unset_widths_come_from_the_size_preset(size):
    model = config_from_dict({"model": {"size": size, "deter": None}}).model  # null: unset
    assert {k: getattr(model, k) for k in MODEL_PRESETS[size]} == MODEL_PRESETS[size]
    assert model.feature_dim == model.deter + model.stoch * model.classes


def test_preset_keys_can_be_overridden_one_by_one():
    cfg = config_from_dict({"model": {"size": "size1m", "units": 128, "classes": 16}})
    assert (cfg.model.units, cfg.model.classes, cfg.model.deter) == (128, 16, 512)


def test_gamma_is_one_minus_one_over_the_discount_horizon():
    assert config_from_dict({"behavior": {"discount_horizon": 100}}).behavior.gamma == 0.99


def test_updates_per_agent_step_is_train_ratio_over_batch_steps():
    training = {"train_ratio": 64, "batch_size": 4, "batch_length": 8}
    assert config_from_dict({"training": training}).training.updates_per_agent_step == 2.0


def test_attribute_access_and_frozen():
    cfg = config_from_dict({"training": {"lr": 3.0e-4}})
    assert cfg.training.lr == 3.0e-4
    with pytest.raises(ValidationError, match="frozen"):
        cfg.training.lr = 1.0
    with pytest.raises(ValidationError, match="frozen"):
        cfg.seed = 1


def test_an_integer_may_stand_for_a_float_and_becomes_one():
    cfg = config_from_dict(
        {
            "training": {"lr": 1},
            "world_model": {
                "loss_scales": {
                    "reconstruction": 1,
                    "reward": 1,
                    "continuation": 1,
                    "kl_dynamics": 1,
                    "kl_representation": 0,
                }
            },
        }
    )
    assert type(cfg.training.lr) is float and cfg.training.lr == 1.0
    assert all(type(v) is float for v in cfg.world_model.loss_scales.values())


def test_a_block_left_empty_in_yaml_holds_the_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("training:\n  # lr: 1.0e-4\nmodel:\n")
    assert load_config(path) == config_from_dict({})


BAD_VALUES = [
    ({"training": {"lr": "1e-3"}}, "training.lr: expected a positive float, got '1e-3'"),
    ({"training": {"lr": -1.0}}, "training.lr: expected a positive float, got -1.0"),
    ({"training": {"lr": float("inf")}}, "training.lr: expected a finite float, got inf"),
    ({"training": {"env_steps": -5}}, "training.env_steps: expected a positive integer"),
    ({"training": {"env_steps": 1.5}}, "training.env_steps: expected a positive integer, got 1.5"),
    ({"training": {"batch_length": 1}}, "training.batch_length: expected an integer of at least 2"),
    ({"seed": True}, "seed: expected an integer in [0, 2147483647], got True"),
    # Cross-field and range checks (issue 33): each names the key before any work starts.
    ({"seed": -1}, "seed: expected an integer in [0, 2147483647], got -1"),
    ({"seed": 2**31}, "seed: expected an integer in [0, 2147483647], got 2147483648"),
    (
        {"training": {"replay_capacity": 64}},
        "training.replay_capacity: 64 cannot hold one training window (training.batch_length 64"
        " + 1 replay context step); set at least 65",
    ),
    (
        {"warmup": {"steps": 30}, "training": {"batch_length": 32}},
        "warmup.steps: 30 (at action_repeat 1) collects fewer agent steps than one training "
        "window holds (33: training.batch_length 32 + replay context); set at least 33",
    ),
    ({"model": {"classes": 40000}}, "model.classes: expected an integer in [1, 32767], got 40000"),
    (
        {"behavior": {"discount_horizon": 0.5}},
        "behavior.discount_horizon: expected a float of at least 1, got 0.5",
    ),
    ({"mlflow": {"experiment": ""}}, "mlflow.experiment: expected a non-empty string, got ''"),
    (
        {"training": {"max_skipped_updates": 0}},
        "training.max_skipped_updates: expected a positive integer, got 0",
    ),
    ({"training": {"lrr": 1.0}}, "training.lrr: unknown key (known: agc, batch_length,"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"model": {"size": "XXL"}}, "model.size: unknown size 'XXL'"),
    ({"model": {"size": "size1m", "blocks": 7}}, "model.blocks: 7 must divide model.deter (512)"),
    ({"model": {"deter": 0}}, "model.deter: expected a positive integer, got 0"),
    (
        {"training": {"optimizer": "sgd"}},
        "training.optimizer: expected one of 'laprop', 'adam', got 'sgd'",
    ),
    ({"env": {"kwargs": [1]}}, "env.kwargs: expected a mapping, got [1]"),
    ({"env": {"id": 3}}, "env.id: expected a string, got 3"),
    ({"env": "CartPole-v1"}, "env: expected a mapping, got 'CartPole-v1'"),
    ({"evaluate": {"video": "yes"}}, "evaluate.video: expected a boolean, got 'yes'"),
    (
        {"world_model": {"loss_scales": {"reward": 1.0}}},
        "world_model.loss_scales: expected exactly the keys reconstruction, reward,",
    ),
    (
        {"world_model": {"loss_scales": {"reward": -1}}},
        "world_model.loss_scales.reward: expected a non-negative float, got -1",
    ),
    (
        {"behavior": {"return_lambda": 1.5}},
        "behavior.return_lambda: expected a float in [0, 1], got 1.5",
    ),
    (
        {"behavior": {"return_norm_low": 0}},
        "behavior.return_norm_low: expected a float in (0, 1), got 0",
    ),
    ({"behavior": {"min_std": 2.0}}, "behavior.max_std: 1.0 is below behavior.min_std (2.0)"),
    (
        {"behavior": {"return_norm_low": 0.5, "return_norm_high": 0.5}},
        "behavior.return_norm_high: 0.5 must be above behavior.return_norm_low",
    ),
]


@pytest.mark.parametrize("data, message", BAD_VALUES)
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


def test_flat_names_every_leaf_by_its_dotted_key():
    cfg = config_from_dict({"training": {"lr": 3.0e-4}, "env": {"kwargs": {"continuous": False}}})
    flat = cfg.flat()
    assert flat["training.lr"] == 3.0e-4 and flat["env.kwargs.continuous"] is False
    assert (
        flat["world_model.loss_scales.kl_representation"]
        == cfg.world_model.loss_scales["kl_representation"]
    )
    assert flat["model.deter"] == cfg.model.deter and "model" not in flat
    assert config_from_dict(cfg.to_dict()) == cfg  # to_dict round-trips (checkpoints rely on it)


def test_hash_follows_the_values_and_only_the_sections_asked_for():
    base = config_from_dict({})
    assert config_from_dict({}).hash() == base.hash()
    other = override(base, **{"evaluate.episodes": 3})
    assert other.hash() != base.hash()
    assert other.hash(("training", "model")) == base.hash(("training", "model"))
    assert override(base, **{"training.lr": 1.0e-4}).hash(("training",)) != base.hash(("training",))
    # Checkpoints, DVC and MLflow compare these hashes across versions: a change of the
    # serialisation would make every stored checkpoint resume as "written with other params".
    # A new field changes it too (pinned again with behavior.replay_value_grad and
    # evaluate.deterministic, and with training.max_skipped_updates).
    pinned = config_from_dict({"training": {"env_steps": 20000, "train_ratio": 512.0}})
    assert pinned.hash() == "b6414ba3b079a509"
    assert json.loads(json.dumps(pinned.to_dict()))["model"]["deter"] == 512


def test_override_changes_keys_revalidates_and_follows_the_size():
    base = config_from_dict({"model": {"size": "size1m", "units": 128}})
    changed = override(base, **{"training.lr": 3e-4, "model.size": "debug"})
    assert changed.training.lr == 3e-4 and changed.model.units == MODEL_PRESETS["debug"]["units"]
    assert override(base, **{"training.lr": 3e-4}).model.units == 128
    with pytest.raises(ConfigError, match=r"^training\.lr: expected a positive float"):
        override(base, **{"training.lr": 0.0})


PRESETS = {
    "presets": {
        "CartPole-v1": {"training": {"train_ratio": 128.0}},
        "CarRacing-v3": {"env": {"action_repeat": 2}},
    }
}


def test_env_preset_applies_to_its_env_only():
    assert config_from_dict({**PRESETS, "training": {"train_ratio": 64}}).training.train_ratio == 64
    cartpole = config_from_dict(
        {**PRESETS, "env": {"id": "CartPole-v1"}, "training": {"lr": 1.0e-4}}
    )
    assert cartpole.training.train_ratio == 128.0
    assert cartpole.training.lr == 1.0e-4  # keys it does not name keep the top-level value
    assert "presets" not in cartpole.to_dict()  # the config holds the merged values only


def test_a_top_level_value_the_preset_would_replace_is_refused():
    """``dvc exp run -S env.id=CarRacing-v3 -S training.env_steps=300`` ran 12,000 steps."""
    with pytest.raises(ConfigError) as info:
        load_config(PARAMS, {"env.id": "CarRacing-v3", "training.env_steps": 300})
    assert str(info.value) == (
        "training.env_steps: 300 is overridden by presets.CarRacing-v3."
        "training.env_steps (12000); set that key instead"
    )
    with pytest.raises(
        ConfigError,
        match=r"^training\.env_steps: 300 is overridden by "
        r"presets\.dm_control\.walker-stand-v0\.training",
    ):
        load_config(PARAMS, {"env.id": "dm_control/walker-stand-v0", "training.env_steps": 300})
    with pytest.raises(ConfigError, match=r"^env\.kwargs: .* presets\.CarRacing-v3\.env\.kwargs"):
        config_from_dict(
            {
                "env": {"id": "CarRacing-v3", "kwargs": {"continuous": True}},
                "presets": {"CarRacing-v3": {"env": {"kwargs": {"continuous": False}}}},
            }
        )


def test_the_preset_key_wins_and_agreeing_or_default_top_level_values_pass():
    def env_steps(**changes):
        return load_config(PARAMS, {"env.id": "CarRacing-v3", **changes}).training.env_steps

    assert env_steps(**{"presets.CarRacing-v3.training.env_steps": 3000}) == 3000
    assert (
        env_steps(**{"presets.CarRacing-v3.training.env_steps": 3000, "training.env_steps": 3000})
        == 3000
    )
    assert env_steps(**{"training.env_steps": 12000}) == 12000  # the preset's own value
    # A top-level value equal to its default cannot be told from an unset one: the preset wins.
    default = TrainingConfig().env_steps
    assert (
        load_config(
            PARAMS, {"env.id": "dm_control/walker-stand-v0", "training.env_steps": default}
        ).training.env_steps
        == 50000
    )


def test_namespaced_ids_have_nested_presets_that_dvc_can_set():
    """dm_control/cartpole-balance-v0 → presets.dm_control.cartpole-balance-v0 (``-S`` cannot
    address a key containing "/"); errors name the nested key."""
    presets = {
        "presets": {
            "dm_control": {
                "cartpole-balance-v0": {"training": {"env_steps": 5000}},
                "walker-stand-v0": {"training": {"env_steps": 7000}},
            }
        }
    }
    cfg = config_from_dict({**presets, "env": {"id": "dm_control/cartpole-balance-v0"}})
    assert cfg.training.env_steps == 5000
    assert config_from_dict(presets).training.env_steps == TrainingConfig().env_steps
    bad = {"presets": {"dm_control": {"walker-stand-v0": {"training": {"env_step": 1}}}}}
    with pytest.raises(
        ConfigError,
        match=r"^presets\.dm_control\.walker-stand-v0\.training\."
        r"env_step: unknown key",
    ):
        config_from_dict(bad)


def test_load_config_changes_are_set_before_the_preset(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "training:\n  train_ratio: 64.0\npresets:\n  CarRacing-v3:\n    env:\n"
        "      action_repeat: 2\n      kwargs: {continuous: false}\n"
    )
    cfg = load_config(path, {"env.id": "CarRacing-v3", "env.image_size": 32})
    assert cfg.env.action_repeat == 2 and cfg.env.kwargs == {"continuous": False}
    assert cfg.env.image_size == 32 and cfg.training.train_ratio == 64.0
    assert (
        load_config(
            path, {"presets.CarRacing-v3.env.action_repeat": 4, "env.id": "CarRacing-v3"}
        ).env.action_repeat
        == 4
    )


@pytest.mark.parametrize(
    ("presets", "message"),
    [
        (
            {"CartPole-v1": {"training": {"lr": "1e-3"}}},
            "presets.CartPole-v1.training.lr: expected a positive float, got '1e-3'",
        ),
        ({"CartPole-v1": {"trainig": {}}}, "presets.CartPole-v1.trainig: unknown key"),
        ({"CartPole-v1": {"env": {"id": "Pendulum-v1"}}}, "presets.CartPole-v1.env.id: a preset"),
        ({"CartPole-v1": 3}, "presets.CartPole-v1: expected a mapping"),
        ([1, 2], "presets: expected a mapping"),
    ],
)
def test_bad_presets_are_named(presets, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"presets": presets})
    assert str(info.value).startswith(message)


def test_the_shipped_params_file_and_every_preset_in_it_are_valid():
    env_ids = _preset_entries(
        yaml.safe_load(PARAMS.read_text())["presets"], set(Config.model_fields)
    )
    assert {"Pendulum-v1", "CartPole-v1", "CarRacing-v3", "dm_control/walker-stand-v0"} <= set(
        env_ids
    )
    for env_id in env_ids:
        cfg = load_config(PARAMS, {"env.id": env_id})
        top_level = load_config(PARAMS, {"env.id": env_id, "presets": {}})
        assert cfg.env.id == env_id and cfg != top_level
    # The classic-control and CarRacing presets keep the replay value loss's gradient out of the
    # world model (README, Learning and Pixels); every other task keeps the official top-level true.
    assert not load_config(PARAMS).behavior.replay_value_grad
    assert not load_config(PARAMS, {"env.id": "CarRacing-v3"}).behavior.replay_value_grad
    dmc = load_config(PARAMS, {"env.id": "dm_control/walker-stand-v0"})
    assert dmc.behavior.replay_value_grad


@pytest.mark.parametrize(
    "changes, minimum",
    [
        ({"training.env_steps": 1000}, 1004),  # warm-up 1,000, then one update per 4 agent steps
        ({"env.id": "CarRacing-v3", "presets.CarRacing-v3.training.env_steps": 2000}, 2004),
        ({"training.env_steps": 1000, "warmup.steps": 999, "env.num_envs": 2}, 1004),
    ],
)
def test_a_budget_without_a_gradient_step_is_refused_naming_the_minimum(changes, minimum):
    """Whole rounds of num_envs agent steps of action_repeat frames, after a warm-up of whole
    rounds, until train_ratio / (B·T) per agent step adds up to one update."""
    with pytest.raises(
        ConfigError,
        match=rf"^training\.env_steps: \d+ leaves no gradient step "
        rf".*set at least {minimum}$",
    ):
        load_config(PARAMS, changes)
    cfg = load_config(
        PARAMS,
        {**changes, "training.env_steps": minimum}
        if "training.env_steps" in changes
        else {**changes, "presets.CarRacing-v3.training.env_steps": minimum},
    )
    assert cfg.training.env_steps == minimum
