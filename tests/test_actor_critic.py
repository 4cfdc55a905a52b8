import pytest
import torch

from dreamer.actor_critic import (
    ActorCritic,
    ReturnNormalizer,
    lambda_return,
    replay_lambda_return,
)
from dreamer.distributions import BoundedNormal
from dreamer.world_model import WorldModel

from .conftest import make_spec


def test_lambda_return_matches_a_hand_worked_example():
    # H = 3; index 0 of reward/continue is unused; gamma = lambda = 0.5.
    reward = torch.tensor([[9.0, 1.0, 2.0, 3.0]])
    continues = torch.tensor([[9.0, 1.0, 1.0, 0.0]])
    value = torch.tensor([[9.0, 10.0, 20.0, 30.0]])
    # R2 = 3 + 0.5·0·(…) = 3;  R1 = 2 + 0.5·1·(0.5·20 + 0.5·3) = 7.75
    # R0 = 1 + 0.5·1·(0.5·10 + 0.5·7.75) = 5.4375
    returns = lambda_return(reward, continues, value, gamma=0.5, lam=0.5)
    assert torch.allclose(returns, torch.tensor([[5.4375, 7.75, 3.0]]))


def test_lambda_one_is_discounted_reward_sum_plus_bootstrap():
    reward = torch.tensor([[0.0, 1.0, 1.0]])
    ones = torch.ones(1, 3)
    value = torch.tensor([[0.0, 0.0, 4.0]])
    returns = lambda_return(reward, ones, value, gamma=0.9, lam=1.0)
    assert torch.allclose(returns[:, 0], torch.tensor([1 + 0.9 * (1 + 0.9 * 4)]))


def test_replay_lambda_return_matches_hand_worked_examples():
    """Official repl_loss returns: real rewards, bootstrap from the imagined returns ``boot``
    with weight 1 − λ at every step, fully where the episode was truncated, not at all past a
    terminal step. γ = λ = 0.5."""
    reward = torch.tensor([[9.0, 1.0, 2.0, 3.0]])
    boot = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    no = torch.zeros(1, 4, dtype=torch.bool)
    at2 = torch.tensor([[False, False, True, False]])
    # R3 = 40; R2 = 3 + .5·40 = 23; R1 = 2 + .5(.5·30 + .5·23) = 15.25; R0 = 1 + .5(10 + 7.625)
    returns = replay_lambda_return(reward, no, no, boot, gamma=0.5, lam=0.5)
    assert torch.allclose(returns, torch.tensor([[9.8125, 15.25, 23.0]]))
    # truncated at step 2: R1 = 2 + .5·30 = 17 (no λ-continuation past the end)
    returns = replay_lambda_return(reward, at2, no, boot, gamma=0.5, lam=0.5)
    assert torch.allclose(returns[:, :2], torch.tensor([[10.25, 17.0]]))
    # terminal at step 2: R1 = 2, R0 = 1 + .5(.5·20 + .5·2) = 6.5
    returns = replay_lambda_return(reward, at2, at2, boot, gamma=0.5, lam=0.5)
    assert torch.allclose(returns[:, :2], torch.tensor([[6.5, 2.0]]))


def test_return_normalizer_starts_at_zero_without_debiasing():
    """Official retnorm: EMAs from 0, no bias correction, so the first batch moves them by the
    rate only (the first scale is max(1, 0.5 · 90) = 45 here, not the first batch's 90)."""
    norm = ReturnNormalizer(rate=0.5, low=0.05, high=0.95)
    norm.update(torch.linspace(0, 100, 1001))
    assert norm.low.item() == pytest.approx(2.5) and norm.high.item() == pytest.approx(47.5)
    assert norm.scale().item() == pytest.approx(45.0)
    norm.update(torch.linspace(0, 0, 10))
    assert norm.low.item() == pytest.approx(1.25) and norm.high.item() == pytest.approx(23.75)
    slow = ReturnNormalizer(0.01, 0.05, 0.95)
    slow.update(torch.linspace(0, 100, 1001))
    assert slow.scale().item() == 1.0  # max(1, 0.01 · 90): returns stay unscaled at first


