"""Where the compiled update's time goes: torch.profiler over a few updates, by operator.

    python benchmarks/profile_update.py                          # size1m, precision auto
    python benchmarks/profile_update.py --precision float32      # what an AVX2-only CPU runs

Builds the agent as ``benchmarks/throughput.py`` does (the same synthetic Pendulum-shaped batch,
B 16 × T 64), compiles it with inductor's per-kernel profiling on (so each fused C++ kernel shows
under its own name; this changes the generated code's hash, so the first run compiles cold), runs
a few untimed updates, then profiles ``--updates`` updates and prints the operators by self CPU
time: which matmuls (``aten::mm``/``addmm``, oneDNN ``mkldnn`` ones), which fused elementwise
kernels (``cpp_fused_*``), and what is left to Python and autograd.
"""

from __future__ import annotations

import argparse
import sys
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
    args = p.parse_args(argv)

    import torch
    import torch._inductor.config as inductor
    from throughput import synthetic
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
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.updates):
            agent.train_step(batch)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    print(f"# {args.updates} updates, {args.size}, precision {args.precision}")
    print(table)


if __name__ == "__main__":
    main()
