"""Typed, validated configuration: ``params.yaml`` loaded once into frozen pydantic models.

Every ``params.yaml`` block has a model whose field names are the YAML keys. ``load_config``
rejects unknown keys, wrong types and out-of-range values with one line naming the key, e.g.
``training.lr: expected a positive float, got '1e-3'``. Types are strict (a string is not a
number, a boolean not an integer); only an integer may stand for a float. Attribute access
(``cfg.training.lr``) is what the user's roadmap asks for; frozen objects mean nothing mutates
config after loading.

Model sizes (``model.size``) and environment presets (the ``presets`` block) live in
:mod:`dreamer.presets`; this module validates, applies the env preset for ``env.id`` and checks
the budget.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from .errors import ConfigError
from .presets import MODEL_PRESETS, apply_env_preset

# Range-checked numbers. The description is what an error says the key expects.
PositiveInt = Annotated[int, Field(gt=0, description="a positive integer")]
NonNegativeInt = Annotated[int, Field(ge=0, description="a non-negative integer")]
PositiveFloat = Annotated[float, Field(gt=0, description="a positive float")]
NonNegativeFloat = Annotated[float, Field(ge=0, description="a non-negative float")]
OpenUnitFloat = Annotated[float, Field(gt=0, lt=1, description="a float in (0, 1)")]
ClosedUnitFloat = Annotated[float, Field(ge=0, le=1, description="a float in [0, 1]")]


class _Block(BaseModel):
    """A mapping of ``params.yaml``: frozen, no unknown keys, no coercion but int → float.
    Defaults are validated too, so a cross-check runs whichever of its keys is set."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, allow_inf_nan=False, validate_default=True
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_empty(cls, data: Any) -> Any:
        return {} if data is None else data  # a YAML block whose keys are all commented out


class EnvConfig(_Block):
    """Which gymnasium environment and how to wrap it."""

    id: str = "Pendulum-v1"
    kwargs: dict = {}  # passed to gymnasium.make(id, **kwargs)
    action_repeat: PositiveInt = 1
    image_size: PositiveInt = 64  # image observations are resized to image_size²
    num_envs: PositiveInt = 1  # parallel environments for collection


class WarmupConfig(_Block):
    """Random-policy collection that fills the replay buffer before training."""

    steps: PositiveInt = 1000


class ModelConfig(_Block):
    """Network widths. ``size`` names a preset; any width set here overrides the preset's."""

    size: str = "size1m"
    deter: PositiveInt  # the widths left unset (or null) are the size preset's
    hidden: PositiveInt
    units: PositiveInt
    stoch: PositiveInt
    # at most 32767: the replay stores latent class indices as int16 (replay context)
    classes: Annotated[int, Field(gt=0, le=32767, description="an integer in [1, 32767]")]
    depth: PositiveInt
    blocks: PositiveInt
    layers: PositiveInt
    reward_bins: PositiveInt = 255
    unimix: ClosedUnitFloat = 0.01

    @model_validator(mode="before")
    @classmethod
    def _widths_from_size(cls, data: Any) -> Any:
        data = {} if data is None else data  # runs before _Block's validator
        if not isinstance(data, dict):
            return data
        preset = MODEL_PRESETS.get(data.get("size", cls.model_fields["size"].default), {})
        return {**data, **{k: v for k, v in preset.items() if data.get(k) is None}}

    @field_validator("size")
    @classmethod
    def _known_size(cls, size: str) -> str:
        if size not in MODEL_PRESETS:
            raise ValueError(f"unknown size {size!r} (known: {', '.join(MODEL_PRESETS)})")
        return size

    @field_validator("blocks")
    @classmethod
    def _blocks_divide_deter(cls, blocks: int, info: ValidationInfo) -> int:
        deter = info.data.get("deter")
        if deter and deter % blocks:
            raise ValueError(f"{blocks} must divide model.deter ({deter})")
        return blocks

    @property
    def feature_dim(self) -> int:
        """Width of feat = [h, flatten(z)], the input of every head."""
        return self.deter + self.stoch * self.classes


_LOSS_SCALES = dict(
    reconstruction=1.0, reward=1.0, continuation=1.0, kl_dynamics=1.0, kl_representation=0.1
)


class WorldModelConfig(_Block):
    """World-model losses (DESIGN §4): KL balancing with free nats, scaled loss terms."""

    free_nats: NonNegativeFloat = 1.0
    loss_scales: dict[str, NonNegativeFloat] = _LOSS_SCALES  # one per loss term, no more

    @field_validator("loss_scales")
    @classmethod
    def _one_scale_per_term(cls, scales: dict[str, float]) -> dict[str, float]:
        if set(scales) != set(_LOSS_SCALES):
            raise ValueError(
                f"expected exactly the keys {', '.join(_LOSS_SCALES)}, got {', '.join(scales)}"
            )
        return scales


