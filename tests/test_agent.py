"""Agent: acting, one train step, NaN guard, same-seed determinism, checkpoint round trip."""

import numpy as np
import pytest
import torch

from dreamer.agent import Agent, NonFiniteLossError
from dreamer.checkpoint import CheckpointError, load_agent, load_checkpoint, save_agent
from dreamer.config import override
from dreamer.envs import make_envs
from dreamer.loop import collect_random
from dreamer.replay import ReplayBuffer
from dreamer.seeding import seed_everything

from .conftest import make_batch, make_spec, tiny


@pytest.mark.parametrize("discrete", [True, False])
def test_act_returns_agent_format_actions(tiny_config, discrete):
    spec = make_spec(vector=3, image=(16, 16, 3), action_dim=3, discrete=discrete)
    agent = Agent(spec, tiny_config)
    state = agent.initial_state(2)
    obs = {"vector": np.zeros((2, 3), np.float32), "image": np.zeros((2, 16, 16, 3), np.uint8)}
    action, state = agent.act(obs, np.array([True, True]), state)
    assert action.shape == (2, 3)
    if discrete:
        assert np.array_equal(action.sum(-1), [1, 1])
    else:
        assert np.abs(action).max() <= 1
    mode, _ = agent.act(obs, np.array([False, False]), state, deterministic=True)
    assert mode.shape == (2, 3)


@pytest.mark.parametrize("actor_gradient", ["reinforce", "dynamics"])
def test_train_step_returns_flat_metrics_and_updates(tiny_config, actor_gradient):
    torch.manual_seed(0)
    spec = make_spec()
    agent = Agent(spec, override(tiny_config, **{"behavior.actor_gradient": actor_gradient}))
    before = [p.detach().clone() for p in agent.parameters()]
    metrics = agent.train_step(make_batch(spec))
    metrics = agent.train_step(make_batch(spec, seed=1))  # a second step: optimiser state used
    for key in ["loss/reconstruction", "loss/reward", "loss/continuation", "loss/kl_dynamics",
                "loss/kl_representation", "loss/actor", "loss/critic", "grad_norm/world_model"]:
        assert np.isfinite(metrics[key]), key
    assert agent.gradient_steps == 2
    changed = [not torch.equal(a, b) for a, b in zip(before, agent.parameters())]
    assert sum(changed) > len(changed) // 2


def test_non_finite_loss_stops_with_the_loss_named(tiny_config):
    spec = make_spec()
    agent = Agent(spec, tiny_config)
    batch = make_batch(spec)
    batch = batch._replace(reward=torch.full_like(batch.reward, float("nan")))
    before = [p.detach().clone() for p in agent.parameters()]
    with pytest.raises(NonFiniteLossError, match="loss/world_model"):
        agent.train_step(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.parameters()))  # no update


def _first_losses(seed):
    cfg = tiny(seed=seed)
    seed_everything(cfg.seed)
    env = make_envs(cfg.env, cfg.seed)
    replay = ReplayBuffer(env.spec, 1000)
    collect_random(env, replay, 64, cfg.seed)
    agent = Agent(env.spec, cfg)
    batch = replay.sample(4, 8, np.random.default_rng(cfg.seed))
    return replay.arrays(), agent.train_step(batch), agent.train_step(batch)


def test_same_seed_gives_identical_warmup_data_and_losses():
    data_a, first_a, second_a = _first_losses(7)
    data_b, first_b, second_b = _first_losses(7)
    assert data_a.keys() == data_b.keys()
    assert all(np.array_equal(data_a[k], data_b[k]) for k in data_a)  # byte-identical
    assert first_a == first_b and second_a == second_b
    data_c, first_c, _ = _first_losses(8)
    assert not np.array_equal(data_a["reward"], data_c["reward"])


def test_agent_file_round_trip_and_corruption(tmp_path, tiny_config):
    spec = make_spec(action_dim=1)
    agent = Agent(spec, tiny_config)
    agent.train_step(make_batch(spec))
    path = tmp_path / "agent.pt"
    save_agent(path, agent, extra={"env_steps": 123})
    loaded, extra = load_agent(path)
    assert extra == {"env_steps": 123} and loaded.gradient_steps == 1
    for a, b in zip(agent.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="agent.pt: corrupt or unreadable checkpoint"):
        load_agent(path)
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
