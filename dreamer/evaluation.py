"""Evaluation: seeded episodes with deterministic (mode) actions, and frames for a video."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .agent import Agent
from .config import Config
from .envs import DreamerEnv, LocalEnvs
from .loop import AgentPolicy, Collector, EpisodeRecord
from .replay import ReplayBuffer

EVAL_SEED_OFFSET = 10_000  # evaluation episodes never reuse a training seed


def evaluate(agent: Agent, cfg: Config, episodes: int, record_video: bool = False,
             max_video_frames: int = 1000) -> tuple[list[EpisodeRecord], np.ndarray | None]:
    """Run ``episodes`` episodes, each in a fresh env seeded ``seed + 10000 + i``.

    Returns the episode records and, if ``record_video``, the rendered frames of the first
    episode ``(N, H, W, 3)`` uint8 (None when the env cannot render).
    """
    agent.eval()
    records, frames = [], None
    for index in range(episodes):
        seed = cfg.seed + EVAL_SEED_OFFSET + index
        env = DreamerEnv(cfg.env, seed)
        # A small replay only to reuse the Collector's bookkeeping; evaluation stores nothing.
        replay = ReplayBuffer(env.spec, capacity=64)
        collector = Collector(LocalEnvs([env]), replay, seed, cfg.env.action_repeat)
        policy = AgentPolicy(agent, deterministic=True)
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
    agent.train()
    return records, frames