class BehaviorConfig(_Block):
    """Actor-critic learned in imagination."""

    horizon: PositiveInt = 15
    # γ = 1 − 1/discount_horizon ≈ 0.997; below 1, γ would be negative
    discount_horizon: Annotated[float, Field(ge=1, description="a float of at least 1")] = 333.0
    return_lambda: ClosedUnitFloat = 0.95
    entropy: NonNegativeFloat = 3.0e-4
    actor_gradient: Literal["reinforce", "dynamics"] = "reinforce"
    min_std: PositiveFloat = 0.1
    max_std: PositiveFloat = 1.0
    slow_critic_rate: ClosedUnitFloat = 0.02
    slow_critic_scale: NonNegativeFloat = 1.0
    return_norm_rate: ClosedUnitFloat = 0.01
    return_norm_low: OpenUnitFloat = 0.05
    return_norm_high: OpenUnitFloat = 0.95
    # The critic also learns on the replayed window (official repval_loss, scale 0.3); 0: off.
    replay_value_scale: NonNegativeFloat = 0.3
    # Its gradient reaches the world model through the posterior features (official
    # repval_grad: True); false: it trains the critic only.
    replay_value_grad: bool = True

    @field_validator("max_std")
    @classmethod
    def _max_std_not_below_min(cls, max_std: float, info: ValidationInfo) -> float:
        if max_std < info.data.get("min_std", 0):
            raise ValueError(f"{max_std} is below behavior.min_std ({info.data['min_std']})")
        return max_std

    @field_validator("return_norm_high")
    @classmethod
    def _high_above_low(cls, high: float, info: ValidationInfo) -> float:
        if high <= info.data.get("return_norm_low", 0):
            raise ValueError(f"{high} must be above behavior.return_norm_low")
        return high

    @property
    def gamma(self) -> float:
        return 1.0 - 1.0 / self.discount_horizon


class TrainingConfig(_Block):
    """Interaction loop and optimisation."""

    # env_steps and train_ratio default to params.yaml's top-level values: presets may replace a
    # top-level value only while it equals its default (apply_env_preset).
    env_steps: PositiveInt = 6000  # total env steps, warm-up included
    train_ratio: PositiveFloat = 256.0  # replayed steps per agent step (official meaning)
    batch_size: PositiveInt = 16
    batch_length: Annotated[int, Field(ge=2, description="an integer of at least 2")] = 64
    lr: PositiveFloat = 4.0e-5
    optimizer: Literal["laprop", "adam"] = "laprop"
    lr_warmup: NonNegativeInt = 1000  # gradient steps of linear lr warm-up
    agc: PositiveFloat = 0.3  # adaptive gradient clipping (laprop)
    replay_capacity: PositiveInt = 1_000_000
    # Windows start from the latent state stored for their first step (official replay_context 1)
    replay_context: bool = True
    log_every: PositiveInt = 1000  # env steps between metric rows
    checkpoint_every: PositiveInt = 5000  # env steps between checkpoints
    # updates in a row with a non-finite loss or gradient (each skipped) before training stops
    max_skipped_updates: PositiveInt = 20

    @field_validator("replay_capacity")
    @classmethod
    def _capacity_holds_a_window(cls, capacity: int, info: ValidationInfo) -> int:
        window = info.data.get("batch_length", 2) + int(info.data.get("replay_context", True))
        if capacity < window:
            raise ValueError(
                f"{capacity} cannot hold one training window (training.batch_length "
                f"{info.data.get('batch_length')} + {window - info.data.get('batch_length', 2)} "
                f"replay context step); set at least {window}"
            )
        return capacity

    @property
    def updates_per_agent_step(self) -> float:
        """Gradient steps owed per agent step (one action, ``action_repeat`` frames):
        train_ratio / (B·T)."""
        return self.train_ratio / (self.batch_size * self.batch_length)


class EvaluateConfig(_Block):
    episodes: PositiveInt = 10
    video: bool = True
    # The mode of the policy and of the posterior latents; false: sample both, as in training
    # (the official policy always samples, and its published scores are training episodes).
    deterministic: bool = True


class MlflowConfig(_Block):
    experiment: Annotated[str, Field(min_length=1, description="a non-empty string")] = "dreamerv3"
    tracking_uri: str = ""  # empty: the embedded store in the project (MLFLOW_TRACKING_URI wins)


