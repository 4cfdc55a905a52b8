import torch

from dreamer.config import config_from_dict
from dreamer.world_model import FILTER_BLOCK, WorldModel

from .conftest import TINY, make_batch, make_spec


def _world_model(tiny_config, spec, **loss_overrides):
    cfg = tiny_config.world_model
    if loss_overrides:
        cfg = config_from_dict({**TINY, "world_model": loss_overrides}).world_model
    return WorldModel(spec, tiny_config.model, cfg)


def test_loss_terms_are_named_and_scaled(tiny_config):
    torch.manual_seed(0)
    spec = make_spec()
    wm = _world_model(tiny_config, spec)
    batch = make_batch(spec)
    total, losses, _ = wm.loss(batch)
    scales = tiny_config.world_model.loss_scales
    expected = sum(scales[k] * losses[k].mean() for k in scales)
    assert torch.allclose(total, expected)
    assert set(scales) <= set(losses)


def test_kl_free_nats_clips_below(tiny_config):
    torch.manual_seed(0)
    spec = make_spec()
    wm = _world_model(tiny_config, spec, free_nats=1000.0)
    total, losses, _ = wm.loss(make_batch(spec))
    assert torch.all(losses["kl_dynamics"] == 1000.0)
    assert torch.all(losses["kl_representation"] == 1000.0)
    assert torch.all(losses["kl_raw"] < 1000.0)
    # Clipped KL passes no gradient to the RSSM's prior.
    wm.zero_grad()
    (losses["kl_dynamics"].mean() + losses["kl_representation"].mean()).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in wm.rssm.prior_net.parameters())


def test_kl_balance_gradients(tiny_config):
    """dyn trains the prior; rep is stopped at the prior (stop-gradients of paper eq. 5)."""
    torch.manual_seed(0)
    spec = make_spec()
    wm = _world_model(tiny_config, spec, free_nats=0.0)
    _, losses, _ = wm.loss(make_batch(spec))
    wm.zero_grad()
    losses["kl_dynamics"].mean().backward(retain_graph=True)
    assert wm.rssm.prior_net[-1].weight.grad.abs().sum() > 0
    wm.zero_grad()
    losses["kl_representation"].mean().backward()
    assert wm.rssm.posterior_net[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in wm.rssm.prior_net.parameters())


def test_continue_loss_targets_non_terminal(tiny_config):
    """The continue head is trained toward 1 − is_terminal: it learns where episodes end."""
    torch.manual_seed(0)
    spec = make_spec()
    wm = _world_model(tiny_config, spec)
    batch = make_batch(spec, T=8, terminal_at=5)
    optimiser = torch.optim.Adam(wm.parameters(), lr=3e-3)
    for _ in range(150):
        optimiser.zero_grad()
        _, losses, _ = wm.loss(batch)
        losses["continuation"].mean().backward()
        optimiser.step()
    _, losses, states = wm.loss(batch)
    p = wm.continue_prob(states.features())
    assert p[:, 5].max() < 0.5 and p[:, :5].mean() > 0.8
    assert losses["continuation"].mean() < 0.3


def test_is_first_resets_the_state(tiny_config):
    """Changing steps before an is_first must not change anything from that step on."""
    torch.manual_seed(0)
    spec = make_spec()
    wm = _world_model(tiny_config, spec)
    batch = make_batch(spec, T=8, terminal_at=3)  # episode restarts at t = 4
    altered = batch._replace(obs={"vector": batch.obs["vector"].clone()})
    altered.obs["vector"][:, :4] += 5.0
    embed_a, embed_b = wm.encoder(batch.obs), wm.encoder(altered.obs)
    torch.manual_seed(1)  # the same latent samples for both runs
    states_a, post_a = wm.rssm.observe(embed_a, batch.action, batch.is_first)
    torch.manual_seed(1)
    states_b, post_b = wm.rssm.observe(embed_b, batch.action, batch.is_first)
    assert not torch.allclose(post_a[:, 3], post_b[:, 3])
    assert torch.allclose(post_a[:, 4:], post_b[:, 4:])
    assert torch.allclose(states_a.deter[:, 4:], states_b.deter[:, 4:])


def test_world_model_loss_falls_on_a_fixed_batch(tiny_config):
    torch.manual_seed(0)
    spec = make_spec(vector=3, image=(16, 16, 3))
    wm = _world_model(tiny_config, spec)
    batch = make_batch(spec, T=8)
    optimiser = torch.optim.Adam(wm.parameters(), lr=1e-3)
    first = None
    for _ in range(20):
        optimiser.zero_grad()
        total, _, _ = wm.loss(batch)
        total.backward()
        optimiser.step()
        first = first if first is not None else total.item()
    assert total.item() < 0.9 * first


def test_filter_blocks_equal_one_step_at_a_time(tiny_config):
    """observe() runs FILTER_BLOCK steps per (compiled) block, the last one shorter: the same
    states and samples as calling observe_step once per step."""
    torch.manual_seed(0)
    spec = make_spec()
    wm = _world_model(tiny_config, spec)
    T = FILTER_BLOCK + 3
    batch = make_batch(spec, T=T, terminal_at=FILTER_BLOCK)  # a reset inside the second block
    embed = wm.encoder(batch.obs)
    torch.manual_seed(1)
    states, posterior = wm.rssm.observe(embed, batch.action, batch.is_first)
    torch.manual_seed(1)
    state, deters, posts = wm.rssm.initial(batch.action.shape[0], "cpu"), [], []
    for t in range(T):
        state, log_probs = wm.rssm.observe_step(
            state, batch.action[:, t], embed[:, t], batch.is_first[:, t]
        )
        deters.append(state.deter)
        posts.append(log_probs)
    assert states.deter.shape[1] == T
    assert torch.equal(states.deter, torch.stack(deters, 1))
    assert torch.equal(posterior, torch.stack(posts, 1))
