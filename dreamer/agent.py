"""The DreamerV3 agent: acting with the filtered latent state, and one training step.

``Agent.act`` follows the user's roadmap for one env step: GRU → posterior from the new observation
→ actor. ``Agent.train_step`` is one gradient step of the world model on a replayed (B, T) batch,
then one of actor and critic on H-step imaginations from every posterior state.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from .actor_critic import ActorCritic
from .config import Config
from .optim import ModuleOptimizer
from .world_model import State, WorldModel


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or Inf; training stops and the last good checkpoint is kept."""


class PolicyState(NamedTuple):
    """What the agent carries between env steps: RSSM state and the previous action ``(N, A)``."""

    latent: State
    action: Tensor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


class Agent(nn.Module):
    """World model + actor-critic with their optimisers; built from an env spec and the config."""

    def __init__(self, spec, cfg: Config):
        super().__init__()
        self.spec, self.cfg = spec, cfg
        self.device = resolve_device(cfg.device)
        self.world_model = WorldModel(spec, cfg.model, cfg.world_model)
        self.actor_critic = ActorCritic(cfg.model, cfg.behavior, spec.action_dim, spec.discrete)
        self.to(self.device)
        self.optimizers = {
            "world_model": ModuleOptimizer(self.world_model, cfg.training, "world_model"),
            "actor": ModuleOptimizer(self.actor_critic.actor, cfg.training, "actor"),
            "critic": ModuleOptimizer(self.actor_critic.critic, cfg.training, "critic"),
        }
        self.gradient_steps = 0

    # --- acting ------------------------------------------------------------------------------
    def initial_state(self, batch: int = 1) -> PolicyState:
        latent = self.world_model.rssm.initial(batch, self.device)
        return PolicyState(latent, torch.zeros(batch, self.spec.action_dim, device=self.device))

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], is_first: np.ndarray, state: PolicyState,
            deterministic: bool = False) -> tuple[np.ndarray, PolicyState]:
        """One policy step for ``N`` envs.

        Args:
            obs: ``{key: (N, ...)}`` arrays; is_first ``(N,)`` bool: resets the carried state.
            deterministic: take the mode of the policy (evaluation) instead of sampling.
        Returns:
            actions ``(N, A)`` in agent format (one-hot or [−1, 1]) and the next policy state.
        """
        obs_t = {k: torch.as_tensor(v, device=self.device) for k, v in obs.items()}
        is_first_t = torch.as_tensor(is_first, device=self.device, dtype=torch.bool)
        embed = self.world_model.encoder(obs_t)  # (N, E)
        latent, _ = self.world_model.rssm.observe_step(
            state.latent, state.action, embed, is_first_t, sample=not deterministic)
        action = self.actor_critic.sample_action(latent.features(), deterministic)
        return action.cpu().numpy(), PolicyState(latent, action)

    # --- learning ----------------------------------------------------------------------------
    def train_step(self, batch) -> dict[str, float]:
        """One world-model and one behaviour update on ``batch`` (a replay ``Batch``, any device).

        Returns a flat metrics dict (``loss/...``, ``behavior/...``, ``grad_norm/...``).
        Raises NonFiniteLossError naming the loss if any loss is NaN or Inf (before any update).
        """
        batch = batch.to(self.device)
        B, T = batch.reward.shape
        wm_loss, terms, posterior = self.world_model.loss(batch)
        self._check_finite({"world_model": wm_loss, **{k: v.mean() for k, v in terms.items()}})
        metrics = {f"loss/{k}": v.mean() for k, v in terms.items()}
        metrics["loss/world_model"] = wm_loss
        metrics["grad_norm/world_model"] = self.optimizers["world_model"].step(wm_loss)

        start = posterior.detach().flatten_batch()  # (B·T, ...)
        start_continue = (~batch.is_terminal).float().flatten()  # (B·T,)
        actor_loss, critic_loss, behavior = self.actor_critic.loss(
            self.world_model, start, start_continue)
        self._check_finite({"actor": actor_loss, "critic": critic_loss})
        metrics["grad_norm/actor"] = self.optimizers["actor"].step(actor_loss)
        metrics["grad_norm/critic"] = self.optimizers["critic"].step(critic_loss)
        self.actor_critic.update_slow_critic()
        metrics.update(behavior)
        metrics["loss/actor"] = actor_loss
        metrics["loss/critic"] = critic_loss
        self.gradient_steps += 1
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32).reshape(())
                              for v in metrics.values()]).tolist()  # one device sync
        return dict(zip(metrics, values))

    @staticmethod
    def _check_finite(losses: dict[str, Tensor]) -> None:
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        if not bool(torch.isfinite(values).all()):
            named = dict(zip(losses, values.tolist()))
            bad = next(k for k, v in named.items() if not math.isfinite(v))
            raise NonFiniteLossError(f"non-finite loss: loss/{bad} = {named[bad]}")

    # --- state registry (one source of truth for checkpoints) --------------------------------
    def training_state(self) -> dict:
        """Everything a resumed run needs from the agent: modules, optimisers, counters."""
        return {
            "modules": self.state_dict(),  # world model, actor, critic, slow critic, return norm
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "gradient_steps": self.gradient_steps,
        }

    def load_training_state(self, state: dict) -> None:
        self.load_state_dict(state["modules"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.gradient_steps = int(state["gradient_steps"])
