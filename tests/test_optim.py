import torch
from torch import nn

from dreamer.config import TrainingConfig
from dreamer.optim import LaProp, Optimizer, adaptive_clip_


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
    assert (
        torch.linalg.vector_norm(w.grad).item() == torch.tensor(1.2).item()
        or abs(torch.linalg.vector_norm(w.grad).item() - 1.2) < 1e-5
    )
    small = nn.Parameter(torch.full((4,), 2.0))
    small.grad = torch.full((4,), 0.01)
    adaptive_clip_([small], clip=0.3)
    assert torch.allclose(small.grad, torch.full((4,), 0.01))


def _roles():
    return {"world_model": nn.Linear(2, 2), "actor": nn.Linear(2, 2), "critic": nn.Linear(2, 2)}


def test_lr_warmup_and_adam_role_scaling():
    roles = _roles()
    opt = Optimizer(roles, TrainingConfig(lr=1e-3, lr_warmup=10))
    opt.backward({k: m(torch.ones(1, 2)).sum() for k, m in roles.items()})
    opt.step()
    assert len(opt.optimizer.param_groups) == 1  # laprop: one step over every role
    assert opt.optimizer.param_groups[0]["lr"] == 1e-4
    adam = Optimizer(_roles(), TrainingConfig(lr=1e-4, optimizer="adam"))
    assert isinstance(adam.optimizer, torch.optim.Adam)
    lrs = {g["role"]: g["base_lr"] for g in adam.optimizer.param_groups}
    assert lrs["world_model"] == 1e-4 and abs(lrs["actor"] - 3e-5) < 1e-12
    assert abs(lrs["critic"] - 3e-5) < 1e-12


def test_backward_sends_each_loss_to_its_own_role_when_separate():
    shared = nn.Linear(2, 1)  # the actor's loss reaches the world model's weights too
    roles = {"world_model": shared, "actor": nn.Linear(1, 1), "critic": nn.Linear(2, 1)}
    x = torch.ones(1, 2)

    def losses():
        return {
            "world_model": shared(x).sum(),
            "actor": roles["actor"](shared(x)).sum(),
            "critic": roles["critic"](x).sum(),
        }

    opt = Optimizer(roles, TrainingConfig())
    norms = opt.backward(losses(), separate=True)
    assert torch.allclose(shared.weight.grad, torch.ones(1, 2))  # only its own loss's gradient
    assert set(norms) == set(roles) and all(v > 0 for v in norms.values())
    opt.backward(losses(), separate=False)
    assert not torch.allclose(shared.weight.grad, torch.ones(1, 2))  # both losses reach it
