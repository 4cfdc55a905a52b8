"""Evaluation: seeded episodes with the agent (mode actions by default, ``evaluate.deterministic``),
frames for a video, and the same episodes with a uniform random policy as the baseline to beat.

:func:`evaluate_agent` is the whole evaluation of a saved agent in one call (the evaluate stage's
work); :func:`evaluate` and :func:`evaluate_random` are its parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .agent import Agent
from .checkpoint import load_agent
from .config import Config
from .env_pool import LocalEnvs
from .loop import AgentPolicy, Policy, random_policy, seeded_episode
from .records import EpisodeRecord
from .report import open_loop_frames
from .seeding import eval_env_seed, seed_everything


@dataclass
class Evaluation:
    """The evaluation of one agent: its episodes, the random baseline's, and the videos."""

    records: list[EpisodeRecord]
    random_records: list[EpisodeRecord]
    env_steps: int  # the agent's training env steps
    gradient_steps: int
    frames: np.ndarray | None = None  # (N, H, W, 3) uint8: the first episode, rendered
    open_loop: np.ndarray | None = None  # (T, H, 3·W, 3) uint8: see report.open_loop_frames

    def summary(self) -> dict[str, float | int]:
        """``eval/*`` figures: the agent's returns and the random policy's on the same episodes."""
        returns = np.array([r.return_ for r in self.records])
        baseline = np.array([r.return_ for r in self.random_records])
        return {
            "eval/return_mean": float(returns.mean()),
            "eval/return_std": float(returns.std()),
            "eval/return_min": float(returns.min()),
            "eval/return_max": float(returns.max()),
            "eval/length_mean": float(np.mean([r.length for r in self.records])),
            "eval/episodes": len(self.records),
            "eval/env_steps": self.env_steps,
            "eval/gradient_steps": self.gradient_steps,
            "eval/random_return_mean": float(baseline.mean()),
            "eval/random_return_std": float(baseline.std()),
        }


def evaluate_agent(agent_path: str | Path, cfg: Config) -> tuple[Evaluation, dict]:
    """Load the agent saved at ``agent_path`` on ``cfg.device`` (refused when it was trained on
    another env id), seed, run ``evaluate.episodes`` seeded episodes with it and with the random
    policy, and with ``evaluate.video`` render the first one and the open-loop report.

    Returns the evaluation and the agent file's ``extra`` dict.
    """
    agent, extra = load_agent(agent_path, device=cfg.device, env_id=cfg.env.id)
    seed_everything(cfg.seed, cfg.threads)  # after the load, as in mean_return
    episodes, video = cfg.evaluate.episodes, cfg.evaluate.video
    records, frames = evaluate(agent, cfg, episodes, record_video=video)
    return Evaluation(
        records,
        evaluate_random(cfg, episodes),
        int(extra.get("env_steps", 0)),
        agent.gradient_steps,
        frames,
        open_loop_frames(agent, cfg) if video else None,
    ), extra


def mean_return(agent: Agent, cfg: Config) -> float:
    """The agent's mean return on the episodes :func:`evaluate_agent` runs, seeded the same way:
    how another agent is scored on the same episodes (the registry's ``@best``)."""
    seed_everything(cfg.seed, cfg.threads)
    records, _ = evaluate(agent, cfg, cfg.evaluate.episodes)
    return float(np.mean([r.return_ for r in records]))


def evaluate(
    agent: Agent,
    cfg: Config,
    episodes: int,
    record_video: bool = False,
    max_video_frames: int = 1000,
) -> tuple[list[EpisodeRecord], np.ndarray | None]:
    """Run ``episodes`` episodes with the agent, each in a fresh env seeded ``seed + 10000 + i``:
    mode actions from mode latents, or sampled ones as in training (``evaluate.deterministic``).

    Returns the episode records and, if ``record_video``, the rendered frames of the first
    episode ``(N, H, W, 3)`` uint8 (None when the env cannot render).
    """
    agent.eval()
    try:
        return run_episodes(
            cfg,
            episodes,
            lambda envs: AgentPolicy(agent, deterministic=cfg.evaluate.deterministic),
            record_video,
            max_video_frames,
        )
    finally:
        agent.train()


def evaluate_random(cfg: Config, episodes: int) -> list[EpisodeRecord]:
    """The episodes of :func:`evaluate` (same env seeds) with uniform random actions drawn from
    each env's seeded action space: the baseline, reproducible and on the same tracks/starts."""
    records, _ = run_episodes(cfg, episodes, random_policy)
    return records


def run_episodes(
    cfg: Config,
    episodes: int,
    make_policy: Callable[[LocalEnvs], Policy],
    record_video: bool = False,
    max_video_frames: int = 1000,
) -> tuple[list[EpisodeRecord], np.ndarray | None]:
    """``episodes`` seeded episodes, each with a fresh ``make_policy(envs)`` (:func:`evaluate`)."""
    records, frames = [], None
    for index in range(episodes):
        # A small replay only to reuse the Collector's bookkeeping; evaluation stores nothing.
        with seeded_episode(cfg.env, eval_env_seed(cfg.seed, index), capacity=64) as episode:
            env, collector, _ = episode
            policy = make_policy(collector.envs)
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
    return records, frames
