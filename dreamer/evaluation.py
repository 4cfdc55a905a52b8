"""Evaluation: seeded episodes with deterministic (mode) actions, frames for a video, and the same
episodes with a uniform random policy as the baseline the agent must beat."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .agent import Agent
from .config import Config
from .envs import DreamerEnv, LocalEnvs
from .loop import AgentPolicy, Collector, EpisodeRecord, Policy, random_policy
from .replay import ReplayBuffer

EVAL_SEED_OFFSET = 10_000  # evaluation episodes never reuse a training seed


def evaluate(agent: Agent, cfg: Config, episodes: int, record_video: bool = False,
             max_video_frames: int = 1000) -> tuple[list[EpisodeRecord], np.ndarray | None]:
    """Run ``episodes`` episodes with the agent's mode actions, each in a fresh env seeded
    ``seed + 10000 + i``.

    Returns the episode records and, if ``record_video``, the rendered frames of the first
    episode ``(N, H, W, 3)`` uint8 (None when the env cannot render).
    """
    agent.eval()
    try:
        return run_episodes(cfg, episodes, lambda envs: AgentPolicy(agent, deterministic=True),
                            record_video, max_video_frames)
    finally:
        agent.train()


def evaluate_random(cfg: Config, episodes: int) -> list[EpisodeRecord]:
    """The episodes of :func:`evaluate` (same env seeds) with uniform random actions drawn from
    each env's seeded action space: the baseline, reproducible and on the same tracks/starts."""
    records, _ = run_episodes(cfg, episodes, random_policy)
    return records


def run_episodes(cfg: Config, episodes: int, make_policy: Callable[[LocalEnvs], Policy],
                 record_video: bool = False, max_video_frames: int = 1000
                 ) -> tuple[list[EpisodeRecord], np.ndarray | None]:
    """``episodes`` seeded episodes, each with a fresh ``make_policy(envs)``; see :func:`evaluate`."""
    records, frames = [], None
    for index in range(episodes):
        seed = cfg.seed + EVAL_SEED_OFFSET + index
        env = DreamerEnv(cfg.env, seed)
        envs = LocalEnvs([env])
        # A small replay only to reuse the Collector's bookkeeping; evaluation stores nothing.
        replay = ReplayBuffer(env.spec, capacity=64)
        collector = Collector(envs, replay, seed, cfg.env.action_repeat)
        policy = make_policy(envs)
        video = [] if record_video and index == 0 else None
        record = None
        while record is None:
            ended = collector.step(policy)
            record = ended[0] if ended else None
            if video is not None and len(video) < max_video_frames:
                frame = env.render()
                if frame is not None:
                    video.append(frame)
        records.append(replace(record, episode=index))
        if video:
            frames = np.stack(video)
        env.close()
    return records, frames
