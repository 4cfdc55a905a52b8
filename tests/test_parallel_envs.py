"""Several environments at once: local and subprocess pools, fragments in one replay ring."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

from dreamer.config import EnvConfig
from dreamer.env_pool import LocalEnvs, SubprocessEnvs, make_envs
from dreamer.loop import Collector, Hooks, collect_random, random_policy
from dreamer.replay import ReplayBuffer
from dreamer.run import train

from .conftest import tiny


class CounterEnv(gymnasium.Env):
    """obs = [marker, t]: the seed of the env's first reset and the step within the episode.

    Episode lengths are drawn from the env's own RNG (5 to 12 steps), so envs drift apart and
    their episodes end at different times."""

    metadata = {"render_modes": []}

    def __init__(self):  # spaces per instance: each env seeds its own
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.marker = float(seed)
        self.t, self.length = 0, int(self.np_random.integers(5, 13))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(self.t), False, self.t >= self.length, {}

    def _obs(self):
        return np.array([self.marker, self.t], np.float32)


if "tests/Counter-v0" not in gymnasium.registry:
    gymnasium.register(id="tests/Counter-v0", entry_point=CounterEnv, disable_env_checker=True)


def _counter(num_envs: int) -> EnvConfig:
    return EnvConfig(id="tests/Counter-v0", num_envs=num_envs)


def _segments(data: dict) -> list[np.ndarray]:
    """Indices of each run that starts at an is_first step."""
    starts = np.flatnonzero(data["is_first"]).tolist() + [len(data["is_first"])]
    return [np.arange(a, b) for a, b in zip(starts[:-1], starts[1:])]


@pytest.mark.parametrize("pool", ["local", "subprocess"])
def test_windows_never_mix_envs_and_episodes_stay_in_order(pool):
    cfg = _counter(3)
    envs = (
        LocalEnvs([make_envs(_counter(1), 10 + i).envs[0] for i in range(3)])
        if pool == "local"
        else make_envs(cfg, 10)
    )
    assert isinstance(envs, LocalEnvs if pool == "local" else SubprocessEnvs)
    replay = ReplayBuffer(envs.spec, 2000)
    with envs:
        collector = Collector(envs, replay, seed=10, fragment=4)
        policy, records = random_policy(envs), []
        while collector.env_steps < 300:
            records.extend(collector.step(policy))
        collector.flush()
    data = replay.arrays()
    obs, stream = data["obs/vector"], data["stream"]
    started = collector.episodes + int((~collector.needs_reset).sum())  # one reset step each
    assert len(data["is_first"]) == 300 + started
    # The ring holds runs of one env's steps (at most `fragment` long), tagged with its stream.
    for run in np.split(np.arange(len(stream)), np.flatnonzero(np.diff(stream)) + 1):
        assert len(run) <= 4 and np.all(obs[run, 0] == 10 + stream[run[0]])
    # Each env's stream, read in order, is its whole history, unaltered: t counts up within an
    # episode and restarts only at a real reset; no step is turned into a reset, no reward lost.
    for i in range(3):
        mine = np.flatnonzero(stream == i)
        t, first = obs[mine, 1], data["is_first"][mine]
        assert np.array_equal(first, t == 0)
        assert np.all(np.diff(t)[~first[1:]] == 1)
    assert np.array_equal(data["reward"], obs[:, 1])  # reward at step t is t (0 at resets)
    assert not data["action"][data["is_first"]].any()
    # Every finished episode is in the replay once, whole: lengths and returns match.
    ends = np.flatnonzero(data["is_last"])
    assert len(ends) == len(records) == collector.episodes
    assert sorted(int(obs[i, 1]) for i in ends) == sorted(r.length for r in records)
    assert sorted(r.return_ for r in records) == sorted(
        float(obs[i, 1] * (obs[i, 1] + 1) / 2) for i in ends
    )
    # Sampled windows stay inside one stream.
    batch = replay.sample(200, 3, np.random.default_rng(0))
    marker = batch.obs["vector"][..., 0]
    assert torch.all(marker == marker[:, :1])


def test_subprocess_pool_matches_local_pool_step_for_step():
    """Same seeds, same random actions: the subprocess pool produces the local pool's data."""
    arrays = []
    for envs in (
        LocalEnvs([make_envs(_counter(1), 3 + i).envs[0] for i in range(2)]),
        make_envs(_counter(2), 3),
    ):
        with envs:
            replay = ReplayBuffer(envs.spec, 1000)
            collect_random(envs, replay, 120, seed=3)
            arrays.append(replay.arrays())
            states = envs.rng_state()
            envs.set_rng_state(states)  # round trip through the workers
            assert envs.rng_state() == states
    for key in arrays[0]:
        assert np.array_equal(arrays[0][key], arrays[1][key]), key


def test_train_with_two_subprocess_envs_counts_steps_and_updates():
    cfg = tiny(
        **{
            "env.id": "CartPole-v1",
            "env.num_envs": 2,
            "training.env_steps": 160,
            "training.train_ratio": 64.0,
        }
    )  # 2 updates per env step
    episodes = []
    agent, counters = train(cfg, Hooks(on_episode=episodes.append))
    assert counters.env_steps == 160
    assert agent.gradient_steps == 2 * (160 - 64)
    assert all(e.length > 0 for e in episodes)


def test_env_state_count_must_match():
    with make_envs(_counter(1), 0) as envs:
        with pytest.raises(ValueError, match="2 saved, env.num_envs is 1"):
            envs.set_rng_state([{}, {}])
