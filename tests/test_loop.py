"""The interaction loop: random warm-up, train ratio, hooks, and exact resume."""

import gymnasium
import numpy as np
import pytest
import torch

from dreamer.agent import Agent
from dreamer.checkpoint import load_checkpoint, save_checkpoint
from dreamer.env_pool import LocalEnvs, make_envs
from dreamer.envs import DreamerEnv
from dreamer.loop import AgentPolicy, Collector, Hooks, Trainer, collect_random
from dreamer.replay import ReplayBuffer
from dreamer.seeding import seed_everything

from .conftest import tiny


def test_collect_random_stores_episodes_with_the_time_convention():
    cfg = tiny()
    env = make_envs(cfg.env, 0)
    replay = ReplayBuffer(env.spec, 1000)
    collector, records = collect_random(env, replay, 450, seed=0)
    assert [r.length for r in records] == [200, 200]  # Pendulum truncates at 200 steps
    data = replay.arrays()
    assert len(replay) == 450 + 3  # one reset step per episode started
    assert np.flatnonzero(data["is_first"]).tolist() == [0, 201, 402]
    assert np.flatnonzero(data["is_last"]).tolist() == [200, 401]
    assert not data["is_terminal"].any()  # truncation is not termination
    assert np.all(data["action"][data["is_first"]] == 0)
    assert records[0].return_ == pytest.approx(data["reward"][1:201].sum(), rel=1e-5)


@pytest.mark.parametrize("num_envs", [1, 2])
def test_collection_stores_the_policy_latent_of_each_observation_it_acts_on(num_envs):
    """Replay context as official: every step the agent acted on carries the posterior state the
    policy computed for it (also while still in a pending run of several envs); the newest
    observation, not acted on yet, has none."""
    cfg = tiny()
    envs = LocalEnvs([DreamerEnv(cfg.env, seed) for seed in range(num_envs)])
    replay = ReplayBuffer(envs.spec, 1000)
    m = cfg.model
    replay.attach_latents(m.deter, m.stoch, m.classes)
    policy = AgentPolicy(Agent(envs.spec, cfg), num_envs)
    collector = Collector(envs, replay, seed=0, fragment=16)  # runs of 16: some steps pending
    acted_on = []  # per policy call: the latents of the N observations it acted on
    for _ in range(40):
        collector.step(policy)
        acted_on.append(policy.latents())
    collector.flush()
    streams = replay.arrays()["stream"]
    stored = replay.read_latents(np.arange(len(replay)))  # no wrap: physical = insertion order
    for i in range(num_envs):
        rows = np.flatnonzero(streams == i)  # the reset step, then 40 steps
        assert len(rows) == 41 and stored.valid[rows].tolist() == [True] * 40 + [False]
        expected = np.stack([latents.deter[i] for latents in acted_on])
        np.testing.assert_array_equal(stored.deter[rows[:40]], expected)
        np.testing.assert_array_equal(
            stored.stoch[rows[:40]], np.stack([latents.stoch[i] for latents in acted_on])
        )


def _trainer(cfg, env_steps=None):
    seed_everything(cfg.seed)
    warm_env = make_envs(cfg.env, cfg.seed)
    replay = ReplayBuffer(warm_env.spec, 5000)
    collector, records = collect_random(warm_env, replay, cfg.warmup.steps, cfg.seed)
    agent = Agent(warm_env.spec, cfg)
    env = make_envs(cfg.env, cfg.seed + 1)
    return Trainer(
        agent,
        env,
        replay,
        cfg.training,
        cfg.seed,
        cfg.env.action_repeat,
        collector.env_steps,
        len(records),
    )


def test_trainer_trains_at_train_ratio_and_calls_hooks():
    cfg = tiny(**{"training.env_steps": 264, "training.train_ratio": 64.0})  # 2 updates/step
    trainer = _trainer(cfg)
    rows, episodes, checkpoints = [], [], []
    counters = trainer.run(
        Hooks(episodes.append, rows.append, lambda t: checkpoints.append(t.counters.env_steps))
    )
    assert counters.env_steps == 264
    assert trainer.agent.gradient_steps == 2 * (264 - 64)
    # log_every 50 from step 64, and the updates since the last row at the end
    assert [r["env_step"] for r in rows] == [100, 150, 200, 250, 264]
    assert all(np.isfinite(r["loss/world_model"]) for r in rows)
    assert checkpoints[-1] == 264
    # replay context: the updates stored a latent for most replayed steps (none for the newest)
    valid = trainer.replay.read_latents(np.arange(len(trainer.replay))).valid
    assert 0.5 < valid.mean() < 1.0


