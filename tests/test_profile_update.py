"""The matmul floor of ``benchmarks/profile_update.py --matmuls``: profiled matmuls grouped by
operand shapes, strides and dtypes (an ``addmm``'s bias left out), and their FLOPs counted."""

from __future__ import annotations

import importlib.util

import torch
from torch.profiler import ProfilerActivity, profile

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location(
    "profile_update", REPO / "benchmarks" / "profile_update.py"
)
profile_update = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_update)


def test_matmul_flops_counts_two_per_multiply_add_and_the_batch():
    assert profile_update.matmul_flops((4, 5), (5, 6)) == 2 * 4 * 5 * 6
    assert profile_update.matmul_flops((3, 4, 5), (3, 5, 6)) == 3 * 2 * 4 * 5 * 6


def test_profiled_matmuls_are_grouped_by_operands_and_timed_alone(capsys):
    a, w, bias = torch.randn(8, 5), torch.randn(6, 5), torch.randn(6)
    x = torch.randn(3, 4, 5)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(2):  # two "updates"
            torch.addmm(bias, a, w.T)  # as a Linear layer: the weight transposed
            torch.mm(a, w.T)
            torch.bmm(x, x.transpose(1, 2))
            torch.mm(a.bfloat16(), w.T.bfloat16())
    groups = profile_update.matmul_groups(prof.events())
    shapes = {(name, sh, dt): len(s) for (name, sh, _, dt), s in groups.items()}
    assert shapes == {
        ("aten::addmm", ((8, 5), (5, 6)), ("float", "float")): 2,
        ("aten::mm", ((8, 5), (5, 6)), ("float", "float")): 2,
        ("aten::bmm", ((3, 4, 5), (3, 5, 4)), ("float", "float")): 2,
        ("aten::mm", ((8, 5), (5, 6)), ("bfloat16", "bfloat16")): 2,
    }
    strides = {key[2] for key in groups if key[0] == "aten::addmm"}
    assert strides == {((5, 1), (1, 5))}  # the transposed weight's layout is kept

    total = profile_update.matmul_floor(
        groups, updates=2, update_seconds=0.01, peak=1e9, target=0.6
    )
    assert total["flops"] == 3 * (2 * 8 * 5 * 6) + 3 * 2 * 4 * 5 * 4
    assert 0 < total["alone"] and 0 < total["in_update"]
    out = capsys.readouterr().out
    assert "bmm   3×4×5 @ 3×5×4" in out and "the floor caps an update" in out
