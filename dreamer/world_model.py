"""World model: encoder, RSSM, decoder, reward and continue heads, and their losses (paper §2).

Timing (one replay step t; see ``replay.py`` for how steps are stored)::

    obs:      o_0      o_1      o_2   ...
    action:   0        a_0      a_1          a_{t-1} led to o_t
    deter:    h_0  →   h_1  →   h_2          h_t = GRU(h_{t-1}, z_{t-1}, a_{t-1})
    stoch:    z_0      z_1      z_2          z_t ~ q(z | h_t, embed(o_t))   (prior p(z | h_t))
    reward:   0        r_1      r_2          feat_t = [h_t, z_t] predicts r_t and continue_t

Where ``is_first`` is set the carried state and action are zeroed before the GRU step, so a window
may cross an episode boundary.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .compiled import compiled
from .config import ModelConfig, WorldModelConfig
from .distributions import (
    TwoHot,
    categorical_kl,
    straight_through_mode,
    straight_through_sample,
    unimix_logits,
)
from .networks import MLP, BlockGRU, Decoder, Encoder


class State(NamedTuple):
    """RSSM state. ``deter (..., D)`` GRU state h; ``stoch (..., S, C)`` one-hot latents z."""

    deter: Tensor
    stoch: Tensor

    def features(self) -> Tensor:
        """feat = [h, flatten(z)] ``(..., D + S·C)``, the input of every head."""
        return torch.cat([self.deter, self.stoch.flatten(-2)], -1)

    def detach(self) -> State:
        return State(self.deter.detach(), self.stoch.detach())

    def flatten_batch(self) -> State:
        """``(B, T, ...)`` → ``(B·T, ...)``."""
        return State(self.deter.flatten(0, 1), self.stoch.flatten(0, 1))


FILTER_BLOCK = 8  # filter steps per compiled graph (RSSM.observe_block)


class RSSM(nn.Module):
    """Recurrent state-space model with categorical latents (S groups × C classes, 1% unimix)."""

    def __init__(self, cfg: ModelConfig, embed_dim: int, action_dim: int):
        super().__init__()
        self.S, self.C, self.unimix = cfg.stoch, cfg.classes, cfg.unimix
        self.deter_dim = cfg.deter
        self.core = BlockGRU(cfg.deter, cfg.stoch * cfg.classes, action_dim, cfg.hidden, cfg.blocks)
        # prior p(z | h): two hidden layers (official imglayers 2); posterior q(z | h, e): one.
        self.prior_net = MLP(cfg.deter, cfg.hidden, 2, out=cfg.stoch * cfg.classes)
        self.posterior_net = MLP(cfg.deter + embed_dim, cfg.hidden, 1, out=cfg.stoch * cfg.classes)

    def initial(self, batch: int, device) -> State:
        return State(
            torch.zeros(batch, self.deter_dim, device=device),
            torch.zeros(batch, self.S, self.C, device=device),
        )

    def _log_probs(self, logits: Tensor) -> Tensor:
        return unimix_logits(logits.unflatten(-1, (self.S, self.C)), self.unimix)

    def prior_log_probs(self, deter: Tensor) -> Tensor:
        """``deter (..., D)`` → prior log-probabilities ``(..., S, C)``."""
        return self._log_probs(self.prior_net(deter))

    def step(self, state: State, action: Tensor, is_first: Tensor | None = None) -> Tensor:
        """Advance the GRU: h_t = f(h_{t−1}, z_{t−1}, a_{t−1}); resets where ``is_first (N,)``."""
        deter, stoch = state
        if is_first is not None:
            keep = (~is_first).float().unsqueeze(-1)  # (N, 1)
            deter, stoch, action = deter * keep, stoch * keep.unsqueeze(-1), action * keep
        return self.core(deter, stoch.flatten(-2), action)

    def observe_step(
        self, state: State, action: Tensor, embed: Tensor, is_first: Tensor, sample: bool = True
    ) -> tuple[State, Tensor]:
        """One filtering step ``(N, ...)``: returns the posterior state and its log-probs."""
        deter = self.step(state, action, is_first)
        log_probs = self._log_probs(self.posterior_net(torch.cat([deter, embed], -1)))
        stoch = straight_through_sample(log_probs) if sample else straight_through_mode(log_probs)
        return State(deter, stoch), log_probs

    def imagine_step(self, state: State, action: Tensor) -> State:
        """One prediction step without observation: z_t ~ p(z | h_t)."""
        deter = self.step(state, action)
        return State(deter, straight_through_sample(self.prior_log_probs(deter)))

    def observe(
        self, embed: Tensor, action: Tensor, is_first: Tensor, state: State | None = None
    ) -> tuple[State, Tensor]:
        """Filter a sequence.

        Args:
            embed ``(B, T, E)``, action ``(B, T, A)`` (the action that led to step t),
            is_first ``(B, T)`` bool, state: the state before step 0 ``(B, ...)`` (the replay
            context) or None for zeros.
        Returns:
            posterior states ``(B, T, ...)`` and posterior log-probs ``(B, T, S, C)``. (The prior
            needs no recurrence: :meth:`WorldModel.losses` computes it for all steps at once.)
        """
        B, T = is_first.shape
        if state is None:
            state = self.initial(B, embed.device)
        if torch.is_grad_enabled():  # so step 0 runs the same compiled graph as the others
            state = State(
                state.deter.detach().requires_grad_(), state.stoch.detach().requires_grad_()
            )
        deters, stochs, posteriors = [], [], []
        for t in range(0, T, FILTER_BLOCK):
            block = slice(t, t + FILTER_BLOCK)
            state, (deter, stoch, log_probs) = self.observe_block(
                state, action[:, block], embed[:, block], is_first[:, block]
            )
            deters.append(deter)
            stochs.append(stoch)
            posteriors.append(log_probs)
        states = State(torch.cat(deters, 1), torch.cat(stochs, 1))  # (B, T, D), (B, T, S, C)
        return states, torch.cat(posteriors, 1)

    @compiled
    def observe_block(
        self, state: State, action: Tensor, embed: Tensor, is_first: Tensor
    ) -> tuple[State, tuple[Tensor, Tensor, Tensor]]:
        """:meth:`observe_step` over ``k`` steps ``(B, k, ...)``, as one compiled graph.

        The filter is sequential and its steps are small (B rows): compiled one step at a time,
        each step would pay a graph call, guards and an autograd node, which cost as much as its
        arithmetic. Returns the last state and the block's deter ``(B, k, D)``, stoch
        ``(B, k, S, C)`` and posterior log-probs ``(B, k, S, C)``.
        """
        deters, stochs, posteriors = [], [], []
        for t in range(is_first.shape[1]):
            state, log_probs = self.observe_step(state, action[:, t], embed[:, t], is_first[:, t])
            deters.append(state.deter)
            stochs.append(state.stoch)
            posteriors.append(log_probs)
        return state, (torch.stack(deters, 1), torch.stack(stochs, 1), torch.stack(posteriors, 1))


class WorldModel(nn.Module):
    """Encoder + RSSM + decoder/reward/continue heads, trained on replayed sequences."""

    def __init__(self, spec, model_cfg: ModelConfig, loss_cfg: WorldModelConfig):
        super().__init__()
        self.loss_cfg = loss_cfg
        m = model_cfg
        self.encoder = Encoder(spec, m)
        self.rssm = RSSM(m, self.encoder.out_features, spec.action_dim)
        feature_dim = m.feature_dim
        self.decoder = Decoder(spec, m)
        # Reward and continue heads: one hidden layer (official rewhead/conhead layers 1).
        self.reward_head = MLP(feature_dim, m.units, 1, out=m.reward_bins, out_scale=0.0)
        self.continue_head = MLP(feature_dim, m.units, 1, out=1)

    def reward(self, feat: Tensor) -> Tensor:
        """Predicted reward ``(...)`` from feat ``(..., F)``."""
        return TwoHot(self.reward_head(feat)).mean()

    def continue_prob(self, feat: Tensor) -> Tensor:
        """Probability that the episode continues ``(...)``."""
        return torch.sigmoid(self.continue_head(feat).squeeze(-1))

    def loss(self, batch, state: State | None = None) -> tuple[Tensor, dict[str, Tensor], State]:
        """World-model loss on a replayed batch: encode, filter, then :meth:`losses`.

        Returns:
            total scalar loss; per-step terms ``{name: (B, T)}`` (unscaled); posterior states
            ``(B, T, ...)`` (with gradients; detach before using them as imagination starts).
        """
        embed = self.encoder(batch.obs)  # (B, T, E)
        # Precision policy: the filter multiplies B rows at a time, too few for bfloat16 to pay
        # on a CPU (a bf16 matmul costs ≥ 13 µs at any size there, float32 3–10 µs at 16 rows).
        with torch.autocast(embed.device.type, enabled=False):
            states, posterior = self.rssm.observe(embed, batch.action, batch.is_first, state)
        total, losses = self.losses(batch, states, posterior)
        return total, losses, states

    @compiled
    def losses(self, batch, states: State, posterior: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Heads and loss terms on filtered states ``(B, T, ...)`` with posterior log-probs
        ``(B, T, S, C)``. Returns the scaled total and the unscaled terms ``{name: (B, T)}``."""
        B, T = batch.reward.shape
        prior = self.rssm.prior_log_probs(states.deter)  # (B, T, S, C), all steps in one call
        feat = states.features()  # (B, T, F)

        free_nats = self.loss_cfg.free_nats
        # KL balancing (paper eq. 5): dynamics trains the prior, representation the posterior.
        kl_dynamics = categorical_kl(posterior.detach(), prior)  # (B, T)
        kl_representation = categorical_kl(posterior, prior.detach())
        continue_target = (~batch.is_terminal).float()
        losses = {
            "reconstruction": self.decoder.loss(feat, batch.obs),
            "reward": TwoHot(self.reward_head(feat)).loss(batch.reward),
            "continuation": F.binary_cross_entropy_with_logits(
                self.continue_head(feat).squeeze(-1), continue_target, reduction="none"
            ),
            "kl_dynamics": kl_dynamics.clamp(min=free_nats),
            "kl_representation": kl_representation.clamp(min=free_nats),
        }
        scales = self.loss_cfg.loss_scales
        assert set(losses) == set(scales), (sorted(losses), sorted(scales))
        assert all(v.shape == (B, T) for v in losses.values())
        total = sum(scales[k] * v.mean() for k, v in losses.items())
        losses["kl_raw"] = kl_dynamics.detach()  # unclipped KL, for monitoring only
        return total, losses

    @torch.no_grad()
    def open_loop(
        self, obs: dict[str, Tensor], action: Tensor, is_first: Tensor, context: int
    ) -> dict[str, Tensor]:
        """Observe ``context`` real steps, then predict the rest from the real actions alone.

        The official report video: the posterior filters the first ``context`` observations, the
        prior continues with sampled latents driven by the recorded actions, and the decoder shows
        what the model expects to see. Args: obs ``{key: (B, T, ...)}``, action ``(B, T, A)``,
        is_first ``(B, T)``. Returns reconstructions ``{key: (B, T, ...)}`` (images float in
        [0, 255]): steps ``< context`` decoded from the posterior, later ones imagined.
        """
        T = action.shape[1]
        embed = self.encoder({k: v[:, :context] for k, v in obs.items()})
        states, _ = self.rssm.observe(embed, action[:, :context], is_first[:, :context])
        features = [states.features()]  # (B, context, F)
        state = State(states.deter[:, -1], states.stoch[:, -1])
        for t in range(context, T):
            state = self.rssm.imagine_step(state, action[:, t])
            features.append(state.features().unsqueeze(1))
        return self.decoder.predict(torch.cat(features, 1))
