"""Agent: acting, one train step, NaN guard, same-seed determinism, checkpoint round trip."""

import numpy as np
import pytest
import torch

from dreamer.agent import Agent
from dreamer.checkpoint import CheckpointError, load_agent, load_checkpoint, save_agent
from dreamer.config import override
from dreamer.env_pool import make_envs
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
    metrics = agent.train_step(make_batch(spec)).metrics
    metrics = agent.train_step(
        make_batch(spec, seed=1)
    ).metrics  # a second step: optimiser state used
    for key in [
        "loss/reconstruction",
        "loss/reward",
        "loss/continuation",
        "loss/kl_dynamics",
        "loss/kl_representation",
        "loss/actor",
        "loss/critic",
        "grad_norm/world_model",
    ]:
        assert np.isfinite(metrics[key]), key
    assert agent.gradient_steps == 2
    changed = [not torch.equal(a, b) for a, b in zip(before, agent.parameters())]
    assert sum(changed) > len(changed) // 2


def _context_losses(agent, batch, context):
    """World-model loss and posterior of the window after ``batch``'s context step."""
    window = batch.from_step(1)
    state, is_first = agent._context_state(context, window)
    torch.manual_seed(1)  # the same latent samples in every call
    with torch.no_grad():
        loss, _, posterior = agent.world_model.loss(window._replace(is_first=is_first), state)
    return loss, posterior


def test_replay_context_starts_the_window_from_the_stored_latent(tiny_config):
    """Official replay_context 1: the first step of a (1 + T) window is not trained; the filter
    starts from the latent stored for it, unless none is stored or the window starts an episode."""
    torch.manual_seed(0)
    spec = make_spec()
    agent = Agent(spec, tiny_config)
    batch = make_batch(spec, T=9)
    batch = batch._replace(is_first=torch.zeros_like(batch.is_first))  # mid-episode windows
    B, m = 4, tiny_config.model
    empty = agent.empty_context(B)
    stored = empty._replace(
        deter=np.full((B, m.deter), 0.5, np.float16),
        stoch=np.ones((B, m.stoch), np.int16),
        valid=np.ones(B, bool),
    )
    loss_empty, post_empty = _context_losses(agent, batch, empty)
    loss_stored, post_stored = _context_losses(agent, batch, stored)
    assert not torch.allclose(post_empty.deter[:, 0], post_stored.deter[:, 0])
    # no stored latent = the zero state with is_first, as without a context
    loss_none, post_none = _context_losses(
        agent,
        batch._replace(is_first=batch.is_first.clone().index_fill_(1, torch.tensor([1]), True)),
        None,
    )
    assert torch.allclose(post_empty.deter, post_none.deter) and torch.isclose(
        loss_empty, loss_none
    )
    # an episode start at the window's first step ignores the stored latent
    starts = batch._replace(is_first=batch.is_first.clone().index_fill_(1, torch.tensor([1]), True))
    _, post_reset = _context_losses(agent, starts, stored)
    assert torch.allclose(post_reset.deter, post_none.deter)

    update = agent.train_step(batch, stored)
    assert update.posterior.deter.shape == (B, 8, m.deter) and update.posterior.valid.all()
    assert update.posterior.deter.dtype == np.float16 and update.posterior.stoch.shape == (
        B,
        8,
        m.stoch,
    )
    assert np.isfinite(update.metrics["loss/replay_value"])
    assert agent.train_step(make_batch(spec)).posterior is None  # no context, nothing to store


@pytest.mark.parametrize(
    "scale, grad, reaches_encoder",
    [(0.3, True, True), (0.3, False, False), (0.0, True, False)],
    ids=["repval_grad", "critic_only", "off"],
)
def test_replay_value_loss_trains_the_world_model_only_with_repval_grad(
    tiny_config, scale, grad, reaches_encoder
):
    """Official repval_grad: the critic's loss on the replayed posterior features reaches the
    encoder; with ``replay_value_grad: false`` or scale 0 the critic's loss reaches no
    world-model parameter (imagination starts from detached states)."""
    spec = make_spec()
    torch.manual_seed(0)
    cfg = override(
        tiny_config,
        **{"behavior.replay_value_scale": scale, "behavior.replay_value_grad": grad},
    )
    agent = Agent(spec, cfg)
    with torch.no_grad():  # a trained critic: its zero-initialised output passes no gradient
        for param in agent.actor_critic.critic.parameters():
            param.normal_(0.0, 0.1)
    batch = make_batch(spec)
    with agent.autocast():
        _, _, posterior = agent.world_model.loss(batch)
        _, critic_loss, behavior = agent.behavior_losses(batch, posterior)
    assert ("loss/replay_value" in behavior) == bool(scale)
    params = list(agent.world_model.encoder.parameters())
    grads = torch.autograd.grad(critic_loss, params, allow_unused=True)
    encoder_grad = sum(0.0 if g is None else g.abs().sum().item() for g in grads)
    assert (encoder_grad > 0.0) == reaches_encoder


def test_a_non_finite_update_is_skipped_and_named(tiny_config):
    spec = make_spec()
    agent = Agent(spec, tiny_config)
    batch = make_batch(spec)
    nan_batch = batch._replace(reward=torch.full_like(batch.reward, float("nan")))
    before = {k: v.clone() for k, v in agent.training_state()["modules"].items()}
    update = agent.train_step(nan_batch)
    assert update.skipped.startswith("loss/world_model = nan")
    assert update.posterior is None and agent.gradient_steps == 0
    after = agent.training_state()["modules"]
    assert all(torch.equal(before[k], after[k]) for k in before)  # no step, slow critic too
    assert agent.optimizer.steps == 0
    assert agent.nonfinite_parameter() is None
    assert agent.train_step(batch).skipped is None and agent.gradient_steps == 1
    with torch.no_grad():
        next(agent.parameters()).fill_(float("inf"))
    assert agent.nonfinite_parameter() is not None


def _first_losses(seed):
    cfg = tiny(seed=seed)
    seed_everything(cfg.seed)
    env = make_envs(cfg.env, cfg.seed)
    replay = ReplayBuffer(env.spec, 1000)
    collect_random(env, replay, 64, cfg.seed)
    agent = Agent(env.spec, cfg)
    batch = replay.sample(4, 8, np.random.default_rng(cfg.seed))
    return replay.arrays(), agent.train_step(batch).metrics, agent.train_step(batch).metrics


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
