"""The open-loop prediction report: how far ahead the world model sees.

The official implementation's report video: the model observes ``context`` real frames of an
episode, then imagines the next ``horizon`` from the recorded actions alone. Real frames, predicted
frames and their difference side by side show what the model has learned of the dynamics.
"""

from __future__ import annotations

import numpy as np
import torch

from .agent import Agent
from .config import Config
from .loop import AgentPolicy, seeded_episode
from .seeding import eval_env_seed

CONTEXT, HORIZON = 5, 45  # observed and imagined frames (the official report's 5 + 45)


def open_loop_frames(
    agent: Agent, cfg: Config, context: int = CONTEXT, horizon: int = HORIZON
) -> np.ndarray | None:
    """Frames ``(T, H, 3·W, 3)`` uint8 of [real | predicted | difference] for the first image key.

    The episode is the first evaluation episode (seed ``seed + 10000``, deterministic actions),
    cut to ``context + horizon`` steps or its end. The difference is ``(predicted − real)/2 +
    128``: grey where the model is right. Returns None when the env has no image observation.
    """
    spec = agent.spec
    if not spec.image_keys:
        return None
    key = spec.image_keys[0]
    steps = context + horizon
    with seeded_episode(cfg.env, eval_env_seed(cfg.seed, 0), capacity=steps) as episode:
        _, collector, replay = episode
        policy = AgentPolicy(agent, deterministic=True)
        agent.eval()
        # The first replay step is the reset observation; stop at the episode's end.
        while replay.total_steps < steps and not collector.step(policy):
            pass
        agent.train()
    arrays = {k: v[:steps] for k, v in replay.arrays().items()}
    T = len(arrays["action"])
    device = agent.device
    obs = {
        k[len("obs/") :]: torch.as_tensor(v[None], device=device)
        for k, v in arrays.items()
        if k.startswith("obs/")
    }
    predicted = agent.world_model.open_loop(
        obs,
        torch.as_tensor(arrays["action"][None], device=device),
        torch.as_tensor(arrays["is_first"][None], device=device),
        min(context, T),
    )
    real = arrays[f"obs/{key}"].astype(np.float32)  # (T, H, W, C)
    model = predicted[key][0].cpu().numpy()
    difference = (model - real) / 2 + 128
    frames = np.concatenate([real, model, difference], axis=2)  # (T, H, 3W, C)
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return frames[..., :3]
