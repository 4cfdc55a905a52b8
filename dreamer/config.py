"""Typed, validated configuration: ``params.yaml`` loaded once into frozen dataclasses.

Every ``params.yaml`` block has a dataclass whose field names are the YAML keys. ``load_config``
rejects unknown keys, wrong types and out-of-range values with one line naming the key, e.g.
``training.lr: expected a positive float, got '1e-3'``. Attribute access (``cfg.training.lr``) is
what the user's roadmap asks for; frozen objects mean nothing mutates config after loading.

Model sizes are presets (``model.size``) whose widths can each be overridden key by key.
Environment presets (the ``presets`` block, keyed by gymnasium id) hold the settings a task needs
beyond the defaults; the one named by ``env.id`` is merged over the file's top-level values, so
``dvc exp run -S env.id=CartPole-v1`` picks up CartPole's settings by itself.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A params file or dict that does not describe a valid configuration."""


# --- checks attached to fields through ``metadata={"check": ...}`` -------------------------------
def _positive(x):
    return x > 0


def _non_negative(x):
    return x >= 0


def _unit_open(x):  # (0, 1)
    return 0 < x < 1


def _unit_closed(x):  # [0, 1]
    return 0 <= x <= 1


_CHECK_WORDS = {  # how an error names the expectation, e.g. "a positive float"
    _positive: "a positive {}",
    _non_negative: "a non-negative {}",
    _unit_open: "a {} in (0, 1)",
    _unit_closed: "a {} in [0, 1]",
}


def _f(default, check=None, **kw):
    """A dataclass field with an optional range check (see ``_CHECK_WORDS``)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"check": check}, **kw)
    return field(default=default, metadata={"check": check}, **kw)


# --- model size presets ---------------------------------------------------------------------------
# deter: GRU width; hidden: width of the RSSM's input/prior/posterior layers; units: MLP width of
# encoder/decoder/heads; stoch × classes: categorical latents; depth: CNN base channels;
# blocks: groups of the block-diagonal GRU; layers: MLP depth of encoder/decoder/actor/critic.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    # tiny, for tests (danijar's `debug` config)
    "debug": dict(deter=16, hidden=16, units=16, stoch=4, classes=4, depth=4, blocks=2, layers=1),
    # official current sizes (configs.yaml: size1m, size12m, size25m, size50m)
    "size1m": dict(deter=512, hidden=64, units=64, stoch=32, classes=4, depth=4, blocks=8, layers=3),
    "size12m": dict(
        deter=2048, hidden=256, units=256, stoch=32, classes=16, depth=16, blocks=8, layers=3
    ),
    "size25m": dict(
        deter=3072, hidden=384, units=384, stoch=32, classes=24, depth=24, blocks=8, layers=3
    ),
    "size50m": dict(
        deter=4096, hidden=512, units=512, stoch=32, classes=32, depth=32, blocks=8, layers=3
    ),
    # paper v1 (arXiv 2301.04104, table of model sizes); classes 32, 8 GRU blocks
    "XS": dict(deter=256, hidden=256, units=256, stoch=32, classes=32, depth=24, blocks=8, layers=2),
    "S": dict(deter=512, hidden=512, units=512, stoch=32, classes=32, depth=32, blocks=8, layers=2),
    "M": dict(deter=1024, hidden=640, units=640, stoch=32, classes=32, depth=48, blocks=8, layers=3),
    "L": dict(deter=2048, hidden=768, units=768, stoch=32, classes=32, depth=64, blocks=8, layers=4),
}


@dataclass(frozen=True)
class EnvConfig:
    """Which gymnasium environment and how to wrap it."""

    id: str = "Pendulum-v1"
    kwargs: dict = _f({})  # passed to gymnasium.make(id, **kwargs)
    action_repeat: int = _f(1, _positive)
    image_size: int = _f(64, _positive)  # image observations are resized to image_size²
    num_envs: int = _f(1, _positive)  # parallel environments for collection


@dataclass(frozen=True)
class WarmupConfig:
    """Random-policy collection that fills the replay buffer before training."""

    steps: int = _f(1000, _positive)


@dataclass(frozen=True)
class ModelConfig:
    """Network widths. ``size`` names a preset; any width set here overrides the preset's."""

    size: str = "size1m"
    deter: Optional[int] = _f(None, _positive)
    hidden: Optional[int] = _f(None, _positive)
    units: Optional[int] = _f(None, _positive)
    stoch: Optional[int] = _f(None, _positive)
    classes: Optional[int] = _f(None, _positive)
    depth: Optional[int] = _f(None, _positive)
    blocks: Optional[int] = _f(None, _positive)
    layers: Optional[int] = _f(None, _positive)
    reward_bins: int = _f(255, _positive)
    unimix: float = _f(0.01, _unit_closed)

    @property
    def feature_dim(self) -> int:
        """Width of feat = [h, flatten(z)], the input of every head."""
        return self.deter + self.stoch * self.classes


