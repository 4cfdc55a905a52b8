"""Seeding of every random number generator a run touches.

Two runs with the same seed must draw the same numbers: python ``random``, numpy's global
generator and torch (CPU and, when present, every CUDA device) through :func:`seed_everything`,
and the environment's reset and action-space sampler through :func:`seed_env`. A resumed run
restores the generators' states with :func:`rng_state` / :func:`restore_rng_state`, and an env's
own generator (whatever its kind) with :func:`generator_state` / :func:`generator_from_state`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

EVAL_SEED_OFFSET = 10_000  # evaluation episodes never reuse a training seed


def train_env_seed(seed: int, num_envs: int) -> int:
    """First seed of the training envs: the warm-up envs use ``seed … seed + N − 1``, training
    continues with new episodes from ``seed + N`` on."""
    return seed + num_envs


def eval_env_seed(seed: int, episode: int) -> int:
    """Seed of evaluation episode ``episode``: far from every training seed."""
    return seed + EVAL_SEED_OFFSET + episode


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and all CUDA devices).

    Every run assembly (``dreamer.run``, ``dreamer.evaluation.evaluate_agent``) starts here.

    Args:
        seed: non-negative integer seed.
        threads: if given, also size torch's CPU thread pool (the ``threads`` param).
    """
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed}")
    if threads is not None:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy's legacy global generator takes 32-bit seeds
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def seed_env(env: Any, seed: int) -> tuple[Any, dict]:
    """Reset a gymnasium environment with ``seed`` and seed its action and observation spaces.

    Later resets must pass no seed, so that the whole episode sequence follows from this one.

    Args:
        env: a ``gymnasium.Env`` (or anything with ``reset(seed=...)`` and seedable spaces).
        seed: non-negative integer seed.

    Returns:
        What ``env.reset(seed=seed)`` returns: ``(observation, info)``.
    """
    env.action_space.seed(seed)
    env.observation_space.seed(seed)
    return env.reset(seed=seed)


def rng_state() -> dict[str, Any]:
    """The states of python ``random``, numpy's global generator and torch (CPU and CUDA).

    Returns:
        Plain python values only (ints, lists, dicts), so the state survives JSON, pickle and
        ``torch.load(weights_only=True)``.
    """
    version, internal, gauss_next = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": {
            "key": numpy_state["state"]["key"].tolist(),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [device_state.tolist() for device_state in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states captured by :func:`rng_state` (CUDA only where available)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np.array(numpy_state["key"], np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]]
        torch.cuda.set_rng_state_all(cuda_states)


# --- one generator object of any kind (an env's ``np_random``, an action space's) ----------------
def generator_state(rng: Any) -> dict[str, Any]:
    """The state of ``rng`` as plain python values (JSON, pickle and ``weights_only`` safe).

    Gymnasium envs keep a ``np.random.Generator`` (any bit generator); DeepMind Control tasks
    (through shimmy) keep a legacy ``np.random.RandomState``. Any other object gives
    ``{"kind": "unsupported"}``: :func:`generator_from_state` then leaves the env's generator as
    it is, and a resumed run of that env is not exact (its caller says so).
    """
    if isinstance(rng, np.random.Generator):
        return {"kind": "generator", "state": _plain(rng.bit_generator.state)}
    if isinstance(rng, np.random.RandomState):
        return {"kind": "random_state", "state": _plain(rng.get_state(legacy=False))}
    return {"kind": "unsupported", "type": type(rng).__qualname__}


def generator_from_state(state: dict[str, Any]) -> Any:
    """A new generator in :func:`generator_state`'s ``state``; None for an unsupported kind."""
    kind = state.get("kind")
    if kind not in ("generator", "random_state"):
        return None
    inner = _from_plain(state["state"])
    bit_generator = getattr(np.random, inner["bit_generator"])()
    bit_generator.state = inner
    if kind == "generator":
        return np.random.Generator(bit_generator)
    return np.random.RandomState(bit_generator)


def _plain(value: Any) -> Any:
    """numpy arrays and scalars inside a bit generator's state dict → lists and python numbers
    (an array becomes ``{"ndarray": [...], "dtype": "uint32"}`` so it can be rebuilt)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_plain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"ndarray", "dtype"}:
            return np.array(value["ndarray"], dtype=value["dtype"])
        return {k: _from_plain(v) for k, v in value.items()}
    return value