def test_train_ratio_counts_agent_steps_not_frames():
    """Official meaning: replayed steps per action. With action repeat 2, 200 frames after the
    warm-up are 100 actions, owed 100 · 64 / (4 · 8) = 200 updates (400 if frames were counted)."""
    cfg = tiny(**{"training.env_steps": 264, "training.train_ratio": 64.0, "env.action_repeat": 2})
    trainer = _trainer(cfg)
    counters = trainer.run()
    assert counters.env_steps == 264
    assert trainer.agent.gradient_steps == 2 * (264 - 64) // 2


def test_resumed_run_continues_exactly(tmp_path):
    """Two parts with a checkpoint in between equal one uninterrupted run, parameter for
    parameter (checkpoints are taken at episode ends)."""
    cfg = tiny(
        **{
            "training.env_steps": 520,
            "training.checkpoint_every": 100,
            "training.train_ratio": 16.0,
        }
    )
    whole = _trainer(cfg)
    whole.run()

    first = _trainer(cfg)
    saved = {}

    def on_checkpoint(trainer):
        if "state" not in saved:
            saved["replay"] = trainer.replay.arrays()
            save_checkpoint(tmp_path / "state.pt", {"trainer": trainer.training_state()})
            saved["state"] = True

    first.run(Hooks(on_checkpoint=on_checkpoint, should_stop=lambda t: "state" in saved))
    assert first.counters.env_steps < 520

    # A new process: fresh objects, then the saved state.
    second = _trainer(
        tiny(
            **{
                "training.env_steps": 520,
                "training.checkpoint_every": 100,
                "training.train_ratio": 16.0,
                "seed": 0,
            }
        )
    )
    second.replay = ReplayBuffer(second.envs.spec, 5000)
    m = second.agent.cfg.model
    second.replay.attach_latents(m.deter, m.stoch, m.classes)  # as Trainer does with its replay
    second.replay.extend(saved["replay"])
    second.collector.replay = second.replay
    second.load_training_state(load_checkpoint(tmp_path / "state.pt")["trainer"])
    second.run()
    assert second.counters.env_steps == whole.counters.env_steps
    assert second.agent.gradient_steps == whole.agent.gradient_steps
    for (name, a), b in zip(whole.agent.state_dict().items(), second.agent.state_dict().values()):
        assert torch.equal(a, b), name
    assert np.array_equal(whole.replay.arrays()["reward"], second.replay.arrays()["reward"])


class _PoisonedPendulum(gymnasium.Wrapper):
    """Pendulum whose ``what`` ("reward" or "observation") turns NaN at its 30th step."""

    def __init__(self, env, what):
        super().__init__(env)
        self.what, self.steps = what, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps == 30:
            if self.what == "reward":
                reward = float("nan")
            else:
                obs = np.array([obs[0], np.nan, obs[2]], np.float32)
        return obs, reward, terminated, truncated, info


@pytest.mark.parametrize(
    ("what", "named"), [("reward", "reward is nan"), ("observation", "observation 'vector' is")]
)
def test_a_non_finite_step_is_refused_before_the_replay(what, named):
    """A NaN from the env stops collection (warm-up or training alike) with one line naming the
    env, the key and the env step; the replay keeps only the finite steps before it."""
    from dreamer.errors import EnvDataError

    gymnasium.register(
        f"Poisoned{what}/Pendulum-v0",
        lambda **kw: _PoisonedPendulum(gymnasium.make("Pendulum-v1", **kw), what),
    )
    cfg = tiny(**{"env.id": f"Poisoned{what}/Pendulum-v0"})
    envs = make_envs(cfg.env, cfg.seed)
    replay = ReplayBuffer(envs.spec, 1000)
    with pytest.raises(EnvDataError) as error:
        collect_random(envs, replay, 100, cfg.seed)
    message = str(error.value)
    assert message.startswith(f"Poisoned{what}/Pendulum-v0 (env 0): {named}")
    assert "at env step 29;" in message and "\n" not in message
    assert replay.total_steps == 30  # the reset and the 29 finite steps
    assert np.isfinite(replay.arrays()["reward"]).all()
