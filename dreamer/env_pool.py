"""Several environments stepped together, behind one interface: :func:`make_envs`.

:class:`LocalEnvs` steps ``N`` :class:`~dreamer.envs.DreamerEnv` in this process (one env: a
subprocess would only add a copy of every observation); :class:`SubprocessEnvs` runs them in worker
processes (gymnasium ``AsyncVectorEnv``), so slow simulators keep up with training. Both give
batched observations ``{key: (N, ...)}``, ``step(actions (N, A))``, ``reset(mask (N,))`` of the
envs whose episode ended, and per-env RNG states for resuming.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from .config import EnvConfig
from .envs import DreamerEnv, EnvSpec, env_spec_of


class LocalEnvs:
    """``N`` :class:`DreamerEnv` in this process, stepped one after another.

    The collection interface (shared with :class:`SubprocessEnvs`): batched observations
    ``{key: (N, ...)}``, ``step(actions (N, A))``, ``reset(mask (N,))`` of the envs whose episode
    ended, and per-env RNG states for resuming. Used for one env, where a subprocess would only
    add a copy of every observation.
    """

    def __init__(self, envs: list[DreamerEnv]):
        self.envs = envs
        self.num_envs = len(envs)
        self.spec = envs[0].spec

    def reset(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Reset the envs where ``mask (N,)``; returns ``{key: (N, ...)}`` (other rows: zeros)."""
        rows = [env.reset() if reset else None for env, reset in zip(self.envs, mask)]
        return _stack_rows(rows, self.spec)

    def step(self, actions: np.ndarray):
        """``actions (N, A)`` → obs ``{key: (N, ...)}``, reward, terminated, truncated ``(N,)``."""
        results = [env.step(action) for env, action in zip(self.envs, actions)]
        obs = _stack_rows([r[0] for r in results], self.spec)
        return (
            obs,
            np.array([r[1] for r in results], np.float64),
            np.array([r[2] for r in results]),
            np.array([r[3] for r in results]),
        )

    def random_actions(self) -> np.ndarray:
        return np.stack([env.random_action() for env in self.envs])

    def rng_state(self) -> list[dict[str, Any]]:
        return [env.rng_state() for env in self.envs]

    def set_rng_state(self, states: list[dict[str, Any]]) -> None:
        _check_state_count(states, self.num_envs)
        for env, state in zip(self.envs, states):
            env.set_rng_state(state)

    def vector_bounds(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return self.envs[0].vector_bounds()

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _WorkerEnv(gymnasium.Env):
    """A :class:`DreamerEnv` as a ``gymnasium.Env`` in the adapter's format, run by
    ``AsyncVectorEnv`` in a worker process: conversion, resizing and action repeat happen there."""

    metadata = {"render_modes": []}

    def __init__(self, cfg: EnvConfig, seed: int):
        # One BLAS thread per worker: the image resize is a small matmul, and N workers each
        # spinning a multi-threaded BLAS pool on 2 cores ran 2 envs slower than 1 (79 vs 132/s).
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        self.env = DreamerEnv(cfg, seed)
        self.dreamer_spec = spec = self.env.spec
        self.observation_space = spaces.Dict(
            {
                key: spaces.Box(0, 255, shape, np.uint8)
                if key in spec.image_keys
                else spaces.Box(-np.inf, np.inf, shape, np.float32)
                for key, shape in spec.obs_shapes.items()
            }
        )
        self.action_space = spaces.Box(-np.inf, np.inf, (spec.action_dim,), np.float32)

    def reset(self, *, seed=None, options=None):  # seeding: DreamerEnv's own seed, first reset
        return self.env.reset(), {}

    def step(self, action):
        obs, reward, terminated, truncated = self.env.step(action)
        return obs, reward, terminated, truncated, {}

    def random_action(self) -> np.ndarray:
        return self.env.random_action()

    @property
    def dreamer_rng(self) -> dict[str, Any]:
        return self.env.rng_state()

    @dreamer_rng.setter
    def dreamer_rng(self, state: dict[str, Any]) -> None:
        self.env.set_rng_state(state)

    def vector_bounds(self):
        return self.env.vector_bounds()

    def close(self) -> None:
        self.env.close()


class SubprocessEnvs:
    """``N`` environments in worker processes (gymnasium ``AsyncVectorEnv``, shared memory).

    Env steps run in parallel while this process waits, so slow simulators (CarRacing steps at
    ≈ 150/s per process here) keep up with training. Same interface as :class:`LocalEnvs`; episodes
    are reset explicitly (``AutoresetMode.DISABLED`` with a reset mask), so the collector decides
    when an episode starts, exactly as with local envs.
    """

    def __init__(self, cfg: EnvConfig, seed: int):
        from gymnasium.vector import AsyncVectorEnv, AutoresetMode

        self.num_envs = cfg.num_envs
        # The parent builds one env first: bad ids and spaces fail here with the adapter's error.
        self.spec = env_spec_of(cfg)
        fns = [functools.partial(_WorkerEnv, cfg, seed + index) for index in range(cfg.num_envs)]
        self._vector = AsyncVectorEnv(fns, copy=True, autoreset_mode=AutoresetMode.DISABLED)

    def reset(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        obs, _ = self._vector.reset(options={"reset_mask": np.asarray(mask, np.bool_)})
        return obs

    def step(self, actions: np.ndarray):
        obs, reward, terminated, truncated, _ = self._vector.step(np.asarray(actions, np.float32))
        return obs, np.asarray(reward, np.float64), terminated, truncated

    def random_actions(self) -> np.ndarray:
        return np.stack(self._vector.call("random_action"))

    def rng_state(self) -> list[dict[str, Any]]:
        return list(self._vector.get_attr("dreamer_rng"))

    def set_rng_state(self, states: list[dict[str, Any]]) -> None:
        _check_state_count(states, self.num_envs)
        self._vector.set_attr("dreamer_rng", list(states))

    def vector_bounds(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return self._vector.call("vector_bounds")[0]

    def close(self) -> None:
        self._vector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


EnvPool = LocalEnvs | SubprocessEnvs


def make_envs(cfg: EnvConfig, seed: int) -> EnvPool:
    """``cfg.num_envs`` environments seeded ``seed, seed + 1, ...``: local for one, subprocesses
    (``AsyncVectorEnv``) for more."""
    if cfg.num_envs == 1:
        return LocalEnvs([DreamerEnv(cfg, seed)])
    return SubprocessEnvs(cfg, seed)


def _stack_rows(rows: list[dict[str, np.ndarray] | None], spec: EnvSpec) -> dict[str, np.ndarray]:
    out = {}
    for key, shape in spec.obs_shapes.items():
        dtype = np.uint8 if key in spec.image_keys else np.float32
        out[key] = np.stack([np.zeros(shape, dtype) if row is None else row[key] for row in rows])
    return out


def _check_state_count(states: list, num_envs: int) -> None:
    if len(states) != num_envs:
        raise ValueError(f"env RNG states: {len(states)} saved, env.num_envs is {num_envs}")
