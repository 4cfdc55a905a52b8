"""Shared fixtures: the tiny ``debug`` configuration and synthetic specs and batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamer.compiled import use_cache_dir
from dreamer.config import Config, config_from_dict
from dreamer.envs import EnvSpec
from dreamer.replay import Batch

from .helpers import KERNEL_CACHE

torch.set_num_threads(2)
use_cache_dir(KERNEL_CACHE)  # every compile of the session; the e2e repository copy starts from it

TINY = {
    "compile": False,  # compiling costs seconds per graph; tests/test_compiled.py covers it
    "model": {"size": "debug"},
    "warmup": {"steps": 64},
    "behavior": {"horizon": 4},
    "training": {
        "env_steps": 200,
        "batch_size": 4,
        "batch_length": 8,
        "train_ratio": 32.0,
        "lr_warmup": 0,
        "lr": 1.0e-3,
        "log_every": 50,
        "checkpoint_every": 100,
    },
    "evaluate": {"episodes": 2},
}


def tiny(**overrides) -> Config:
    """The debug config, with dotted-key overrides: ``tiny(**{"env.id": "CartPole-v1"})``."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config_from_dict(data)


@pytest.fixture
def tiny_config() -> Config:
    return tiny()


def make_spec(
    vector: int | None = 3,
    image: tuple[int, int, int] | None = None,
    action_dim: int = 2,
    discrete: bool = False,
) -> EnvSpec:
    shapes, image_keys, vector_keys = {}, (), ()
    if vector:
        shapes["vector"], vector_keys = (vector,), ("vector",)
    if image:
        shapes["image"], image_keys = image, ("image",)
    return EnvSpec(
        obs_shapes=shapes,
        image_keys=image_keys,
        vector_keys=vector_keys,
        action_dim=action_dim,
        discrete=discrete,
        action_low=None if discrete else (-1.0,) * action_dim,
        action_high=None if discrete else (1.0,) * action_dim,
        env_id="synthetic",
    )


def make_batch(
    spec: EnvSpec, B: int = 4, T: int = 8, seed: int = 0, terminal_at: int | None = None
) -> Batch:
    """A random but fixed batch; ``terminal_at`` marks a terminal step then a new episode."""
    g = torch.Generator().manual_seed(seed)
    obs = {}
    for key in spec.vector_keys:
        obs[key] = torch.randn(B, T, *spec.obs_shapes[key], generator=g)
    for key in spec.image_keys:
        obs[key] = torch.randint(
            0, 256, (B, T, *spec.obs_shapes[key]), generator=g, dtype=torch.uint8
        )
    if spec.discrete:
        index = torch.randint(0, spec.action_dim, (B, T), generator=g)
        action = torch.nn.functional.one_hot(index, spec.action_dim).float()
    else:
        action = torch.rand(B, T, spec.action_dim, generator=g) * 2 - 1
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_last = torch.zeros(B, T, dtype=torch.bool)
    is_terminal = torch.zeros(B, T, dtype=torch.bool)
    if terminal_at is not None:
        is_last[:, terminal_at] = is_terminal[:, terminal_at] = True
        is_first[:, terminal_at + 1] = True
    action[is_first] = 0
    reward = torch.randn(B, T, generator=g)
    return Batch(obs, action, reward, is_first, is_last, is_terminal)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
