"""Throughput of one DreamerV3 update and one policy step: the fast path against eager float32.

    python benchmarks/throughput.py                      # size1m and the two reference widths
    python benchmarks/throughput.py --sizes size12m --image --action-dim 3
    python benchmarks/throughput.py --variants eager-float32 eager-bfloat16 compiled-float32 \
        compiled-bfloat16                                # what each lever gives on its own

Each size runs in its own subprocess. Inside it, one agent per variant (same seed, same weights at
the start) is built, the compiled ones are compiled (the seconds are printed separately), and then
the variants' updates are timed *interleaved* (A, B, A, B, …) on one fixed synthetic batch, so a
machine that speeds up or slows down during the run affects all variants alike. The first variant
is the baseline of the printed ratios. A variant is ``eager`` or ``compiled`` and a precision
(``float32``, ``bfloat16`` or ``auto``, the default: bfloat16 where the hardware has it). Levers
under test, all compiled: ``region`` (the whole imagination as one graph), ``pywrapper`` (every
graph called by inductor's Python wrapper: the policy step as it was before its C++ wrapper),
``cppwrapper`` (every graph, the update's too, called by a C++ wrapper), ``plainlinear``
(every ``Linear`` multiplied as ``nn.Linear`` does, without the float32 row blocks and padded
width of ``dreamer.networks.Linear``), ``wideblocks`` (the float32 row blocks only for inputs
256 or more wide: the heads' first layers on the imagined states, not their 64-wide layers) and
``simd256`` (inductor's C++ kernels vectorised 256 bits wide, ``cpp.simdlen``: an AVX2 CPU's
width, where inductor picks 512 on an AVX-512 one).

Per variant it prints seconds per update (median), the ratio to the baseline, the phases of an
update (world-model forward, imagination, behaviour forward, backward, optimiser), the achieved
rate (the update's float32 FLOPs, matmuls and convolutions forward + backward counted by torch's
FlopCounterMode, over seconds) as a fraction of this process's float32 matmul peak (2048³
matmuls, best of several), and the policy step at batch 1 (what ``Agent.act`` costs an env step).
The batch is Pendulum-shaped (3-D vector observation, 1-D continuous action) unless ``--image`` /
``--action-dim`` are given. ``--device cuda`` times the same on a GPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name → (model.size, overrides): the reference port's three measured configurations.
PRESETS = {
    "size1m": ("size1m", {}),  # deter 512, hidden 64, 32×4 latents, units 64
    "size1m-c16-u128": ("size1m", {"classes": 16, "units": 128}),  # deter 512, 32×16, units 128
    "size12m": ("size12m", {}),
}
PHASES = {  # phase name → (attribute path on the agent, method)
    "world model forward": ("world_model", "loss"),
    "imagination": ("actor_critic", "imagine"),
    "behaviour forward": ("actor_critic", "losses"),
    "backward": ("optimizer", "backward"),
    "optimiser": ("optimizer", "step"),
}


WRAPPERS = {"pywrapper": False, "cppwrapper": True}  # lever → inductor's cpp_wrapper
LEVERS = ("eager", "compiled", "region", "plainlinear", "wideblocks", "simd256", *WRAPPERS)


def matmul_peak(dtype, n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Best FLOP/s of an n³ matmul in ``dtype``."""
    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class PhaseTimer:
    """Accumulates wall time of wrapped callables by phase name."""

    def __init__(self, device: str):
        self.seconds: dict[str, float] = {}
        self.device = device

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            _sync(self.device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync(self.device)
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        return timed


def synthetic(args):
    """The env spec and one fixed (B, T) batch."""
    import torch

    from dreamer.envs import EnvSpec
    from dreamer.replay import Batch

    if args.image:
        shapes, image_keys, vector_keys = {"image": (64, 64, 3)}, ("image",), ()
    else:
        shapes, image_keys, vector_keys = {"vector": (3,)}, (), ("vector",)
    A = args.action_dim
    spec = EnvSpec(
        shapes,
        image_keys,
        vector_keys,
        action_dim=A,
        discrete=False,
        action_low=(-1.0,) * A,
        action_high=(1.0,) * A,
        env_id="synthetic",
    )
    B, T = args.batch, args.length
    g = torch.Generator().manual_seed(0)
    obs = (
        {"image": torch.randint(0, 256, (B, T, 64, 64, 3), generator=g, dtype=torch.uint8)}
        if args.image
        else {"vector": torch.randn(B, T, 3, generator=g)}
    )
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    flags = torch.zeros(B, T, dtype=torch.bool)
    batch = Batch(
        obs,
        torch.rand(B, T, A, generator=g) * 2 - 1,
        torch.randn(B, T, generator=g),
        is_first,
        flags,
        flags,
    )
    return spec, batch


def measure(name: str, args) -> dict:
    """All figures for one size and every variant, in this process."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import dreamer.compiled
    from dreamer.agent import Agent
    from dreamer.compiled import use_cache_dir
    from dreamer.config import config_from_dict, override
    from dreamer.networks import Linear

    torch.set_num_threads(args.threads)
    use_cache_dir(ROOT / ".cache" / "torch")  # as the pipeline: a second run reuses the kernels
    size, overrides = PRESETS.get(name, (name, {}))
    spec, batch = synthetic(args)
    agents, timers, compile_seconds = {}, {}, {}
    for variant in args.variants:
        lever, precision = variant.split("-")
        torch.manual_seed(0)
        mode = "eager" if lever == "eager" else "compiled"
        cfg = config_from_dict(
            {
                "device": args.device,
                "precision": precision,
                "compile": mode == "compiled",
                "model": {"size": size, **overrides},
                "training": {"batch_size": args.batch, "batch_length": args.length},
            }
        )
        agent = Agent(spec, cfg)
        if lever == "plainlinear":  # float32 layers as nn.Linear multiplies them
            for module in agent.modules():
                if isinstance(module, Linear):
                    module.reshape_float32 = False
        if lever == "wideblocks":  # float32 row blocks for wide inputs only
            for module in agent.modules():
                if isinstance(module, Linear) and module.in_features < 256:
                    module.ROW_BLOCK = sys.maxsize  # no rows fill a block
        if lever in WRAPPERS:  # every marked method compiled with (or without) the C++ wrapper
            options = {"options": {"cpp_wrapper": WRAPPERS[lever]}}
            with mock.patch.object(dreamer.compiled, "_lever", lambda mark, device, o=options: o):
                compile_seconds[variant] = agent.compile(num_envs=1)
        elif lever == "simd256":  # every marked method's kernels 256 bits wide, wrapper as marked
            lever_of = dreamer.compiled._lever

            def narrow(mark, device, lever_of=lever_of):
                chosen = lever_of(mark, device)
                if device.type != "cpu":
                    return chosen
                return {"options": {**chosen.get("options", {}), "cpp.simdlen": 256}}

            with mock.patch.object(dreamer.compiled, "_lever", narrow):
                compile_seconds[variant] = agent.compile(num_envs=1)
        elif cfg.compile:
            compile_seconds[variant] = agent.compile(num_envs=1)
        if lever == "region":  # the H-step imagination as one graph, not H
            ac = agent.actor_critic
            ac.imagine = torch.compile(
                functools.partial(type(ac).imagine, ac), fullgraph=True, dynamic=False
            )
        timer = PhaseTimer(args.device)
        for phase, (owner, method) in PHASES.items():
            target = getattr(agent, owner)
            setattr(target, method, timer.wrap(phase, getattr(target, method)))
        agents[variant], timers[variant] = agent, timer

    for _ in range(args.warmup):
        for agent in agents.values():
            agent.train_step(batch)
    for timer in timers.values():
        timer.seconds.clear()
    times = {variant: [] for variant in agents}
    for _ in range(args.repeats):  # interleaved: drift of the machine hits every variant alike
        for variant, agent in agents.items():
            _sync(args.device)
            start = time.perf_counter()
            agent.train_step(batch)
            _sync(args.device)
            times[variant].append(time.perf_counter() - start)

    baseline = agents[args.variants[0]]
    counted = Agent(spec, override(baseline.cfg, precision="float32", compile=False))
    counter = FlopCounterMode(display=False)
    with counter:  # the model's float32 FLOPs: the same work for every variant
        counted.train_step(batch)
    flops = counter.get_total_flops()
    del counted
    peak32 = matmul_peak(torch.float32, device=args.device)
    peak16 = matmul_peak(torch.bfloat16, device=args.device)

    one = {k: v[:1, 0].numpy() for k, v in batch.obs.items()}
    first = np.array([False])
    policy_ms = {}
    for variant, agent in agents.items():
        state = agent.initial_state(1)
        for _ in range(20):
            _, state = agent.act(one, first, state)
        start = time.perf_counter()
        for _ in range(args.policy_steps):
            _, state = agent.act(one, first, state)
        policy_ms[variant] = 1e3 * (time.perf_counter() - start) / args.policy_steps

    base_seconds = statistics.median(times[args.variants[0]])
    results = {}
    for variant, agent in agents.items():
        seconds = statistics.median(times[variant])
        phases = {k: v / args.repeats for k, v in timers[variant].seconds.items()}
        phases["other (batch, metrics sync, slow critic)"] = max(
            0.0, sum(times[variant]) / args.repeats - sum(phases.values())
        )
        results[variant] = {
            "matmul_dtype": str(agent.matmul_dtype).removeprefix("torch."),
            "seconds_per_update": round(seconds, 4),
            "seconds_min_max": [round(min(times[variant]), 4), round(max(times[variant]), 4)],
            "speedup": round(base_seconds / seconds, 2),
            "achieved_gflops": round(flops / seconds / 1e9, 1),
            "fraction_of_float32_peak": round(flops / seconds / peak32, 3),
            "phases_seconds": {k: round(v, 4) for k, v in phases.items()},
            "policy_ms": round(policy_ms[variant], 3),
            "compile_seconds": round(compile_seconds.get(variant, 0.0), 1),
        }
    return {
        "size": name,
        "params_million": round(sum(p.numel() for p in baseline.parameters()) / 1e6, 3),
        "widths": {
            k: getattr(baseline.cfg.model, k)
            for k in ("deter", "hidden", "units", "stoch", "classes", "blocks", "layers")
        },
        "update_gflop": round(flops / 1e9, 2),
        "matmul_peak_gflops": {
            "float32": round(peak32 / 1e9, 1),
            "bfloat16": round(peak16 / 1e9, 1),
        },
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "variants": results,
    }


def report(r: dict, variants: list[str]) -> None:
    peaks = r["matmul_peak_gflops"]
    print(
        f"{r['size']}: {r['params_million']:.2f}M params, {r['update_gflop']:.1f} GFLOP per "
        f"update; matmul peak {peaks['float32']:.0f} GFLOP/s float32, {peaks['bfloat16']:.0f} "
        f"bfloat16; process peak RSS {r['peak_rss_mib']:.0f} MiB"
    )
    for variant in variants:
        v = r["variants"][variant]
        compiled = f", compiled in {v['compile_seconds']:.1f} s" if v["compile_seconds"] else ""
        if compiled and variant.startswith("region"):  # torch.compile'd after Agent.compile
            compiled += " (+ the one-graph imagination, in the untimed warm-up)"
        print(
            f"  {variant:<18} {v['seconds_per_update']:.3f} s/update "
            f"({v['seconds_min_max'][0]:.3f}–{v['seconds_min_max'][1]:.3f}) "
            f"{v['speedup']:.2f}×  {v['achieved_gflops']:.0f} GFLOP/s = "
            f"{100 * v['fraction_of_float32_peak']:.0f}% of float32 peak  "
            f"policy {v['policy_ms']:.3f} ms/step  matmuls {v['matmul_dtype']}{compiled}"
        )
        for phase, seconds in v["phases_seconds"].items():
            print(
                f"{'':>22}{phase:<42} {seconds:.3f} s "
                f"({100 * seconds / v['seconds_per_update']:.0f}%)"
            )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sizes",
        nargs="+",
        default=list(PRESETS),
        help=f"model.size presets or {', '.join(PRESETS)}",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=["eager-float32", "compiled-auto"],
        help=f"{{{','.join(LEVERS)}}}-{{float32,bfloat16,auto}}; the first is the baseline (the "
        "levers are described in this script's docstring)",
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--policy-steps", type=int, default=300)
    p.add_argument(
        "--image",
        action="store_true",
        help="64×64×3 image observations (CarRacing preset: --image --action-dim 3)",
    )
    p.add_argument("--action-dim", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = p.parse_args(argv)
    for variant in args.variants:
        lever, _, precision = variant.partition("-")
        if lever not in LEVERS or precision not in ("float32", "bfloat16", "auto"):
            p.error(
                f"--variants: {variant!r} is not {{{','.join(LEVERS)}}}-{{float32,bfloat16,auto}}"
            )
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    results = []
    for name in args.sizes:
        forwarded = sys.argv[1:] if argv is None else list(argv)
        done = subprocess.run(
            [sys.executable, __file__, *forwarded, "--one", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"{name}: {done.stderr.strip().splitlines()[-1]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if not args.json:
            report(results[-1], args.variants)
    if args.json:
        print(
            json.dumps(
                {
                    "batch": args.batch,
                    "length": args.length,
                    "threads": args.threads,
                    "image": args.image,
                    "device": args.device,
                    "results": results,
                }
            )
        )


if __name__ == "__main__":
    main()