class Config(_Block):
    """The whole ``params.yaml``."""

    # numpy's legacy and the envs' seeds are 32-bit: evaluation adds 10,000 + episode, so 2³¹ − 1
    seed: Annotated[int, Field(ge=0, le=2**31 - 1, description="an integer in [0, 2147483647]")] = 0
    device: Literal["cpu", "cuda", "auto"] = "auto"
    threads: PositiveInt = 2
    # matmuls in bfloat16 where the hardware does them natively (auto), or always/never
    precision: Literal["auto", "bfloat16", "float32"] = "auto"
    compile: bool = True  # torch.compile the update and the policy step (training only)
    env: EnvConfig = EnvConfig()
    warmup: WarmupConfig = WarmupConfig()
    model: ModelConfig = ModelConfig()
    world_model: WorldModelConfig = WorldModelConfig()
    behavior: BehaviorConfig = BehaviorConfig()
    training: TrainingConfig = TrainingConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    mlflow: MlflowConfig = MlflowConfig()

    def to_dict(self) -> dict:
        return self.model_dump()

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


_DEFAULTS = Config().to_dict()


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
def _validate(data: Any, prefix: str = "") -> Config:
    """``Config`` from ``data``; pydantic's first error becomes one line naming the dotted key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
    loc, kind = error["loc"], error["type"]
    key = prefix + ".".join(map(str, loc))
    if kind == "extra_forbidden":
        known = _type_and_field(loc[:-1])[0].model_fields
        raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(known))})")
    if kind == "value_error":  # raised by one of the validators above
        raise ConfigError(f"{key}: {error['ctx']['error']}")
    expected = "a finite float" if kind == "finite_number" else _expected(*_type_and_field(loc))
    raise ConfigError(f"{key}: expected {expected}, got {error['input']!r}")


def _type_and_field(loc: tuple) -> tuple[Any, FieldInfo | None]:
    """The annotation and field of the key at ``loc`` (``("training", "lr")``) below Config."""
    tp, field = Config, None
    for key in loc:
        if get_origin(tp) is dict:  # a mapping's value: Annotated[type, Field(...)]
            tp, field = get_args(get_args(tp)[1])
        else:
            field = tp.model_fields[key]
            tp = field.annotation
    return tp, field


def _expected(tp: Any, field: FieldInfo | None) -> str:
    """What a key takes, in words: "a positive float", "one of 'cpu', 'cuda', 'auto'"."""
    if field is not None and field.description:
        return field.description
    base = get_origin(tp) or tp
    if base is Literal:
        return "one of " + ", ".join(map(repr, get_args(tp)))
    if issubclass(base, BaseModel):
        return "a mapping"
    return {
        int: "an integer",
        float: "a float",
        bool: "a boolean",
        str: "a string",
        dict: "a mapping",
    }[base]


def config_from_dict(data: dict) -> Config:
    """Build and validate a :class:`Config` from a plain dict (e.g. parsed YAML).

    The env preset for ``env.id`` (``presets`` block) is applied first; the resulting config
    holds the merged values only.
    """
    cfg = _validate(apply_env_preset(data, _validate, set(Config.model_fields), _DEFAULTS))
    _check_budget(cfg)
    return cfg


def _check_budget(cfg: Config) -> None:
    """Refuse a budget that leaves no room for one gradient step after the warm-up, before any
    env is stepped: the warm-up collects whole rounds of ``num_envs`` agent steps, training then
    owes ``updates_per_agent_step`` per agent step. The warm-up must also hold one window."""
    t, env = cfg.training, cfg.env
    window = t.batch_length + int(t.replay_context)
    if cfg.warmup.steps // env.action_repeat < window:
        raise ConfigError(
            f"warmup.steps: {cfg.warmup.steps} (at action_repeat {env.action_repeat}) collects "
            f"fewer agent steps than one training window holds ({window}: training.batch_length "
            f"{t.batch_length} + replay context); set at least {window * env.action_repeat}"
        )
    frames_per_round = env.num_envs * env.action_repeat
    warmup_frames = math.ceil(cfg.warmup.steps / frames_per_round) * frames_per_round
    rounds = math.ceil(1 / (env.num_envs * t.updates_per_agent_step) - 1e-9)
    minimum = warmup_frames + rounds * frames_per_round
    if t.env_steps < minimum:
        raise ConfigError(
            f"training.env_steps: {t.env_steps} leaves no gradient step after warmup.steps "
            f"{cfg.warmup.steps} at train_ratio {t.train_ratio:g} (batch_size x batch_length "
            f"{t.batch_size * t.batch_length}, {env.num_envs} envs, action_repeat "
            f"{env.action_repeat}); set at least {minimum}"
        )


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
    """A copy of ``cfg`` with dotted keys changed and validated again:
    ``override(cfg, **{"training.lr": 1e-4})``.

    ``cfg`` is already resolved, so env presets are not applied again (changing ``env.id`` here
    keeps every other value); use ``load_config(path, changes)`` to get a preset's settings.
    """
    data = cfg.to_dict()
    if "model.size" in changes:  # widths that came from the old size follow the new one
        for width in MODEL_PRESETS["debug"]:
            del data["model"][width]
    return config_from_dict(_set_dotted(data, changes))
