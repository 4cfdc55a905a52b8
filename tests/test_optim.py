import torch
from torch import nn

from dreamer.config import TrainingConfig
from dreamer.optim import LaProp, ModuleOptimizer, adaptive_clip_


def test_laprop_minimises_a_quadratic():
    w = nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = LaProp([w], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert w.abs().max() < 0.1


def test_laprop_first_step_moves_by_lr_per_coordinate():
    w = nn.Parameter(torch.tensor([1.0, 1.0]))
    w.grad = torch.tensor([1e-6, 100.0])
    LaProp([w], lr=0.1).step()
    # normalised by RMS before momentum: both coordinates move by lr despite 1e8 scale gap
    assert torch.allclose(w.detach(), torch.tensor([0.9, 0.9]), atol=1e-4)


def test_adaptive_clip_bounds_gradient_relative_to_weight():
    w = nn.Parameter(torch.full((4,), 2.0))  # ‖w‖ = 4
    w.grad = torch.full((4,), 10.0)  # ‖g‖ = 20
    adaptive_clip_([w], clip=0.3)
    assert torch.linalg.vector_norm(w.grad).item() == torch.tensor(1.2).item() or \
        abs(torch.linalg.vector_norm(w.grad).item() - 1.2) < 1e-5
    small = nn.Parameter(torch.full((4,), 2.0))
    small.grad = torch.full((4,), 0.01)
    adaptive_clip_([small], clip=0.3)
    assert torch.allclose(small.grad, torch.full((4,), 0.01))


def test_lr_warmup_and_adam_role_scaling():
    module = nn.Linear(2, 2)
    opt = ModuleOptimizer(module, TrainingConfig(lr=1e-3, lr_warmup=10), "world_model")
    opt.step(module(torch.ones(1, 2)).sum())
    assert opt.optimizer.param_groups[0]["lr"] == 1e-4
    adam = ModuleOptimizer(nn.Linear(2, 2), TrainingConfig(lr=1e-4, optimizer="adam"), "actor")
    assert isinstance(adam.optimizer, torch.optim.Adam)
    assert abs(adam.lr - 3e-5) < 1e-12