@pytest.mark.parametrize("discrete", [True, False])
def test_actor_outputs_and_imagination_shapes(tiny_config, discrete):
    torch.manual_seed(0)
    spec = make_spec(action_dim=3, discrete=discrete)
    wm = WorldModel(spec, tiny_config.model, tiny_config.world_model)
    ac = ActorCritic(tiny_config.model, tiny_config.behavior, 3, discrete)
    start = wm.rssm.initial(6, "cpu")
    fed = []  # the actions the dynamics receive
    step = wm.rssm.imagine_step
    wm.rssm.imagine_step = lambda state, action: fed.append(action) or step(state, action)
    imagined = ac.imagine(wm, start)
    H = tiny_config.behavior.horizon
    assert imagined.features.shape == (6, H + 1, tiny_config.model.feature_dim)
    assert imagined.actions.shape == (6, H, 3) and len(fed) == H
    if discrete:
        assert torch.equal(imagined.actions.sum(-1), torch.ones(6, H))
    else:
        # The rollout keeps the raw samples (for unbiased log-probs); the dynamics get them
        # clipped to [-1, 1], as the env does.
        assert imagined.actions.abs().max() > 1.0
        assert torch.stack(fed).abs().max() <= 1.0
        assert torch.equal(torch.stack(fed, 1), imagined.actions.clamp(-1, 1))
    actor_loss, critic_loss, metrics, start_return = ac.loss(wm, start, torch.ones(6))
    assert actor_loss.shape == () and critic_loss.shape == () and start_return.shape == (6,)
    ac.zero_grad()
    actor_loss.backward(inputs=list(ac.actor.parameters()))
    assert ac.actor[-1].weight.grad.abs().sum() > 0
    assert "behavior/return_scale" in metrics


def test_dynamics_backprop_option_reaches_the_actor(tiny_config):
    from dreamer.config import override

    cfg = override(tiny_config, **{"behavior.actor_gradient": "dynamics"})
    torch.manual_seed(0)
    spec = make_spec(action_dim=2)
    wm = WorldModel(spec, cfg.model, cfg.world_model)
    ac = ActorCritic(cfg.model, cfg.behavior, 2, discrete=False)
    actor_loss, _, _, _ = ac.loss(wm, wm.rssm.initial(4, "cpu"), torch.ones(4))
    actor_loss.backward(inputs=list(ac.actor.parameters()))
    assert ac.actor[-1].weight.grad.abs().sum() > 0


def test_slow_critic_tracks_critic_by_ema(tiny_config):
    ac = ActorCritic(tiny_config.model, tiny_config.behavior, 2, discrete=False)
    with torch.no_grad():
        for p in ac.critic.parameters():
            p.fill_(1.0)
        for p in ac.slow_critic.parameters():
            p.fill_(0.0)
    ac.update_slow_critic()
    rate = tiny_config.behavior.slow_critic_rate
    assert all(torch.allclose(p, torch.full_like(p, rate)) for p in ac.slow_critic.parameters())


def test_score_of_raw_samples_has_no_std_bias():
    """REINFORCE with a constant advantage must not move the std on average: the score of the
    raw samples has zero mean; that of clipped samples would push the std up."""
    torch.manual_seed(0)
    raw_std = torch.zeros(200_000, 1, requires_grad=True)
    dist = BoundedNormal(torch.zeros(200_000, 1), raw_std, min_std=0.1, max_std=1.0)
    sample = dist.sample().detach()
    (raw_grad,) = torch.autograd.grad(dist.log_prob(sample).mean(), raw_std, retain_graph=True)
    (clipped_grad,) = torch.autograd.grad(dist.log_prob(sample.clamp(-1, 1)).mean(), raw_std)
    assert abs(raw_grad.sum().item()) < 0.005
    assert clipped_grad.sum().item() < -0.02


def test_discrete_actor_has_no_unimix(tiny_config):
    """Official: the categorical policy is plain softmax; only the latents mix in 1% uniform."""
    actor_critic = ActorCritic(tiny_config.model, tiny_config.behavior, action_dim=4, discrete=True)
    dist = actor_critic.distribution(torch.tensor([[30.0, 0.0, 0.0, 0.0]]))
    assert dist.log_probs.exp()[0, 1:].max().item() < 1e-12  # with unimix 0.01: 0.0025
