"""The interaction loop: collect with a policy, store in replay, train at ``train_ratio``.

This is the user's roadmap end to end: warm-up with a random policy (``collect_random``), then the
``Trainer`` alternates one step of every env (GRU h → posterior z → actor → env.step → replay) with
the gradient steps those steps are owed (``train_ratio / (B·T)`` per agent step, i.e. per action,
whatever ``action_repeat``: the official meaning),
and calls hooks to log metrics, save checkpoints and stop. The envs are ``env.num_envs``
:class:`~dreamer.envs.DreamerEnv`, in this process or in subprocesses
(``dreamer.env_pool.make_envs``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np

from .agent import Agent
from .config import EnvConfig, TrainingConfig
from .env_pool import LocalEnvs
from .envs import DreamerEnv
from .errors import DivergenceError, EnvDataError
from .records import EpisodeRecord
from .replay import Latents, ReplayBuffer
from .seeding import restore_rng_state, rng_state

Policy = Callable[[dict, np.ndarray], np.ndarray]  # obs {key: (N, ...)}, is_first (N,) → (N, A)


class Collector:
    """Steps ``N`` envs with a policy and appends every transition to the replay buffer.

    Stored convention (see ``replay.py``): at reset ``(o_0, a=0, r=0, is_first)``; after each step
    ``(o_{t+1}, a_t, r_{t+1}, is_last, is_terminal)``, tagged with the env's index as its stream.
    The replay is one ring of contiguous windows, so with several envs each env's steps wait in
    their own run and enter the replay together, unaltered, every ``fragment`` steps and on
    :meth:`flush`; sampled windows stay inside one stream (one stream per env, as the official
    code), so a window never mixes envs. The cost: no window spans two runs of the same env.
    With one env every step goes to the replay at once.

    With an :class:`AgentPolicy` and a replay that keeps latents (replay context), each step also
    gets the posterior state the policy computed for its observation (official: the policy's
    carry is stored with every step), so a window can start from it before any update replayed
    the step. Random steps (the warm-up) have none until an update writes one.
    """

    def __init__(
        self, envs, replay: ReplayBuffer, seed: int, action_repeat: int = 1, fragment: int = 256
    ):
        self.envs, self.replay, self.seed = envs, replay, seed
        self.action_repeat, self.fragment = action_repeat, fragment
        self.env_steps = 0
        self.episodes = 0
        N = envs.num_envs
        self.obs: dict[str, np.ndarray] | None = None  # {key: (N, ...)} current observations
        self.needs_reset = np.ones(N, bool)  # the env's episode ended (or never started)
        self.is_first = np.ones(N, bool)
        self._return, self._length = np.zeros(N), np.zeros(N, np.int64)
        self._pending: list[list[tuple]] = [[] for _ in range(N)]  # per env, not yet in replay
        self._pending_latents: list[list[Latents | None]] = [[] for _ in range(N)]
        self._last_index = np.zeros(N, np.int64)  # replay index of each env's newest added step

    @property
    def started(self) -> bool:
        return self.obs is not None

    def _store(self, index: int, step: tuple) -> None:
        """``step = (obs, action, reward, is_first, is_last, is_terminal)`` of env ``index``."""
        if self.envs.num_envs == 1:
            self._last_index[0] = self.replay.add(*step)
            return
        self._pending[index].append(step)
        self._pending_latents[index].append(None)
        if len(self._pending[index]) >= self.fragment:
            self.flush(index)

    def flush(self, index: int | None = None) -> None:
        """Move the pending steps of env ``index`` (default: all envs) into the replay."""
        for i in range(self.envs.num_envs) if index is None else [index]:
            steps, self._pending[i] = self._pending[i], []
            latents, self._pending_latents[i] = self._pending_latents[i], []
            for step, latent in zip(steps, latents):
                self._last_index[i] = self.replay.add(*step, stream=i)
                if latent is not None:
                    self.replay.write_latents(self._last_index[i : i + 1], latent)

    def _store_latents(self, latents: Latents) -> None:
        """Attach the policy's latents ``(N, ...)`` to each env's newest step (the observation
        it just acted on), in the replay or still pending."""
        for i in range(self.envs.num_envs):
            row = Latents(*(x[i : i + 1] for x in latents))  # (1, ...)
            if self._pending[i]:
                self._pending_latents[i][-1] = row
            else:
                self.replay.write_latents(self._last_index[i : i + 1], row)

    def _check_finite(self, obs: dict[str, np.ndarray], reward: np.ndarray | None, rows) -> None:
        """Refuse a NaN or Inf observation (vector keys) or reward of the envs ``rows`` before it
        reaches the replay, naming the env, the key and the env step."""
        spec = self.envs.spec
        for key in spec.vector_keys:
            bad = [i for i in rows if not np.isfinite(obs[key][i]).all()]
            if bad:
                self._refuse(bad[0], f"observation {key!r} is {obs[key][bad[0]].tolist()}")
        if reward is not None:
            bad = [i for i in rows if not np.isfinite(reward[i])]
            if bad:
                self._refuse(bad[0], f"reward is {reward[bad[0]]}")

    def _refuse(self, index: int, what: str) -> None:
        raise EnvDataError(
            f"{self.envs.spec.env_id} (env {index}): {what} at env step {self.env_steps:,}; "
            "not stored (the replay and the last checkpoint hold only finite data)"
        )

    def _reset_ended(self) -> None:
        mask = self.needs_reset
        fresh = self.envs.reset(mask)
        self._check_finite(fresh, None, np.flatnonzero(mask))
        self.obs = fresh if self.obs is None else {k: v.copy() for k, v in self.obs.items()}
        zeros = np.zeros(self.envs.spec.action_dim, np.float32)
        for i in np.flatnonzero(mask):
            row = {k: v[i].copy() for k, v in fresh.items()}
            for k in self.obs:
                self.obs[k][i] = row[k]
            self.is_first[i] = True
            self._return[i], self._length[i] = 0.0, 0
            self._store(i, (row, zeros, 0.0, True, False, False))
        self.needs_reset[:] = False

    def step(self, policy: Policy) -> list[EpisodeRecord]:
        """One step of every env; returns the records of the episodes that just ended."""
        if self.needs_reset.any():
            self._reset_ended()
        actions = np.asarray(policy(self.obs, self.is_first), np.float32)  # (N, A)
        if isinstance(policy, AgentPolicy) and self.replay.has_latents:
            self._store_latents(policy.latents())
        obs, reward, terminated, truncated = self.envs.step(actions)
        self._check_finite(obs, reward, range(self.envs.num_envs))
        records = []
        for i in range(self.envs.num_envs):
            last = bool(terminated[i] or truncated[i])
            row = {k: v[i] for k, v in obs.items()}
            self._store(i, (row, actions[i], float(reward[i]), False, last, bool(terminated[i])))
            self._return[i] += float(reward[i])
            self._length[i] += 1
            self.env_steps += self.action_repeat
            if last:
                records.append(
                    EpisodeRecord(
                        self.episodes,
                        self.seed,
                        self.env_steps,
                        int(self._length[i]),
                        float(self._return[i]),
                    )
                )
                self.episodes += 1
                self.needs_reset[i] = True
        self.obs = obs
        self.is_first[:] = False
        return records


def random_policy(envs) -> Policy:
    """Uniform random actions from each env's (seeded) action space."""
    return lambda obs, is_first: envs.random_actions()


