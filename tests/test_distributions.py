import math

import pytest
import torch

from dreamer.distributions import (
    BoundedNormal,
    OneHotCategorical,
    TwoHot,
    categorical_kl,
    straight_through_sample,
    symexp,
    symexp_bins,
    symlog,
    two_hot,
    unimix_logits,
)


def test_symlog_symexp_round_trip_and_values():
    x = torch.tensor([-1e4, -3.0, -1.0, 0.0, 0.5, 7.0, 1e6])
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-5)
    assert symlog(torch.tensor(math.e - 1)).item() == pytest.approx(1.0)
    assert symlog(torch.tensor(-(math.e - 1))).item() == pytest.approx(-1.0)


def test_two_hot_encoding_weights_neighbouring_bins():
    bins = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    encoded = two_hot(torch.tensor([0.25, -2.0, 5.0]), bins)
    assert torch.allclose(encoded[0], torch.tensor([0, 0, 0.75, 0.25, 0]))
    assert torch.allclose(encoded[1], torch.tensor([1.0, 0, 0, 0, 0]))
    assert torch.allclose(encoded[2], torch.tensor([0, 0, 0, 0, 1.0]))  # clipped to the range
    assert torch.allclose((encoded * bins).sum(-1), torch.tensor([0.25, -2.0, 2.0]))


def test_two_hot_bins_are_symexp_spaced_and_symmetric():
    bins = symexp_bins(255)
    assert bins.shape == (255,) and bins[127].item() == 0.0
    assert torch.equal(bins, -bins.flip(0))
    assert torch.allclose(symlog(bins), torch.linspace(-20, 20, 255), atol=1e-4)
    assert symexp_bins(4).tolist() == pytest.approx(
        [-4.85165e8, -22025.47, 22025.47, 4.85165e8], rel=1e-4
    )


def test_two_hot_round_trip_through_a_perfect_prediction():
    values = torch.tensor([-300.0, -1.5, 0.0, 0.01, 42.0, 1000.0])
    weights = two_hot(values, symexp_bins(255))
    dist = TwoHot(torch.log(weights.clamp(min=1e-30)))
    assert torch.allclose(dist.mean(), values, rtol=1e-4, atol=1e-4)


def test_two_hot_mean_of_a_mixture_is_taken_in_raw_space():
    """Half the mass on −100, half on −1000 predicts −550 (paper v1's symlog-space mean: −317)."""
    bins = symexp_bins(255)
    weights = 0.5 * two_hot(torch.tensor(-100.0), bins) + 0.5 * two_hot(torch.tensor(-1000.0), bins)
    assert TwoHot(torch.log(weights.clamp(min=1e-30))).mean().item() == pytest.approx(
        -550.0, rel=1e-4
    )


def test_two_hot_loss_is_minimal_at_the_target():
    logits = torch.zeros(255, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.1)
    for _ in range(300):
        optimiser.zero_grad()
        TwoHot(logits).loss(torch.tensor(-12.5)).backward()
        optimiser.step()
    assert TwoHot(logits).mean().item() == pytest.approx(-12.5, rel=0.02)


def test_zero_logits_twohot_predicts_zero():
    assert TwoHot(torch.zeros(3, 255)).mean().abs().max().item() < 1e-5


def test_unimix_keeps_one_percent_everywhere():
    logits = torch.tensor([[100.0, -100.0, -100.0, -100.0]])
    probs = unimix_logits(logits, 0.01).exp()
    assert probs.min().item() == pytest.approx(0.01 / 4, rel=1e-4)
    assert probs.sum().item() == pytest.approx(1.0)


def test_straight_through_sample_is_one_hot_with_probability_gradient():
    logits = torch.randn(5, 3, 4, requires_grad=True)
    sample = straight_through_sample(torch.log_softmax(logits, -1))
    assert torch.allclose(sample.detach().sum(-1), torch.ones(5, 3))
    assert torch.allclose(sample.detach(), sample.detach().round(), atol=1e-6)
    (sample * torch.arange(4.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_categorical_kl_zero_for_equal_and_sums_groups():
    log_p = torch.log_softmax(torch.randn(2, 32, 4), -1)
    assert torch.allclose(categorical_kl(log_p, log_p), torch.zeros(2), atol=1e-6)
    log_q = torch.log_softmax(torch.randn(2, 32, 4), -1)
    per_group = (log_p.exp() * (log_p - log_q)).sum(-1)
    assert torch.allclose(categorical_kl(log_p, log_q), per_group.sum(-1))


def test_bounded_normal_std_range_and_log_prob():
    dist = BoundedNormal(torch.tensor([[0.0, 10.0]]), torch.tensor([[-50.0, 50.0]]), 0.1, 1.0)
    assert torch.allclose(dist.std, torch.tensor([[0.1, 1.0]]))
    assert torch.allclose(dist.mean, torch.tensor([[0.0, math.tanh(10.0)]]))
    reference = torch.distributions.Normal(dist.mean, dist.std)
    action = torch.tensor([[0.3, -0.2]])
    assert torch.allclose(dist.log_prob(action), reference.log_prob(action).sum(-1))
    assert torch.allclose(dist.entropy(), reference.entropy().sum(-1))


def test_one_hot_categorical_mode_sample_and_entropy():
    dist = OneHotCategorical(torch.tensor([[5.0, 0.0, 0.0]]), unimix=0.01)
    assert torch.equal(dist.mode(), torch.tensor([[1.0, 0.0, 0.0]]))
    assert dist.sample().sum().item() == 1.0
    assert dist.log_prob(dist.mode()).item() < 0
    assert dist.entropy().item() > 0
