"""The interaction loop: random warm-up, train ratio, hooks, and exact resume."""

import gymnasium
import numpy as np
import pytest
import torch

from dreamer.agent import Agent
from dreamer.checkpoint import load_checkpoint, save_checkpoint
from dreamer.config import override
from dreamer.env_pool import LocalEnvs, make_envs
from dreamer.envs import DreamerEnv
from dreamer.evaluation import evaluate, evaluate_random
from dreamer.loop import AgentPolicy, Collector, Hooks, Trainer, collect_random
from dreamer.replay import ReplayBuffer
from dreamer.run import train
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
    assert records[0].score == pytest.approx(data["reward"][1:201].sum(), rel=1e-5)


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
    return Trainer(agent, env, replay, cfg, collector.env_steps, len(records))


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
    m = second.cfg.model
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


def test_train_in_one_call_on_a_discrete_env():
    rows = []
    agent, counters = train(
        tiny(**{"env.id": "CartPole-v1", "training.env_steps": 150}), Hooks(on_metrics=rows.append)
    )
    assert counters.env_steps == 150 and agent.spec.discrete and agent.gradient_steps > 0
    assert [r["env_step"] for r in rows] == [100, 150]


def test_random_baseline_runs_the_evaluation_episodes_reproducibly():
    cfg = tiny()
    agent = Agent(make_envs(cfg.env, 0).spec, cfg)
    evaluated, _ = evaluate(agent, cfg, 3)
    baseline = evaluate_random(cfg, 3)
    assert [r.seed for r in baseline] == [r.seed for r in evaluated] == [10_000, 10_001, 10_002]
    assert [r.length for r in baseline] == [200, 200, 200]
    scores = [r.score for r in baseline]
    assert scores == [r.score for r in evaluate_random(cfg, 3)]  # seeded action spaces
    assert len(set(scores)) == 3 and scores != [r.score for r in evaluated]


def test_evaluation_takes_the_mode_unless_told_to_sample():
    cfg = tiny()
    agent = Agent(make_envs(cfg.env, 0).spec, cfg)
    mode = [r.score for r in evaluate(agent, cfg, 2)[0]]
    assert mode == [r.score for r in evaluate(agent, cfg, 2)[0]]  # the mode draws nothing
    sampling = override(cfg, **{"evaluate.deterministic": False})
    sampled = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        sampled.append([r.score for r in evaluate(agent, sampling, 2)[0]])
    assert mode not in sampled and sampled[0] != sampled[1]


def test_a_training_run_that_cannot_be_built_closes_its_envs(monkeypatch):
    """The envs come first and may be subprocesses: an error building the rest closes them."""
    import dreamer.run as run_module

    cfg = tiny(**{"env.id": "Pendulum-v1"})
    warmup = run_module.collect_warmup(cfg)
    closed = []

    def make_envs_recorded(*args, **kwargs):
        envs = make_envs(*args, **kwargs)
        close = envs.close
        envs.close = lambda: (closed.append(True), close())
        return envs

    def broken_agent(*args, **kwargs):
        raise RuntimeError("no agent today")

    monkeypatch.setattr(run_module, "make_envs", make_envs_recorded)
    monkeypatch.setattr(run_module, "Agent", broken_agent)
    with pytest.raises(RuntimeError, match="no agent today"):
        run_module.TrainingRun(cfg, warmup, checkpoint=None)
    assert closed == [True]


def test_a_diverging_run_skips_updates_then_stops_naming_the_last_good_checkpoint(tmp_path):
    """After the first checkpoint the learning rate explodes (1e30): the next update drives the
    weights to about 1e30, every later update is non-finite and skipped, and after
    ``max_skipped_updates`` in a row training stops with one line naming the update, the env step
    and the last good checkpoint, which holds finite weights; nothing diverged is saved."""
    from dreamer.checkpoint import CheckpointDir
    from dreamer.errors import DivergenceError
    from dreamer.run import TrainingRun, collect_warmup

    cfg = tiny(**{"training.env_steps": 400, "training.max_skipped_updates": 3})
    run = TrainingRun(cfg, collect_warmup(cfg), tmp_path / "checkpoint")
    saved = {}

    def explode(trainer):
        if not saved:
            saved["weights"] = {k: v.clone() for k, v in trainer.agent.state_dict().items()}
            for group in trainer.agent.optimizer.optimizer.param_groups:
                group["base_lr"] = 1.0e30

    with pytest.raises(DivergenceError) as error:
        run.run(Hooks(on_checkpoint=explode))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("training diverged: 3 updates in a row had a non-finite loss")
    assert f"the last good checkpoint is {tmp_path / 'checkpoint' / 'ckpt-000001'}" in message
    assert run.counters.skipped_updates == 3
    folders = CheckpointDir(tmp_path / "checkpoint")
    assert [p.name for p in folders.entries()] == ["ckpt-000001"]
    state = folders.load_state(folders.latest())["trainer"]["agent"]["modules"]
    assert all(torch.equal(state[k], v) for k, v in saved["weights"].items())
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


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