class AgentPolicy:
    """The agent acting in ``num_envs`` envs: carries the GRU states and last actions."""

    def __init__(self, agent: Agent, num_envs: int = 1, deterministic: bool = False):
        self.agent, self.deterministic = agent, deterministic
        self.state = agent.initial_state(num_envs)

    def __call__(self, obs: dict, is_first: np.ndarray) -> np.ndarray:
        """``obs {key: (N, ...)}``, ``is_first (N,)`` → actions ``(N, A)``."""
        action, self.state = self.agent.act(obs, is_first, self.state, self.deterministic)
        return action

    def latents(self) -> Latents:
        """The posterior state of the observations just acted on, in the replay's format:
        deter ``(N, D)`` float16, stoch ``(N, S)`` int16 class indices, valid ``(N,)``."""
        deter, stoch = self.state.latent
        return Latents(
            deter.cpu().numpy().astype(np.float16),
            stoch.argmax(-1).cpu().numpy().astype(np.int16),
            np.ones(len(deter), bool),
        )


def collect_random(
    envs, replay: ReplayBuffer, steps: int, seed: int, action_repeat: int = 1
) -> tuple[Collector, list[EpisodeRecord]]:
    """Warm-up: ``steps`` env steps with a random policy. Returns the collector and its episodes."""
    collector = Collector(envs, replay, seed, action_repeat)
    policy, episodes = random_policy(envs), []
    while collector.env_steps < steps:
        episodes.extend(collector.step(policy))
    collector.flush()
    return collector, episodes


