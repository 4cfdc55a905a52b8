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


class ModuleOptimizer:
    """Optimiser, clipping and linear lr warm-up for one module (world model, actor or critic).

    ``training.lr`` is the single knob: laprop uses it for every module (official: 4e-5); adam uses
    it for the world model and 0.3× it for actor and critic (paper v1: 1e-4 and 3e-5).
    """

    def __init__(self, module: nn.Module, cfg: TrainingConfig, role: str):
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.cfg, self.role = cfg, role
        if cfg.optimizer == "laprop":
            self.lr = cfg.lr
            self.optimizer = LaProp(self.params, lr=self.lr)
        else:
            self.lr = cfg.lr if role == "world_model" else 0.3 * cfg.lr
            eps = 1e-8 if role == "world_model" else 1e-5
            self.optimizer = torch.optim.Adam(self.params, lr=self.lr, eps=eps)
        self.clip_norm = 1000.0 if role == "world_model" else 100.0  # paper v1 (adam)
        self.steps = 0

    def step(self, loss: Tensor) -> Tensor:
        """Backward ``loss`` into this module's parameters only, clip, step. Returns grad norm."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self.params)
        if self.cfg.optimizer == "laprop":
            grad_norm = _global_norm(self.params)
            adaptive_clip_(self.params, self.cfg.agc)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
        self.steps += 1
        warmup = self.cfg.lr_warmup
        factor = min(1.0, self.steps / warmup) if warmup else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * factor
        self.optimizer.step()
        return grad_norm

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])


def _global_norm(params) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
