"""Optimisers: the official LaProp + adaptive gradient clipping, or the paper-v1 Adam set-up.

LaProp (Ziyin et al. 2020) normalises the gradient by its RMS *before* momentum, which makes it
robust to the tiny epsilon (1e-20) the official code uses. Adaptive gradient clipping (Brock et al.
2021) rescales each parameter's gradient to at most ``agc · max(‖w‖, 1e-3)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .config import TrainingConfig


class LaProp(torch.optim.Optimizer):
    """v ← β₂v + (1−β₂)g²;  m ← β₁m + (1−β₁) g/(√v̂ + ε);  w ← w − lr · m̂."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-20):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["momentum"] = torch.zeros_like(p)
                    state["rms"] = torch.zeros_like(p)
                state["step"] += 1
            step = self.state[params[0]]["step"]
            grads = [p.grad for p in params]
            rms = [self.state[p]["rms"] for p in params]
            momentum = [self.state[p]["momentum"] for p in params]
            torch._foreach_mul_(rms, beta2)
            torch._foreach_addcmul_(rms, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(torch._foreach_div(rms, 1 - beta2**step))
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_mul_(momentum, beta1)
            torch._foreach_add_(momentum, torch._foreach_div(grads, denom), alpha=1 - beta1)
            torch._foreach_add_(params, momentum, alpha=-group["lr"] / (1 - beta1**step))


@torch.no_grad()
def adaptive_clip_(params: Iterable[nn.Parameter], clip: float, min_norm: float = 1e-3) -> None:
    """Scale each gradient so that ‖g‖ ≤ clip · max(‖w‖, min_norm) (per parameter tensor)."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    grad_norms = torch.stack(torch._foreach_norm([p.grad for p in params]))
    weight_norms = torch.stack(torch._foreach_norm(list(params))).clamp(min=min_norm)
    factors = (clip * weight_norms / grad_norms.clamp(min=1e-6)).clamp(max=1.0)
    torch._foreach_mul_([p.grad for p in params], list(factors.unbind()))


class Optimizer:
    """One optimiser step for world model, actor and critic together, as the official code takes.

    ``modules`` maps a role (``world_model``, ``actor``, ``critic``) to its module. ``training.lr``
    is the single knob: laprop uses it for every role (official: 4e-5) and steps all parameters
    with one set of foreach kernels; adam (paper v1) uses it for the world model and 0.3× it for
    actor and critic (1e-4 and 3e-5), one param group per role. Both warm the lr up linearly.
    """

    def __init__(self, modules: dict[str, nn.Module], cfg: TrainingConfig):
        self.cfg = cfg
        self.params = {
            role: [p for p in m.parameters() if p.requires_grad] for role, m in modules.items()
        }
        if cfg.optimizer == "laprop":
            groups = [{"params": [p for ps in self.params.values() for p in ps], "base_lr": cfg.lr}]
            self.optimizer = LaProp(groups, lr=cfg.lr)
        else:
            groups = [
                {
                    "params": self.params[role],
                    "base_lr": cfg.lr if role == "world_model" else 0.3 * cfg.lr,
                    "eps": 1e-8 if role == "world_model" else 1e-5,
                    "role": role,
                }
                for role in self.params
            ]
            self.optimizer = torch.optim.Adam(groups, lr=cfg.lr, foreach=True)
        self.steps = 0

    def backward(self, losses: dict[str, Tensor], separate: bool = False) -> dict[str, Tensor]:
        """Gradients of each role's loss into that role's parameters; returns their global norms.

        The losses of REINFORCE training reach disjoint parameters (actor and critic see detached
        features), so one backward pass serves all three. ``separate``: a loss reaches other
        roles' parameters too (the actor's through the dynamics), so each is backpropagated into
        its own role only, as paper v1's separate optimisers did.
        """
        assert losses.keys() == self.params.keys(), (sorted(losses), sorted(self.params))
        self.optimizer.zero_grad(set_to_none=True)
        if separate:
            for index, (role, loss) in enumerate(losses.items()):
                loss.backward(inputs=self.params[role], retain_graph=index < len(losses) - 1)
        else:
            torch.autograd.backward(list(losses.values()))
        return {role: _global_norm(params) for role, params in self.params.items()}

    def step(self) -> None:
        """Clip (AGC per tensor for laprop, global norm per role for adam), warm up lr, update."""
        if self.cfg.optimizer == "laprop":
            adaptive_clip_([p for ps in self.params.values() for p in ps], self.cfg.agc)
        else:
            for group in self.optimizer.param_groups:  # paper v1: 1000 world model, 100 others
                clip = 1000.0 if group["role"] == "world_model" else 100.0
                torch.nn.utils.clip_grad_norm_(group["params"], clip, foreach=True)
        self.steps += 1
        warmup = self.cfg.lr_warmup
        factor = min(1.0, self.steps / warmup) if warmup else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.optimizer.step()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])


def _global_norm(params) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:  # a role whose loss reached none of its parameters
        return torch.zeros((), device=params[0].device if params else None)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
