"""The interaction loop: collect with a policy, store in replay, train at ``train_ratio``.

This is the user's roadmap end to end: warm-up with a random policy (``collect_random``), then the
``Trainer`` alternates one env step (GRU h → posterior z → actor → env.step → replay) with the
gradient steps that step is owed (``train_ratio / (B·T)`` per env step, official meaning), and calls
hooks to log metrics, save checkpoints and stop.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .agent import Agent
from .config import Config
from .envs import DreamerEnv
from .replay import ReplayBuffer
from .seeding import restore_rng_state, rng_state, seed_everything

Policy = Callable[[dict, bool], np.ndarray]
TRAIN_ENV_SEED_OFFSET = 1  # the warm-up env uses `seed`; training continues with new episodes


@dataclass
class EpisodeRecord:
    """One finished episode (a row of the episodes table)."""

    episode: int
    seed: int
    env_step: int  # env steps (frames, action repeat included) when the episode ended
    length: int
    score: float

    def row(self) -> dict:
        row = asdict(self)
        row["return"] = row.pop("score")
        return row


class Collector:
    """Steps one env with a policy and appends every transition to the replay buffer.

    Stored convention (see ``replay.py``): at reset ``(o_0, a=0, r=0, is_first)``; after each step
    ``(o_{t+1}, a_t, r_{t+1}, is_last, is_terminal)``.
    """

    def __init__(self, env, replay: ReplayBuffer, seed: int, action_repeat: int = 1):
        self.env, self.replay, self.seed = env, replay, seed
        self.action_repeat = action_repeat
        self.env_steps = 0
        self.episodes = 0
        self.obs: dict | None = None  # None: the next step starts a new episode
        self.is_first = True
        self._score, self._length = 0.0, 0

    def _reset(self) -> None:
        self.obs = self.env.reset()
        self.is_first = True
        self._score, self._length = 0.0, 0
        zeros = np.zeros(self.env.spec.action_dim, np.float32)
        self.replay.add(self.obs, zeros, 0.0, True, False, False)

    def step(self, policy: Policy) -> EpisodeRecord | None:
        """One env step; returns the episode's record if it just ended."""
        if self.obs is None:
            self._reset()
        action = np.asarray(policy(self.obs, self.is_first), np.float32)
        obs, reward, terminated, truncated = self.env.step(action)
        last = terminated or truncated
        self.replay.add(obs, action, float(reward), False, last, terminated)
        self.env_steps += self.action_repeat
        self._score += float(reward)
        self._length += 1
        self.obs, self.is_first = obs, False
        if not last:
            return None
        record = EpisodeRecord(self.episodes, self.seed, self.env_steps, self._length, self._score)
        self.episodes += 1
        self.obs = None
        return record


def random_policy(env) -> Policy:
    """Uniform random actions from the env's (seeded) action space."""
    return lambda obs, is_first: env.random_action()


class AgentPolicy:
    """The agent acting in one env: carries the GRU state and last action between steps."""

    def __init__(self, agent: Agent, deterministic: bool = False):
        self.agent, self.deterministic = agent, deterministic
        self.state = agent.initial_state(1)

    def __call__(self, obs: dict, is_first: bool) -> np.ndarray:
        batched = {k: v[None] for k, v in obs.items()}
        action, self.state = self.agent.act(batched, np.array([is_first]), self.state,
                                            self.deterministic)
        return action[0]


def collect_random(env, replay: ReplayBuffer, steps: int, seed: int,
                   action_repeat: int = 1) -> tuple[Collector, list[EpisodeRecord]]:
    """Warm-up: ``steps`` env steps with a random policy. Returns the collector and its episodes."""
    collector = Collector(env, replay, seed, action_repeat)
    policy, episodes = random_policy(env), []
    while collector.env_steps < steps:
        record = collector.step(policy)
        if record is not None:
            episodes.append(record)
    return collector, episodes


@dataclass
class Hooks:
    """Callbacks of the training loop (all optional)."""

    on_episode: Callable[[EpisodeRecord], None] | None = None
    on_metrics: Callable[[dict], None] | None = None  # one row every log_every env steps
    on_checkpoint: Callable[["Trainer"], None] | None = None
    should_stop: Callable[["Trainer"], bool] | None = None  # checked after every env step


@dataclass
class Counters:
    env_steps: int = 0
    episodes: int = 0
    updates_owed: float = 0.0
    next_log: int = 0
    next_checkpoint: int = 0
    wall_seconds: float = 0.0  # accumulated over resumed parts


