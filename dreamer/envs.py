"""Gymnasium adapter: every supported environment seen through one observation/action format.

Observations become a ``dict[str, np.ndarray]``:

* images — uint8 ``(H, W, C)`` resized to ``image_size × image_size`` (area interpolation);
* vectors — float32 ``(V,)``, flattened from any Box of numbers.

A plain Box observation gets the key ``"image"`` or ``"vector"``; a ``Dict`` space keeps its
sub-space names. Actions are always a float32 vector of size ``A``: a one-hot for ``Discrete(n)``
(``A = n``), or values in ``[-1, 1]`` for a bounded ``Box`` that the adapter rescales to
``[low, high]``. Anything else is rejected up front with a one-line :class:`EnvSpecError`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator

from .config import EnvConfig
from .errors import EnvSpecError
from .seeding import generator_from_state, generator_state, seed_env

# Rendering is always offscreen (rgb_array): keep pygame/SDL from looking for a display or a sound
# card, which prints "XDG_RUNTIME_DIR is invalid" on headless machines.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
# MuJoCo (DeepMind Control) renders through GLFW by default, which needs a display; EGL renders
# headless on the GPU driver or Mesa. Must be set before dm_control is imported.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

# Packages that register a gymnasium namespace when imported but do not advertise it to gymnasium
# (no plugin entry point), so ``gymnasium.spec("dm_control/…")`` fails until they are imported.
NAMESPACE_PACKAGES = {"dm_control": "shimmy", "ALE": "ale_py"}

_SUPPORTED_OBS = "Box vectors, uint8 Box images (H, W) or (H, W, C≤4), a flat Dict of those"
_SUPPORTED_ACTIONS = "Discrete, bounded Box"


@dataclass(frozen=True)
class EnvSpec:
    """What the agent needs to know about an environment, in the adapter's format.

    Attributes:
        obs_shapes: per key, ``(H, W, C)`` for uint8 images (after resizing) or ``(V,)`` for
            float32 vectors.
        image_keys: keys of ``obs_shapes`` that are images, in space order.
        vector_keys: keys of ``obs_shapes`` that are vectors, in space order.
        action_dim: ``A``, the size of the agent's action vector.
        discrete: True for one-hot actions (``Discrete``), False for ``[-1, 1]`` vectors.
        action_low: flattened Box lower bounds (continuous only, else None).
        action_high: flattened Box upper bounds (continuous only, else None).
        env_id: the gymnasium id.
    """

    obs_shapes: dict[str, tuple[int, ...]]
    image_keys: tuple[str, ...]
    vector_keys: tuple[str, ...]
    action_dim: int
    discrete: bool
    action_low: tuple[float, ...] | None
    action_high: tuple[float, ...] | None
    env_id: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` inverts it exactly."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvSpec:
        """Rebuild a spec from :meth:`to_dict` output (lists from JSON become tuples)."""

        def as_tuple(values):
            return None if values is None else tuple(float(v) for v in values)

        return cls(
            obs_shapes={k: tuple(int(n) for n in v) for k, v in data["obs_shapes"].items()},
            image_keys=tuple(data["image_keys"]),
            vector_keys=tuple(data["vector_keys"]),
            action_dim=int(data["action_dim"]),
            discrete=bool(data["discrete"]),
            action_low=as_tuple(data["action_low"]),
            action_high=as_tuple(data["action_high"]),
            env_id=str(data["env_id"]),
        )


# --- observations ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ObsField:
    """How one raw observation entry becomes one adapter key."""

    key: str
    source: str | None  # key in a Dict observation; None for a plain Box
    is_image: bool
    shape: tuple[int, ...]  # output shape


def _describe(space: spaces.Space) -> str:
    return " ".join(repr(space).split())  # repr of large Boxes spans lines


def _box_field(
    space: spaces.Space, key: str | None, source: str | None, env_id: str, image_size: int
) -> _ObsField:
    """Classify one Box as an image or a vector (anything else raises :class:`EnvSpecError`)."""
    where = "" if source is None else f" at key {source!r}"
    bad = EnvSpecError(
        f"{env_id}: unsupported observation space {_describe(space)}{where}; "
        f"supported: {_SUPPORTED_OBS}"
    )
    if not isinstance(space, spaces.Box):
        raise bad
    shape = tuple(space.shape)
    if space.dtype == np.uint8 and len(shape) in (2, 3):
        if len(shape) == 2 or 1 <= shape[2] <= 4:
            channels = 1 if len(shape) == 2 else shape[2]
            return _ObsField(key or "image", source, True, (image_size, image_size, channels))
    numeric = np.issubdtype(space.dtype, np.number) or space.dtype == np.bool_
    size = int(np.prod(shape, dtype=np.int64))
    if not numeric or size == 0:
        raise bad
    return _ObsField(key or "vector", source, False, (size,))


def _obs_fields(space: spaces.Space, env_id: str, image_size: int) -> list[_ObsField]:
    if isinstance(space, spaces.Dict):
        return [
            _box_field(sub, str(name), str(name), env_id, image_size) for name, sub in space.items()
        ]
    return [_box_field(space, None, None, env_id, image_size)]


@functools.lru_cache(maxsize=16)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix averaging each output pixel's footprint (area interpolation)."""
    edges = np.arange(n_out + 1, dtype=np.float64) * n_in / n_out
    low, high = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(high, pixel + 1) - np.maximum(low, pixel), 0.0, None)
    return (overlap / (high - low)).astype(np.float32)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 image to ``(size, size, C)`` by area interpolation (pure numpy).

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` uint8.
        size: output height and width.

    Returns:
        ``(size, size, C)`` uint8 (``C = 1`` for a 2-D input).
    """
    if image.ndim == 2:
        image = image[:, :, None]
    H, W, C = image.shape
    if (H, W) == (size, size):
        return np.ascontiguousarray(image, dtype=np.uint8)
    rows = _area_weights(H, size) @ image.reshape(H, W * C).astype(np.float32)  # (size, W·C)
    rows = rows.reshape(size, W, C).transpose(0, 2, 1)  # (size, C, W)
    out = rows @ _area_weights(W, size).T  # (size, C, size)
    out = np.rint(out.transpose(0, 2, 1))  # (size, size, C)
    return np.clip(out, 0, 255).astype(np.uint8)


# --- actions --------------------------------------------------------------------------------------
class _ActionAdapter:
    """Converts between the agent's float32 ``(A,)`` vectors and the env's action space."""

    def __init__(self, space: spaces.Space, env_id: str):
        self.space = space
        if isinstance(space, spaces.Discrete):
            self.discrete = True
            self.dim = int(space.n)
            self.start = int(space.start)
            self.low = self.high = None
            return
        bounded = isinstance(space, spaces.Box) and bool(
            np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))
        )
        if not bounded or space.shape is None or int(np.prod(space.shape)) == 0:
            raise EnvSpecError(
                f"{env_id}: unsupported action space {_describe(space)}; "
                f"supported: {_SUPPORTED_ACTIONS}"
            )
        self.discrete = False
        self.low = space.low.astype(np.float64).reshape(-1)
        self.high = space.high.astype(np.float64).reshape(-1)
        self.dim = self.low.size
        self.span = self.high - self.low

    def to_env(self, action: np.ndarray) -> Any:
        """Agent ``(A,)`` → env action: argmax + start, or clip to [-1, 1] and rescale."""
        if self.discrete:
            return int(np.argmax(action)) + self.start
        unit = np.clip(action.astype(np.float64), -1.0, 1.0)
        value = self.low + (unit + 1.0) * 0.5 * self.span
        if np.issubdtype(self.space.dtype, np.integer):
            value = np.rint(value)
        return value.reshape(self.space.shape).astype(self.space.dtype)

    def from_env(self, value: Any) -> np.ndarray:
        """Env action → agent ``(A,)`` float32: one-hot, or rescaled to [-1, 1]."""
        if self.discrete:
            one_hot = np.zeros(self.dim, np.float32)
            one_hot[int(value) - self.start] = 1.0
            return one_hot
        flat = np.asarray(value, np.float64).reshape(-1)
        safe_span = np.where(self.span > 0, self.span, 1.0)  # a fixed dimension maps to 0
        unit = np.where(self.span > 0, 2.0 * (flat - self.low) / safe_span - 1.0, 0.0)
        return unit.astype(np.float32)


# --- environment ----------------------------------------------------------------------------------
def _render_modes(entry_point: str | Callable) -> list[str] | None:
    """The render modes the env class declares; None when its creator does not say (a factory
    function, as shimmy registers) or cannot be loaded (gymnasium.make reports that)."""
    try:
        creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    except Exception:
        return None
    metadata = getattr(creator, "metadata", None)
    return None if metadata is None else list(metadata.get("render_modes", []))


def _import_registering(module: str, env_id: str) -> bool:
    """Import ``module`` for the envs it registers; False if it is not installed. The process's
    warning filters survive the import (dm_control's sets every DeprecationWarning to "always")."""
    try:
        with warnings.catch_warnings():
            importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.split(".")[0] == exc.name.split(".")[0]:
            return False
        raise EnvSpecError(f"env.id: importing {module!r} for {env_id!r} failed ({exc})") from None
    return True


def gym_spec(env_id: str) -> gymnasium.envs.registration.EnvSpec:
    """The registered spec of ``env_id``, importing the package that registers it if needed.

    Accepts gymnasium's ``module:EnvId`` form (the module is imported first) and plain ids whose
    namespace a package registers on import: ``dm_control/…`` (shimmy), ``ALE/…`` (ale_py), or a
    namespace named like its package.
    """
    module, _, name = env_id.rpartition(":")
    if module and not _import_registering(module, env_id):
        raise EnvSpecError(f"env.id: module {module!r} of {env_id!r} is not installed")
    namespace = name.split("/")[0] if "/" in name else None
    if namespace and namespace not in {s.namespace for s in gymnasium.registry.values()}:
        candidates = dict.fromkeys(
            [NAMESPACE_PACKAGES.get(namespace), namespace, namespace.lower()]
        )
        if not any(_import_registering(m, env_id) for m in candidates if m):
            raise EnvSpecError(
                f"env.id: unknown gymnasium namespace in {env_id!r} (no installed package "
                f"registers {namespace!r}; for dm_control/… install shimmy[dm-control])"
            )
    try:
        return gymnasium.spec(name)
    except gymnasium.error.Error as exc:  # unknown name or version, also after an import
        hint = " ".join(str(exc).split())
        raise EnvSpecError(f"env.id: unknown gymnasium environment {env_id!r} ({hint})") from None


def _make_gym_env(cfg: EnvConfig) -> gymnasium.Env:
    """``gymnasium.make`` with ``render_mode="rgb_array"`` where the env offers it."""
    spec = gym_spec(cfg.id)
    kwargs = dict(cfg.kwargs)
    attempts = [kwargs]  # keyword sets to try in turn
    if "render_mode" not in kwargs:
        modes = _render_modes(spec.entry_point)
        if modes is None:  # undeclared: offer rgb_array, fall back to no rendering
            attempts = [{**kwargs, "render_mode": "rgb_array"}, kwargs]
        elif "rgb_array" in modes:
            attempts = [{**kwargs, "render_mode": "rgb_array"}]
    for i, attempt in enumerate(attempts):
        try:
            return gymnasium.make(spec.id, **attempt)
        except gymnasium.error.DependencyNotInstalled as exc:
            detail = str(exc).splitlines()[0]
            raise EnvSpecError(f"env.id: cannot create {cfg.id!r} ({detail})") from None
        except TypeError as exc:
            if i + 1 == len(attempts):
                raise EnvSpecError(f"env.kwargs: not accepted by {cfg.id!r} ({exc})") from None


class DreamerEnv:
    """One gymnasium environment in the adapter's format, with action repeat and seeding.

    Args:
        cfg: the ``env`` config section.
        seed: seeds the first ``reset()`` and the action-space sampler; later resets take no seed,
            so the whole sequence of episodes follows from this one seed.
    """

    def __init__(self, cfg: EnvConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        self._env = _make_gym_env(cfg)
        try:
            self._obs_fields = _obs_fields(self._env.observation_space, cfg.id, cfg.image_size)
            self._action = _ActionAdapter(self._env.action_space, cfg.id)
        except EnvSpecError:
            self._env.close()
            raise
        shapes = {f.key: f.shape for f in self._obs_fields}
        self.spec = EnvSpec(
            obs_shapes=shapes,
            image_keys=tuple(f.key for f in self._obs_fields if f.is_image),
            vector_keys=tuple(f.key for f in self._obs_fields if not f.is_image),
            action_dim=self._action.dim,
            discrete=self._action.discrete,
            action_low=None if self._action.discrete else tuple(self._action.low.tolist()),
            action_high=None if self._action.discrete else tuple(self._action.high.tolist()),
            env_id=cfg.id,
        )
        self._seeded = False
        self._episode_over = True

    @property
    def gym_env(self) -> gymnasium.Env:
        """The wrapped gymnasium environment."""
        return self._env

    def reset(self) -> dict[str, np.ndarray]:
        """Start an episode; the first call uses ``seed``. Returns the first observation."""
        if self._seeded:
            raw, _ = self._env.reset()
        else:
            raw, _ = seed_env(self._env, self.seed)
            self._seeded = True
        self._episode_over = False
        return self._convert_obs(raw)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool]:
        """Apply ``action`` ``cfg.action_repeat`` times (stopping early when the episode ends).

        Args:
            action: ``(A,)`` float32, one-hot (discrete) or in ``[-1, 1]`` (continuous; values
                outside are clipped).

        Returns:
            ``(obs, reward, terminated, truncated)`` with the rewards of the repeats summed.
        """
        if self._episode_over:
            raise RuntimeError("DreamerEnv.step: the episode is over or not started; call reset()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (self.spec.action_dim,):
            raise ValueError(
                f"action: expected shape ({self.spec.action_dim},), got {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action: not finite {action}")
        env_action = self._action.to_env(action)
        total_reward = 0.0
        for _ in range(self.cfg.action_repeat):
            raw, reward, terminated, truncated, _ = self._env.step(env_action)
            total_reward += float(reward)
            if terminated or truncated:
                break
        self._episode_over = bool(terminated or truncated)
        return self._convert_obs(raw), total_reward, bool(terminated), bool(truncated)

    def random_action(self) -> np.ndarray:
        """A uniformly random action from the seeded action space, in agent format ``(A,)``."""
        return self._action.from_env(self._env.action_space.sample())

    def rng_state(self) -> dict[str, Any]:
        """The env's and the action space's generator states, for resuming a run.

        Covers ``env.np_random`` (resets, stochastic dynamics; a ``Generator`` for gymnasium's
        own envs, a legacy ``RandomState`` for DeepMind Control tasks) and the action sampler; an
        env with generators of its own beyond these is not captured. Plain python values only.
        """
        return {
            "seeded": self._seeded,
            "env": generator_state(self._env.unwrapped.np_random),
            "action_space": generator_state(self._env.action_space.np_random),
        }

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`rng_state`; a seeded state makes the next ``reset()`` take no seed.

        An env whose generator is of no kind :func:`~dreamer.seeding.generator_state` knows
        keeps its own generator: the resumed run continues, not bit-identical (said once)."""
        env_rng = generator_from_state(state["env"])
        if env_rng is None:
            warnings.warn(
                f"{self.cfg.id}: its random generator ({state['env'].get('type')}) cannot be "
                "saved, so a resumed run is not bit-identical to an uninterrupted one",
                stacklevel=2,
            )
        else:
            self._env.unwrapped.np_random = env_rng
        self._env.action_space._np_random = generator_from_state(state["action_space"])
        self._seeded = state["seeded"]

    def vector_bounds(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per vector key, the flattened ``(low, high)`` of its Box (±inf where unbounded)."""
        space = self._env.observation_space
        bounds = {}
        for field in self._obs_fields:
            if not field.is_image:
                box = space if field.source is None else space[field.source]
                bounds[field.key] = (
                    np.asarray(box.low, np.float64).reshape(-1),
                    np.asarray(box.high, np.float64).reshape(-1),
                )
        return bounds

    def render(self) -> np.ndarray | None:
        """The current RGB frame ``(H, W, 3)`` uint8, or None unless render_mode is rgb_array."""
        if self._env.render_mode != "rgb_array":
            return None
        frame = self._env.render()
        if frame is None:
            return None
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        return np.ascontiguousarray(frame[:, :, :3], dtype=np.uint8)

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> DreamerEnv:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _convert_obs(self, raw: Any) -> dict[str, np.ndarray]:
        obs = {}
        for field in self._obs_fields:
            value = raw if field.source is None else raw[field.source]
            if field.is_image:
                obs[field.key] = resize_image(np.asarray(value, dtype=np.uint8), field.shape[0])
            else:
                obs[field.key] = np.asarray(value, dtype=np.float32).reshape(field.shape)
        return obs


def make_env(cfg: EnvConfig, seed: int) -> DreamerEnv:
    """Build one :class:`DreamerEnv` (``cfg.num_envs`` is ignored; see :func:`make_envs`)."""
    return DreamerEnv(cfg, seed)


def env_spec_of(cfg: EnvConfig) -> EnvSpec:
    """Build the environment, read its :class:`EnvSpec` and close it (validates config early)."""
    with DreamerEnv(cfg, seed=0) as env:
        return env.spec
