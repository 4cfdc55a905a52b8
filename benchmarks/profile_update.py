"""Where the compiled update's time goes: torch.profiler over a few updates, by operator.

    python benchmarks/profile_update.py                          # size1m, precision auto
    python benchmarks/profile_update.py --precision float32      # what an AVX2-only CPU runs

Builds the agent as ``benchmarks/throughput.py`` does (the same synthetic Pendulum-shaped batch,
B 16 × T 64), compiles it with inductor's per-kernel profiling on (so each fused C++ kernel shows
under its own name; this changes the generated code's hash, so the first run compiles cold), runs
a few untimed updates, then profiles ``--updates`` updates and prints the operators by self CPU
time: which matmuls (``aten::mm``/``addmm``, oneDNN ``mkldnn`` ones), which fused elementwise
kernels (``cpp_fused_*``), and what is left to Python and autograd.

    python benchmarks/profile_update.py --precision float32 --matmuls   # the update's matmul floor

With ``--matmuls`` it then lists every matmul shape the update ran (``aten::mm``/``addmm``/``bmm``,
grouped by shapes, strides and dtypes, with their calls and FLOPs per update), times each shape
again alone on fresh tensors of the same shapes, strides and dtypes, and sums them: the *matmul
floor*, what one update's matmuls cost at this model's shapes on this BLAS with nothing else
around them. FLOPs over (floor × this process's float32 matmul peak) is the most an update of
these shapes could reach of the peak if everything but its matmuls took no time at all; the last
line weighs the unprofiled update (median of ``--updates``) against ``--target`` of the peak: how
many seconds that target leaves for everything that is not a matmul.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="size1m")
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--updates", type=int, default=5)
    p.add_argument("--rows", type=int, default=30, help="operators to print")
    p.add_argument("--matmuls", action="store_true", help="also the matmul shapes and their floor")
    p.add_argument("--target", type=float, default=0.6, help="fraction of the peak to weigh")
    args = p.parse_args(argv)

    import torch
    import torch._inductor.config as inductor
    from throughput import matmul_peak, synthetic
    from torch.profiler import ProfilerActivity, profile

    from dreamer.agent import Agent
    from dreamer.compiled import use_cache_dir
    from dreamer.config import config_from_dict

    torch.set_num_threads(args.threads)
    use_cache_dir(ROOT / ".cache" / "torch-profile")  # its kernels differ: not the pipeline's cache
    inductor.cpp.enable_kernel_profile = True
    shape = argparse.Namespace(image=False, action_dim=1, batch=16, length=64)
    spec, batch = synthetic(shape)
    torch.manual_seed(0)
    cfg = config_from_dict(
        {
            "precision": args.precision,
            "compile": True,
            "model": {"size": args.size},
            "training": {"batch_size": 16, "batch_length": 64},
        }
    )
    agent = Agent(spec, cfg)
    print(f"compiled in {agent.compile(num_envs=1):.1f} s; matmuls {agent.matmul_dtype}")
    for _ in range(3):
        agent.train_step(batch)
    times = []
    for _ in range(args.updates):  # unprofiled, for the floor's comparison
        start = time.perf_counter()
        agent.train_step(batch)
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.matmuls) as prof:
        for _ in range(args.updates):
            agent.train_step(batch)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    print(f"# {args.updates} updates, {args.size}, precision {args.precision}")
    print(table)
    if args.matmuls:
        peak = matmul_peak(torch.float32)
        update_seconds = statistics.median(times)
        matmul_floor(matmul_groups(prof.events()), args.updates, update_seconds, peak, args.target)


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def matmul_flops(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """FLOPs of one matmul of operands shaped ``a (…, M, K)`` and ``b (…, K, N)``: 2·M·K·N
    (times the batch of a ``bmm``)."""
    batch = a[0] if len(a) == 3 else 1
    return 2 * batch * a[-2] * a[-1] * b[-1]


def matmul_groups(events) -> dict[tuple, list[float]]:
    """Profiled matmul calls grouped by (op, operand shapes, strides, dtypes): self seconds each."""
    groups: dict[tuple, list[float]] = {}
    for e in events:
        if e.name not in MATMULS:
            continue
        operands = range(1, 3) if e.name == "aten::addmm" else range(2)  # addmm: bias first
        key = (
            e.name,
            tuple(tuple(e.input_shapes[i]) for i in operands),
            tuple(tuple(e.structured_input_strides[i]) for i in operands),
            tuple(e.input_dtypes[i].replace("c10::", "").lower() for i in operands),
        )
        groups.setdefault(key, []).append(e.self_cpu_time_total / 1e6)
    return groups


def matmul_floor(
    groups: dict[tuple, list[float]],
    updates: int,
    update_seconds: float,
    peak: float,
    target: float,
) -> dict[str, float]:
    """Time each group's matmul alone (fresh operands of its shapes, strides and dtypes), print the
    table and the floor, and return the totals per update."""
    import torch
    from levers import timed

    rows, total = [], {"flops": 0.0, "in_update": 0.0, "alone": 0.0}
    for (name, shapes, strides, dtypes), seconds in groups.items():
        a, b = (
            torch.randn(1 + sum((n - 1) * s for n, s in zip(sh, st)))
            .to(getattr(torch, dt))
            .as_strided(sh, st)
            for sh, st, dt in zip(shapes, strides, dtypes, strict=True)
        )
        fn = torch.bmm if name == "aten::bmm" else torch.mm
        calls = len(seconds) / updates
        row = {
            "flops": matmul_flops(*shapes) * calls,
            "in_update": sum(seconds) / updates,
            "alone": timed(lambda fn=fn, a=a, b=b: fn(a, b), repeats=20) * calls,
        }
        rows.append((row["in_update"], name, shapes, dtypes[0], calls, row))
        for k in total:
            total[k] += row[k]
    print("\n# matmuls per update by shape, most of the update's matmul time first")
    print(
        f"{'op':5} {'operands':32} {'dtype':8} {'calls':>5} {'GFLOP':>6} "
        f"{'ms in update':>12} {'ms alone':>9} {'GFLOP/s alone':>13}"
    )
    for _, name, shapes, dtype, calls, row in sorted(rows, key=lambda r: -r[0]):
        text = " @ ".join("×".join(map(str, sh)) for sh in shapes)
        print(
            f"{name[6:]:5} {text:32} {dtype:8} {calls:5.0f} {row['flops'] / 1e9:6.2f} "
            f"{row['in_update'] * 1e3:12.1f} {row['alone'] * 1e3:9.1f} "
            f"{row['flops'] / row['alone'] / 1e9:13.0f}"
        )
    flops, floor = total["flops"], total["alone"]
    at_target = flops / (target * peak)
    print(
        f"all: {flops / 1e9:.2f} GFLOP per update in matmuls, {total['in_update']:.3f} s of them "
        f"in the update (profiled), {floor:.3f} s alone (the floor) = {flops / floor / 1e9:.0f} "
        f"GFLOP/s; float32 matmul peak {peak / 1e9:.0f} GFLOP/s\n"
        f"the floor caps an update of these shapes at {flops / floor / peak:.0%} of the peak; "
        f"the update took {update_seconds:.3f} s unprofiled ({flops / update_seconds / peak:.0%}), "
        f"so {update_seconds - floor:.3f} s went to everything but the matmuls' floor; at "
        f"{target:.0%} of the peak an update takes {at_target:.3f} s, which leaves "
        f"{at_target - floor:.3f} s for everything else"
    )
    return total


if __name__ == "__main__":
    main()