@contextmanager
def seeded_episode(
    env_cfg: EnvConfig, seed: int, capacity: int
) -> Iterator[tuple[DreamerEnv, Collector, ReplayBuffer]]:
    """One env seeded ``seed`` in this process and a :class:`Collector` writing into a replay of
    ``capacity`` steps: the set-up of one evaluation episode (``evaluation.run_episodes``) and
    of the open-loop report (``report.open_loop_frames``). The env is closed on exit."""
    env = DreamerEnv(env_cfg, seed)
    try:
        replay = ReplayBuffer(env.spec, capacity=capacity)
        yield env, Collector(LocalEnvs([env]), replay, seed, env_cfg.action_repeat), replay
    finally:
        env.close()


@dataclass
class Hooks:
    """Callbacks of the training loop (all optional)."""

    on_episode: Callable[[EpisodeRecord], None] | None = None
    on_metrics: Callable[[dict], None] | None = None  # one row every log_every env steps
    on_checkpoint: Callable[[Trainer], None] | None = None
    should_stop: Callable[[Trainer], bool] | None = None  # checked after every env step


@dataclass
class Counters:
    env_steps: int = 0
    episodes: int = 0
    updates_owed: float = 0.0
    next_log: int = 0
    next_checkpoint: int = 0
    wall_seconds: float = 0.0  # accumulated over resumed parts
    skipped_updates: int = 0  # updates skipped for a non-finite loss or gradient, in all
    skipped_in_row: int = 0  # ... since the last applied update