class Trainer:
    """Act / store / train until ``training.env_steps``, with hooks for logging and checkpoints."""

    def __init__(self, agent: Agent, env, replay: ReplayBuffer, cfg: Config,
                 start_env_steps: int = 0, start_episodes: int = 0):
        self.agent, self.env, self.replay, self.cfg = agent, env, replay, cfg
        self.rng = np.random.default_rng(cfg.seed + 1)  # replay sampling
        self.collector = Collector(env, replay, cfg.seed, cfg.env.action_repeat)
        self.collector.env_steps, self.collector.episodes = start_env_steps, start_episodes
        self.policy = AgentPolicy(agent)
        t = cfg.training
        # Log and checkpoint at multiples of their intervals (comparable across runs).
        self.counters = Counters(
            env_steps=start_env_steps, episodes=start_episodes,
            next_log=(start_env_steps // t.log_every + 1) * t.log_every,
            next_checkpoint=(start_env_steps // t.checkpoint_every + 1) * t.checkpoint_every)
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0
        self._last_log = (time.perf_counter(), agent.gradient_steps)

    def train_owed(self) -> None:
        """Run the gradient steps this env step is owed (train_ratio / (B·T) per env step)."""
        t = self.cfg.training
        self.counters.updates_owed += t.updates_per_env_step * self.cfg.env.action_repeat
        while self.counters.updates_owed >= 1.0:
            batch = self.replay.sample(t.batch_size, t.batch_length, self.rng)
            metrics = self.agent.train_step(batch)
            for k, v in metrics.items():
                self._sums[k] += v
            self._count += 1
            self.counters.updates_owed -= 1.0

    def run(self, hooks: Hooks | None = None) -> Counters:
        hooks = hooks or Hooks()
        t, c = self.cfg.training, self.counters
        started = time.perf_counter() - c.wall_seconds
        while c.env_steps < t.env_steps:
            record = self.collector.step(self.policy)
            c.env_steps, c.episodes = self.collector.env_steps, self.collector.episodes
            self.train_owed()
            c.wall_seconds = time.perf_counter() - started
            if record is not None and hooks.on_episode:
                hooks.on_episode(record)
            if c.env_steps >= c.next_log:
                c.next_log += t.log_every
                if hooks.on_metrics:
                    hooks.on_metrics(self._metrics_row())
            # Checkpoint at the first episode end after each interval, so a resumed run restarts
            # exactly where the uninterrupted one would (a fresh reset from the saved env RNG).
            done = c.env_steps >= t.env_steps
            if (record is not None and c.env_steps >= c.next_checkpoint) or done:
                while c.next_checkpoint <= c.env_steps:
                    c.next_checkpoint += t.checkpoint_every
                if hooks.on_checkpoint:
                    hooks.on_checkpoint(self)
            if hooks.should_stop and hooks.should_stop(self):
                break
        return c

    def _metrics_row(self) -> dict:
        now, steps = time.perf_counter(), self.agent.gradient_steps
        last_time, last_steps = self._last_log
        row = {k: v / self._count for k, v in self._sums.items()} if self._count else {}
        row.update(
            gradient_step=steps,
            env_step=self.counters.env_steps,
            wall_seconds=self.counters.wall_seconds,
            updates_per_second=(steps - last_steps) / max(now - last_time, 1e-9),
        )
        self._sums.clear()
        self._count = 0
        self._last_log = (now, steps)
        return row

    # --- resume ------------------------------------------------------------------------------
    def training_state(self) -> dict:
        """Everything but the replay buffer (saved beside it) that a resume needs."""
        return {
            "agent": self.agent.training_state(),
            "counters": asdict(self.counters),
            "replay_steps": self.replay.total_steps,
            "sampler_rng": self.rng.bit_generator.state,
            "global_rng": rng_state(),
            "env_rng": self.env.rng_state(),
            "collector": {"env_steps": self.collector.env_steps,
                          "episodes": self.collector.episodes},
        }

    def load_training_state(self, state: dict) -> None:
        if self.collector.obs is not None:
            raise RuntimeError("resume only into a fresh trainer")
        self.agent.load_training_state(state["agent"])
        self.counters = Counters(**state["counters"])
        self.rng.bit_generator.state = state["sampler_rng"]
        restore_rng_state(state["global_rng"])
        self.env.set_rng_state(state["env_rng"])
        self.collector.env_steps = state["collector"]["env_steps"]
        self.collector.episodes = state["collector"]["episodes"]
        self._last_log = (time.perf_counter(), self.agent.gradient_steps)


def train(cfg: Config, hooks: Hooks | None = None) -> tuple[Agent, Counters]:
    """The whole loop in one call, in memory: seed, random warm-up, then :class:`Trainer`.

    The same steps as the ``warmup`` and ``train`` stages without their files, for notebooks and
    scripts: ``agent, counters = train(load_config("params.yaml"))``.
    """
    seed_everything(cfg.seed)
    with DreamerEnv(cfg.env, cfg.seed) as warmup_env:
        replay = ReplayBuffer(warmup_env.spec, cfg.training.replay_capacity)
        collector, _ = collect_random(warmup_env, replay, cfg.warmup.steps, cfg.seed,
                                      cfg.env.action_repeat)
    with DreamerEnv(cfg.env, cfg.seed + TRAIN_ENV_SEED_OFFSET) as env:
        agent = Agent(env.spec, cfg)
        trainer = Trainer(agent, env, replay, cfg, start_env_steps=collector.env_steps,
                          start_episodes=collector.episodes)
        counters = trainer.run(hooks)
    return agent, counters
