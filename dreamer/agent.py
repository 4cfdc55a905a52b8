"""The DreamerV3 agent: acting with the filtered latent state, and one training step.

``Agent.act`` follows the user's roadmap for one env step: GRU → posterior from the new observation
→ actor. ``Agent.train_step`` is one gradient step on a replayed (B, T) batch: the world-model
losses (filtering from the window's stored starting latent, the replay context), then actor and
critic losses on H-step imaginations from every posterior state, the critic's loss on the replayed
trajectory, and one optimiser step for all three (as the official code does).

How it computes (``params.yaml`` ``device``, ``precision``, ``compile``): on ``device`` with the
precision policy of ``networks.py`` (bfloat16 matmuls, float32 everything else, under
:meth:`Agent.autocast`), and, after :meth:`Agent.compile`, through torch.compile'd graphs of the
hot paths (``compiled.py``). The eager float32 path stays available and is what the throughput
benchmark compares against.
"""

from __future__ import annotations

import copy
import math
import time
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from .actor_critic import ActorCritic
from .compiled import check_compiler, compile_marked, compiled, is_compiled
from .config import Config
from .errors import ConfigError
from .optim import Optimizer
from .replay import Batch, Latents
from .seeding import restore_rng_state, rng_state
from .world_model import State, WorldModel


class Update(NamedTuple):
    """What one :meth:`Agent.train_step` returns: flat metrics, with a replay context the
    posterior latents of the trained steps ``(B, T, ...)`` to store back (else None), and the
    name of the first non-finite loss or gradient norm when the update was skipped (else None)."""

    metrics: dict[str, float]
    posterior: Latents | None
    skipped: str | None = None