class Trainer:
    """Act / store / train until ``training.env_steps``, with hooks for logging and checkpoints."""

    def __init__(
        self,
        agent: Agent,
        envs,
        replay: ReplayBuffer,
        training: TrainingConfig,
        seed: int,
        action_repeat: int,
        start_env_steps: int = 0,
        start_episodes: int = 0,
    ):
        """Args: the ``training`` section; ``seed`` (the collector's episode seeds, and
        ``seed + 1`` for replay sampling); the env's ``action_repeat`` (env steps count frames,
        the train ratio counts actions); where the warm-up left the counters."""
        self.agent, self.envs, self.replay = agent, envs, replay
        self.training, self.action_repeat = training, action_repeat
        self.rng = np.random.default_rng(seed + 1)  # replay sampling
        self.collector = Collector(envs, replay, seed, action_repeat)
        self.collector.env_steps, self.collector.episodes = start_env_steps, start_episodes
        self.policy = AgentPolicy(agent, envs.num_envs)
        t = training
        if t.replay_context:
            m = agent.cfg.model  # the stored latents have the agent's widths
            replay.attach_latents(m.deter, m.stoch, m.classes)
        # Log and checkpoint at multiples of their intervals (comparable across runs).
        self.counters = Counters(
            env_steps=start_env_steps,
            episodes=start_episodes,
            next_log=(start_env_steps // t.log_every + 1) * t.log_every,
            next_checkpoint=(start_env_steps // t.checkpoint_every + 1) * t.checkpoint_every,
        )
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0
        self._last_log = (time.perf_counter(), agent.gradient_steps)

    def compile(self) -> float:
        """torch.compile the agent's update and its policy step for these envs now
        (``Agent.compile``), so no compilation stalls the loop. Returns the seconds."""
        seconds = self.agent.compile(self.envs.num_envs)
        self._last_log = (time.perf_counter(), self.agent.gradient_steps)  # not in updates/s
        return seconds

    def train_owed(self, agent_steps: int) -> None:
        """Run the gradient steps ``agent_steps`` new actions are owed (train_ratio / (B·T) each).

        An agent step is one action of one env, ``action_repeat`` frames: the official
        ``train_ratio`` counts replayed steps per agent step (``env_steps`` here count frames)."""
        t = self.training
        context = int(t.replay_context)  # windows carry one extra first step: the context
        self.counters.updates_owed += t.updates_per_agent_step * agent_steps
        while self.counters.updates_owed >= 1.0:
            index = self.replay.sample_index(t.batch_size, context + t.batch_length, self.rng)
            batch = self.replay.gather(index, pin_memory=self.agent.device.type == "cuda")
            latents = self.replay.read_latents(index[:, 0]) if context else None
            update = self.agent.train_step(batch, latents)
            self.counters.updates_owed -= 1.0
            if update.skipped:
                self._skipped(update.skipped)
                continue
            self.counters.skipped_in_row = 0
            if context:  # refresh the stored latents of the trained steps
                self.replay.write_latents(index[:, context:], update.posterior)
            for k, v in update.metrics.items():
                self._sums[k] += v
            self._count += 1

    def _skipped(self, what: str) -> None:
        """Count a skipped update; stop after ``training.max_skipped_updates`` in a row."""
        c = self.counters
        c.skipped_updates += 1
        c.skipped_in_row += 1
        if c.skipped_in_row >= self.training.max_skipped_updates:
            raise DivergenceError(
                f"training diverged: {c.skipped_in_row} updates in a row had a non-finite loss "
                f"or gradient (training.max_skipped_updates), the last after update "
                f"{self.agent.gradient_steps} at env step {self.collector.env_steps:,}: {what}"
            )

    def run(self, hooks: Hooks | None = None) -> Counters:
        hooks = hooks or Hooks()
        t, c = self.training, self.counters
        started = time.perf_counter() - c.wall_seconds
        while c.env_steps < t.env_steps:
            records = self.collector.step(self.policy)
            self.train_owed((self.collector.env_steps - c.env_steps) // self.action_repeat)
            c.env_steps, c.episodes = self.collector.env_steps, self.collector.episodes
            c.wall_seconds = time.perf_counter() - started
            if hooks.on_episode:
                for record in records:
                    hooks.on_episode(record)
            done = c.env_steps >= t.env_steps
            # A row every log_every env steps, and one for the updates since the last at the end;
            # none where no update ran since the last row (log_every below the update interval).
            due = c.env_steps >= c.next_log
            if due:
                c.next_log += t.log_every
            if (due or done) and self._count and hooks.on_metrics:
                hooks.on_metrics(self._metrics_row())
            # Checkpoint at the first episode end after each interval, so a resumed run restarts
            # exactly where the uninterrupted one would (a fresh reset from the saved env RNG).
            # With several envs the others are mid-episode: their steps are flushed to the replay
            # and a resumed run starts them on new episodes (not bit-identical, see Collector).
            if (records and c.env_steps >= c.next_checkpoint) or done:
                while c.next_checkpoint <= c.env_steps:
                    c.next_checkpoint += t.checkpoint_every
                self.collector.flush()
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
            skipped_updates=self.counters.skipped_updates,
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
            "replay_latents": self.replay.latents_state(),
            "sampler_rng": self.rng.bit_generator.state,
            "global_rng": rng_state(),
            "env_rng": self.envs.rng_state(),
            "collector": {
                "env_steps": self.collector.env_steps,
                "episodes": self.collector.episodes,
            },
            # the metrics averaged since the last row: a resumed run's next row is the same
            "metric_sums": {"sums": dict(self._sums), "count": self._count},
        }

    def load_training_state(self, state: dict) -> None:
        if self.collector.started:
            raise RuntimeError("resume only into a fresh trainer")
        self.agent.load_training_state(state["agent"])
        self.replay.load_latents_state(state.get("replay_latents", {}))
        self.counters = Counters(**state["counters"])
        self.rng.bit_generator.state = state["sampler_rng"]
        restore_rng_state(state["global_rng"])
        self.envs.set_rng_state(state["env_rng"])
        self.collector.env_steps = state["collector"]["env_steps"]
        self.collector.episodes = state["collector"]["episodes"]
        self._sums = defaultdict(float, state["metric_sums"]["sums"])
        self._count = state["metric_sums"]["count"]
        self._last_log = (time.perf_counter(), self.agent.gradient_steps)