@dataclass(frozen=True)
class WorldModelConfig:
    """World-model losses (DESIGN §4): KL balancing with free nats, scaled loss terms."""

    free_nats: float = _f(1.0, _non_negative)
    loss_scales: dict = _f(
        dict(reconstruction=1.0, reward=1.0, continuation=1.0, kl_dynamics=1.0,
             kl_representation=0.1)
    )


@dataclass(frozen=True)
class BehaviorConfig:
    """Actor-critic learned in imagination."""

    horizon: int = _f(15, _positive)
    discount_horizon: float = _f(333.0, _positive)  # γ = 1 − 1/discount_horizon ≈ 0.997
    return_lambda: float = _f(0.95, _unit_closed)
    entropy: float = _f(3.0e-4, _non_negative)
    actor_gradient: Literal["reinforce", "dynamics"] = "reinforce"
    min_std: float = _f(0.1, _positive)
    max_std: float = _f(1.0, _positive)
    slow_critic_rate: float = _f(0.02, _unit_closed)
    slow_critic_scale: float = _f(1.0, _non_negative)
    return_norm_rate: float = _f(0.01, _unit_closed)
    return_norm_low: float = _f(0.05, _unit_open)
    return_norm_high: float = _f(0.95, _unit_open)
    # The critic also learns on the replayed window (official repval_loss, scale 0.3); 0: off.
    replay_value_scale: float = _f(0.3, _non_negative)

    @property
    def gamma(self) -> float:
        return 1.0 - 1.0 / self.discount_horizon


@dataclass(frozen=True)
class TrainingConfig:
    """Interaction loop and optimisation."""

    env_steps: int = _f(20000, _positive)  # total env steps, warm-up included
    train_ratio: float = _f(512.0, _positive)  # replayed steps per agent step (official meaning)
    batch_size: int = _f(16, _positive)
    batch_length: int = _f(64, _positive)
    lr: float = _f(4.0e-5, _positive)
    optimizer: Literal["laprop", "adam"] = "laprop"
    lr_warmup: int = _f(1000, _non_negative)  # gradient steps of linear lr warm-up
    agc: float = _f(0.3, _positive)  # adaptive gradient clipping (laprop)
    replay_capacity: int = _f(1_000_000, _positive)
    # Windows start from the latent state stored for their first step (official replay_context 1)
    replay_context: bool = True
    log_every: int = _f(1000, _positive)  # env steps between metric rows
    checkpoint_every: int = _f(5000, _positive)  # env steps between checkpoints

    @property
    def updates_per_agent_step(self) -> float:
        """Gradient steps owed per agent step (one action, ``action_repeat`` frames):
        train_ratio / (B·T)."""
        return self.train_ratio / (self.batch_size * self.batch_length)


@dataclass(frozen=True)
class EvaluateConfig:
    episodes: int = _f(10, _positive)
    video: bool = True