class PolicyState(NamedTuple):
    """What the agent carries between env steps: RSSM state and the previous action ``(N, A)``."""

    latent: State
    action: Tensor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but torch sees no CUDA device (use auto)")
    return torch.device(name)


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: CUDA with bf16 support, or a
    CPU with AVX512-BF16 or AMX. Elsewhere bf16 matmuls are emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The matmul dtype for ``precision`` (auto: bfloat16 where native, else float32)."""
    if name == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32


class Agent(nn.Module):
    """World model + actor-critic with their optimiser; built from an env spec and the config."""

    def __init__(self, spec, cfg: Config):
        super().__init__()
        self.spec, self.cfg = spec, cfg
        self.device = resolve_device(cfg.device)
        self.matmul_dtype = resolve_precision(cfg.precision, self.device)
        self.world_model = WorldModel(spec, cfg.model, cfg.world_model)
        self.actor_critic = ActorCritic(cfg.model, cfg.behavior, spec.action_dim, spec.discrete)
        self.to(self.device)
        self.optimizer = Optimizer(
            {
                "world_model": self.world_model,
                "actor": self.actor_critic.actor,
                "critic": self.actor_critic.critic,
            },
            cfg.training,
        )
        self.gradient_steps = 0

    def autocast(self):
        """The precision policy's context: matmuls in ``matmul_dtype`` (see ``networks.py``).

        It covers the batched work of an update (encoder, heads and losses over B·T steps, the
        imagination from B·T starts). The RSSM filter (B rows per step) and the policy step
        (one row per env) run in float32: there a bfloat16 matmul's fixed cost outweighs its speed.
        """
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.matmul_dtype == torch.bfloat16
        )

    def compile(self, num_envs: int = 1) -> float:
        """torch.compile the hot paths (``@compiled`` methods) and compile them now.

        Runs one update on a zero batch and one policy step for ``num_envs`` envs, then restores
        weights, optimiser, counters and RNG states, so compiling changes nothing but speed and
        no compilation stalls training later. Returns the seconds it took (a few with a warm
        inductor cache, ``compiled.use_cache_dir``). Training only: evaluation runs eagerly.
        """
        check_compiler(self.device)
        compile_marked(self, self.device)
        start = time.perf_counter()
        saved, rng = copy.deepcopy(self.training_state()), rng_state()
        t = self.cfg.training
        context = self.cfg.training.replay_context
        self.train_step(
            Batch.zeros(self.spec, t.batch_size, t.batch_length + context),
            self.empty_context(t.batch_size) if context else None,
        )
        obs = {
            k: np.zeros((num_envs, *shape), np.uint8 if k in self.spec.image_keys else np.float32)
            for k, shape in self.spec.obs_shapes.items()
        }
        self.act(obs, np.ones(num_envs, bool), self.initial_state(num_envs))
        self.load_training_state(saved)
        restore_rng_state(rng)
        self.optimizer.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    # --- acting ------------------------------------------------------------------------------
    def initial_state(self, batch: int = 1) -> PolicyState:
        latent = self.world_model.rssm.initial(batch, self.device)
        return PolicyState(latent, torch.zeros(batch, self.spec.action_dim, device=self.device))

    @torch.no_grad()
    def act(
        self,
        obs: dict[str, np.ndarray],
        is_first: np.ndarray,
        state: PolicyState,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, PolicyState]:
        """One policy step for ``N`` envs.

        Args:
            obs: ``{key: (N, ...)}`` arrays; is_first ``(N,)`` bool: resets the carried state.
            deterministic: take the mode of the policy (evaluation) instead of sampling.
        Returns:
            actions ``(N, A)`` in agent format (one-hot or [−1, 1]) and the next policy state.
            The action's copy to the host is the step's only device sync.
        """
        obs_t = {k: torch.as_tensor(v, device=self.device) for k, v in obs.items()}
        is_first_t = torch.as_tensor(is_first, device=self.device, dtype=torch.bool)
        cuda_graph = self.device.type == "cuda" and is_compiled(self)
        if cuda_graph:  # a new replay of the captured graph overwrites the previous outputs
            torch.compiler.cudagraph_mark_step_begin()
        # float32: at a few rows a bfloat16 matmul is slower than float32 (see ``autocast``)
        action, state = self.policy_step(obs_t, is_first_t, state, deterministic)
        if cuda_graph:  # carry copies, not the graph's output buffers
            state = PolicyState(State(*(x.clone() for x in state.latent)), state.action.clone())
        return action.cpu().numpy(), state

    @compiled(cuda_graphs=True, cpp_wrapper=True)
    def policy_step(
        self, obs: dict[str, Tensor], is_first: Tensor, state: PolicyState, deterministic: bool
    ) -> tuple[Tensor, PolicyState]:
        """Encode ``obs {key: (N, ...)}``, filter, act: the tensor part of :meth:`act`."""
        embed = self.world_model.encoder(obs)  # (N, E)
        latent, _ = self.world_model.rssm.observe_step(
            state.latent, state.action, embed, is_first, sample=not deterministic
        )
        action = self.actor_critic.sample_action(latent.features(), deterministic)
        return action, PolicyState(latent, action)

    # --- learning ----------------------------------------------------------------------------
    def empty_context(self, batch_size: int) -> Latents:
        """A replay context with no stored latents (every window starts from the zero state)."""
        m = self.cfg.model
        return Latents(
            np.zeros((batch_size, m.deter), np.float16),
            np.zeros((batch_size, m.stoch), np.int16),
            np.zeros(batch_size, bool),
        )

    def _context_state(self, context: Latents | None, window: Batch) -> tuple[State, Tensor]:
        """The filter's starting state ``(B, ...)`` and the window's ``is_first (B, T)``.

        With a replay context (official ``replay_context: 1``) a window starts from the latent
        stored for the step before it; where none is stored (``valid`` False) it starts from the
        zero state with ``is_first`` set, as it does without a context.
        """
        B = window.reward.shape[0]
        if context is None:
            return self.world_model.rssm.initial(B, self.device), window.is_first
        valid = torch.as_tensor(context.valid, device=self.device)  # (B,)
        deter = torch.as_tensor(context.deter, device=self.device).float()  # (B, D)
        stoch = torch.as_tensor(context.stoch, device=self.device).long()  # (B, S) class indices
        stoch = torch.nn.functional.one_hot(stoch, self.cfg.model.classes).float()  # (B, S, C)
        is_first = window.is_first.clone()
        is_first[:, 0] |= ~valid
        return State(deter, stoch), is_first

    def behavior_losses(self, window: Batch, posterior: State) -> tuple[Tensor, Tensor, dict]:
        """Actor loss, critic loss and metrics for the world model's posterior ``(B, T, ...)``.

        Imagination starts from every posterior state (detached: the actor and critic do not
        train the world model there). With ``replay_value_scale`` the critic also learns on the
        replayed window (official ``repval_loss``); with ``replay_value_grad`` (official
        ``repval_grad: True``) that loss reaches the world model through the posterior features.
        """
        start = posterior.detach().flatten_batch()  # (B·T, ...)
        start_continue = (~window.is_terminal).float().flatten()  # (B·T,)
        actor_loss, critic_loss, behavior, start_return = self.actor_critic.loss(
            self.world_model, start, start_continue
        )
        cfg = self.cfg.behavior
        if cfg.replay_value_scale:
            feat = posterior.features()  # (B, T, F)
            if not cfg.replay_value_grad:
                feat = feat.detach()
            replay_loss, replay_metrics = self.actor_critic.replay_value_loss(
                feat,
                window.reward,
                window.is_last,
                window.is_terminal,
                start_return.view(window.reward.shape),
            )
            critic_loss = critic_loss + cfg.replay_value_scale * replay_loss
            behavior = {**behavior, **replay_metrics, "loss/replay_value": replay_loss}
        return actor_loss, critic_loss, behavior

    def train_step(self, batch: Batch, context: Latents | None = None) -> Update:
        """One update of world model, actor and critic on ``batch`` (a replay ``Batch``).

        Args:
            batch: ``(B, T)`` windows; with ``context``, ``(B, 1 + T)``: the first step only
                supplies the starting state and is not trained on (official replay context).
            context: the latents stored for each window's first step
                (``ReplayBuffer.read_latents``).
        Returns the metrics (``loss/...``, ``behavior/...``, ``grad_norm/...``), read with one
        device sync, and with a context the posterior latents to store back. An update whose
        losses or gradient norms are not all finite is skipped, as the official optimiser skips
        it: no optimiser step, no slow-critic step, no latents stored, ``gradient_steps``
        unchanged, and ``Update.skipped`` names the first bad value (the caller counts them).
        """
        batch = batch.to(self.device, non_blocking=True)
        window = batch.from_step(1) if context is not None else batch
        state, is_first = self._context_state(context, window)
        window = window._replace(is_first=is_first)
        with self.autocast():
            wm_loss, terms, posterior = self.world_model.loss(window, state)
            actor_loss, critic_loss, behavior = self.behavior_losses(window, posterior)
        losses = {"world_model": wm_loss, "actor": actor_loss, "critic": critic_loss}
        grad_norms = self.optimizer.backward(losses, separate=self.actor_critic.through_dynamics)

        metrics = {"loss/world_model": wm_loss}
        metrics.update({f"loss/{k}": v.mean() for k, v in terms.items()})
        metrics.update({"loss/actor": actor_loss, "loss/critic": critic_loss})
        metrics.update(behavior)
        metrics.update({f"grad_norm/{k}": v for k, v in grad_norms.items()})
        values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()])
        named = dict(zip(metrics, values.tolist()))  # the one device sync
        checked = ("loss/", "grad_norm/")
        bad = [k for k, v in named.items() if k.startswith(checked) and not math.isfinite(v)]
        if bad:
            self.optimizer.optimizer.zero_grad(set_to_none=True)
            return Update(named, None, skipped=f"{bad[0]} = {named[bad[0]]}")

        self.optimizer.step()
        self.actor_critic.update_slow_critic()
        self.gradient_steps += 1
        stored = None
        if context is not None:  # the new posteriors become the stored latents of these steps
            stored = Latents(
                posterior.deter.detach().to(torch.float16).cpu().numpy(),
                posterior.stoch.detach().argmax(-1).to(torch.int16).cpu().numpy(),
                np.ones(posterior.deter.shape[:2], bool),
            )
        return Update(named, stored)

    def nonfinite_parameter(self) -> str | None:
        """The name of the first parameter or buffer holding NaN or Inf, or None (all finite)."""
        for name, value in self.state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                return name
        return None

    # --- state registry (one source of truth for checkpoints) --------------------------------
    def training_state(self) -> dict:
        """Everything a resumed run needs from the agent: modules, optimiser, counters."""
        return {
            "modules": self.state_dict(),  # world model, actor, critic, slow critic, return norm
            "optimizer": self.optimizer.state_dict(),
            "gradient_steps": self.gradient_steps,
        }

    def load_training_state(self, state: dict) -> None:
        self.load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gradient_steps = int(state["gradient_steps"])