@dataclass(frozen=True)
class MlflowConfig:
    experiment: str = "dreamerv3"
    tracking_uri: str = ""  # empty: the embedded store in the project (MLFLOW_TRACKING_URI wins)


@dataclass(frozen=True)
class Config:
    """The whole ``params.yaml``."""

    seed: int = _f(0, _non_negative)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    threads: int = _f(2, _positive)
    # matmuls in bfloat16 where the hardware does them natively (auto), or always/never
    precision: Literal["auto", "bfloat16", "float32"] = "auto"
    compile: bool = True  # torch.compile the update and the policy step (training only)
    env: EnvConfig = field(default_factory=EnvConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Flattened ``{"training.lr": 4e-05, ...}``, for MLflow params."""
        return _flatten(self.to_dict())

    def hash(self, sections: tuple[str, ...] | None = None) -> str:
        """Stable short hash of the config (or of some sections), e.g. to validate a resume."""
        data = self.to_dict()
        if sections is not None:
            data = {k: data[k] for k in sections}
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


# --- parsing --------------------------------------------------------------------------------------
def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _describe(inner[0]) + " or null"
    return {int: "an integer", float: "a float", str: "a string", bool: "a boolean",
            dict: "a mapping"}.get(tp, str(tp))


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
    }.get(tp)
    if ok is None:
        raise TypeError(f"unsupported config annotation {tp} for {key}")
    if not ok:
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite float, got {value!r}")
    return value


def _build(cls, data: Any, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'params'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}{unknown[0]}"
        raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data.get(f.name), key + ".")
            continue
        if f.name not in data:
            continue
        value = _coerce(data[f.name], tp, key)
        check = f.metadata.get("check")
        if check is not None and value is not None and not check(value):
            raise ConfigError(
                f"{key}: expected {_CHECK_WORDS[check].format(_describe(tp).split()[-1])}, "
                f"got {data[f.name]!r}"
            )
        kwargs[f.name] = value
    return cls(**kwargs)


def _resolve_model(model: ModelConfig) -> ModelConfig:
    if model.size not in MODEL_PRESETS:
        raise ConfigError(
            f"model.size: unknown size {model.size!r} (known: {', '.join(MODEL_PRESETS)})"
        )
    preset = MODEL_PRESETS[model.size]
    filled = {k: v for k, v in preset.items() if getattr(model, k) is None}
    model = dataclasses.replace(model, **filled)
    if model.deter % model.blocks:
        raise ConfigError(
            f"model.blocks: {model.blocks} must divide model.deter ({model.deter})"
        )
    return model


def _cross_checks(cfg: Config) -> None:
    b = cfg.behavior
    if b.min_std > b.max_std:
        raise ConfigError(f"behavior.min_std: {b.min_std} is above behavior.max_std {b.max_std}")
    if b.return_norm_low >= b.return_norm_high:
        raise ConfigError("behavior.return_norm_low: must be below behavior.return_norm_high")
    default_scales = set(WorldModelConfig().loss_scales)
    scales = cfg.world_model.loss_scales
    if set(scales) != default_scales:
        extra = sorted(set(scales) ^ default_scales)[0]
        raise ConfigError(
            f"world_model.loss_scales.{extra}: loss scale keys must be exactly "
            f"{', '.join(sorted(default_scales))}"
        )
    for name, value in scales.items():
        _coerce(value, float, f"world_model.loss_scales.{name}")
        if value < 0:
            raise ConfigError(f"world_model.loss_scales.{name}: expected a non-negative float")
    if cfg.training.batch_length < 2:
        raise ConfigError("training.batch_length: expected at least 2")


def _merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` merged in recursively (nested mappings merge, values replace)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "kwargs":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_env_preset(data: dict) -> dict:
    """Validate every entry of ``data["presets"]`` and merge the one for ``env.id`` into ``data``.

    A preset is a partial params file (``{"training": {"train_ratio": 128.0}}``); its keys and
    values are checked like the top level's, with errors naming ``presets.<id>.<key>``. Preset
    values win over the top-level ones: to change one, change it inside the preset.

    A namespaced id ``ns/name`` (``dm_control/cartpole-balance-v0``) has its preset nested under
    ``presets.ns.name``, since ``dvc exp run -S`` cannot address a key containing ``/``.
    """
    data = dict(data)
    presets = data.pop("presets", None) or {}
    if not isinstance(presets, dict):
        raise ConfigError(f"presets: expected a mapping from env id to settings, got {presets!r}")
    entries = _preset_entries(presets)
    for env_id, (where, preset) in entries.items():
        if not isinstance(preset, dict):
            raise ConfigError(f"{where}: expected a mapping, got {preset!r}")
        if "id" in (preset.get("env") or {}):
            raise ConfigError(f"{where}.env.id: a preset cannot change the env id")
        _build(Config, preset, where + ".")  # keys, types and ranges, named inside the preset
    env = data.get("env")
    env_id = env.get("id", EnvConfig.id) if isinstance(env, dict) else EnvConfig.id
    _, preset = entries.get(env_id, (None, None))
    return _merge(data, preset) if preset else data


def _preset_entries(presets: dict) -> dict[str, tuple[str, Any]]:
    """``{env id: (dotted key, preset)}``. A block whose keys are not params sections (``env``,
    ``training``, …) but whose entries have them is a namespace: the presets of ``<key>/<name>``."""
    sections = {f.name for f in dataclasses.fields(Config)}

    def is_preset(value) -> bool:
        return isinstance(value, dict) and bool(sections & set(value))

    entries = {}
    for key, value in presets.items():
        if (isinstance(value, dict) and not is_preset(value)
                and any(is_preset(v) for v in value.values())):
            for name, preset in value.items():
                entries[f"{key}/{name}"] = (f"presets.{key}.{name}", preset)
        else:
            entries[str(key)] = (f"presets.{key}", value)
    return entries


def config_from_dict(data: dict) -> Config:
    """Build and validate a :class:`Config` from a plain dict (e.g. parsed YAML).

    The env preset for ``env.id`` (``presets`` block) is applied first; the resulting config
    holds the merged values only.
    """
    cfg = _build(Config, apply_env_preset(data), "")
    cfg = dataclasses.replace(cfg, model=_resolve_model(cfg.model))
    _cross_checks(cfg)
    loss_scales = {k: float(v) for k, v in cfg.world_model.loss_scales.items()}
    world_model = dataclasses.replace(cfg.world_model, loss_scales=loss_scales)
    return dataclasses.replace(cfg, world_model=world_model)


def load_config(path: str | Path, changes: dict[str, Any] | None = None) -> Config:
    """Load ``params.yaml``; any problem is a :class:`ConfigError` naming the file or key.

    ``changes`` are dotted-key values set in the file's data before presets are applied, as
    ``dvc exp run -S key=value`` does: ``load_config("params.yaml", {"env.id": "CartPole-v1"})``.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of params, got {data!r}")
    return config_from_dict(_set_dotted(data, changes or {}))


def _set_dotted(data: dict, changes: dict[str, Any]) -> dict:
    """A copy of ``data`` with ``{"training.lr": 1e-4}``-style keys set (parents created)."""
    data = copy.deepcopy(data)
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: {p} is not a mapping")
        node[leaf] = value
    return data


def override(cfg: Config, **changes: Any) -> Config:
    """A copy of ``cfg`` with dotted keys changed, validated again: ``override(cfg, **{"training.lr": 1e-4})``.

    ``cfg`` is already resolved, so env presets are not applied again (changing ``env.id`` here
    keeps every other value); use ``load_config(path, changes)`` to get a preset's settings.
    """
    data = cfg.to_dict()
    # Presets must re-resolve: drop widths that came from the old preset unless overridden.
    if "model.size" in changes:
        for k in MODEL_PRESETS["debug"]:
            data["model"][k] = None
    return config_from_dict(_set_dotted(data, changes))
