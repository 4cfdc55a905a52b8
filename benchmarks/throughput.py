"""Throughput of one DreamerV3 update and one policy step, per model size, on this machine.

    python benchmarks/throughput.py                      # size1m and the two reference widths
    python benchmarks/throughput.py --sizes debug size12m --json

For each size (run in its own subprocess, so peak RSS is per size) it prints
- seconds per update (world model + behaviour, B × T replayed steps) and updates/s,
- where an update's time goes: world-model forward, world-model backward + optimiser,
  imagination (H steps from every posterior state), behaviour losses, behaviour backward + optimisers,
- the update's FLOPs (matmuls and convolutions, forward + backward, counted by torch's
  FlopCounterMode) and the fraction of this machine's float32 matmul peak that achieves,
- policy steps/s at batch 1 (acting in one env), parameter count and peak RSS.
The matmul peak is measured in the same process (float32 2048³ matmuls, best of several), so the
fraction is comparable across machines. Timings are the median of ``--repeats`` updates after
``--warmup`` untimed ones, on a fixed synthetic batch of a Pendulum-like spec (3-D vector
observation, 1-D continuous action) unless ``--image`` / ``--action-dim`` are given.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name → (model.size, overrides): the reference port's three measured configurations.
PRESETS = {
    "size1m": ("size1m", {}),  # deter 512, hidden 64, 32×4 latents, units 64
    "size1m-c16-u128": ("size1m", {"classes": 16, "units": 128}),  # deter 512, 32×16, units 128
    "size12m": ("size12m", {}),
}


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best float32 FLOP/s of an n³ matmul."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


class PhaseTimer:
    """Accumulates wall time of wrapped callables by phase name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        return timed


def measure(name: str, args) -> dict:
    """All figures for one size, in this process."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dreamer.agent import Agent
    from dreamer.config import config_from_dict
    from dreamer.envs import EnvSpec
    from dreamer.replay import Batch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size, overrides = PRESETS.get(name, (name, {}))
    cfg = config_from_dict({"model": {"size": size, **overrides},
                            "training": {"batch_size": args.batch, "batch_length": args.length}})
    if args.image:
        shapes, image_keys, vector_keys = {"image": (64, 64, 3)}, ("image",), ()
    else:
        shapes, image_keys, vector_keys = {"vector": (3,)}, (), ("vector",)
    A = args.action_dim
    spec = EnvSpec(shapes, image_keys, vector_keys, action_dim=A, discrete=False,
                   action_low=(-1.0,) * A, action_high=(1.0,) * A, env_id="synthetic")
    agent = Agent(spec, cfg)
    B, T = args.batch, args.length
    g = torch.Generator().manual_seed(0)
    obs = {"image": torch.randint(0, 256, (B, T, 64, 64, 3), generator=g, dtype=torch.uint8)} \
        if args.image else {"vector": torch.randn(B, T, 3, generator=g)}
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    flags = torch.zeros(B, T, dtype=torch.bool)
    batch = Batch(obs, torch.rand(B, T, A, generator=g) * 2 - 1, torch.randn(B, T, generator=g),
                  is_first, flags, flags)

    # Where the time goes: wrap the phases of Agent.train_step on this instance.
    timer = PhaseTimer()
    wm, ac = agent.world_model, agent.actor_critic
    wm.loss = timer.wrap("world model forward", wm.loss)
    ac.imagine = timer.wrap("imagination", ac.imagine)
    ac.loss = timer.wrap("behaviour forward (incl. imagination)", ac.loss)
    opt = agent.optimizers
    opt["world_model"].step = timer.wrap("world model backward + optimiser",
                                         opt["world_model"].step)
    for role in ("actor", "critic"):
        opt[role].step = timer.wrap("behaviour backward + optimisers", opt[role].step)

    for _ in range(args.warmup):
        agent.train_step(batch)
    timer.seconds.clear()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        agent.train_step(batch)
        times.append(time.perf_counter() - start)
    phases = {k: v / args.repeats for k, v in timer.seconds.items()}
    phases["behaviour forward (excl. imagination)"] = (
        phases.pop("behaviour forward (incl. imagination)") - phases["imagination"])
    total = sum(times) / len(times)
    phases["other (metrics, slow critic, batch)"] = max(0.0, total - sum(phases.values()))

    counter = FlopCounterMode(display=False)
    with counter:
        agent.train_step(batch)
    flops = counter.get_total_flops()

    policy_state = agent.initial_state(1)
    one = {k: v[:1, 0].numpy() for k, v in obs.items()}
    first = np.array([False])
    for _ in range(20):
        _, policy_state = agent.act(one, first, policy_state)
    start = time.perf_counter()
    for _ in range(args.policy_steps):
        _, policy_state = agent.act(one, first, policy_state)
    policy_rate = args.policy_steps / (time.perf_counter() - start)

    peak = matmul_peak(args.threads)
    seconds = statistics.median(times)
    return {
        "size": name,
        "params_million": round(sum(p.numel() for p in agent.parameters()) / 1e6, 3),
        "widths": {k: getattr(cfg.model, k) for k in
                   ("deter", "hidden", "units", "stoch", "classes", "blocks", "layers")},
        "seconds_per_update": round(seconds, 4),
        "updates_per_second": round(1 / seconds, 3),
        "phases_seconds": {k: round(v, 4) for k, v in phases.items()},
        "update_gflop": round(flops / 1e9, 2),
        "achieved_gflops": round(flops / seconds / 1e9, 1),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "fraction_of_peak": round(flops / seconds / peak, 3),
        "policy_steps_per_second": round(policy_rate, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=list(PRESETS),
                   help=f"model.size presets or {', '.join(PRESETS)}")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--policy-steps", type=int, default=300)
    p.add_argument("--image", action="store_true",
                   help="64×64×3 image observations (CarRacing preset: --image --action-dim 3)")
    p.add_argument("--action-dim", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    results = []
    for name in args.sizes:
        forwarded = sys.argv[1:] if argv is None else list(argv)
        done = subprocess.run([sys.executable, __file__, *forwarded, "--one", name],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{name}: {done.stderr.strip().splitlines()[-1]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if not args.json:
            r = results[-1]
            print(f"{r['size']:>16}: {r['params_million']:.2f}M params  "
                  f"{r['seconds_per_update']:.3f} s/update ({r['updates_per_second']:.2f}/s)  "
                  f"{r['update_gflop']:.1f} GFLOP  {r['achieved_gflops']:.0f} GFLOP/s = "
                  f"{100 * r['fraction_of_peak']:.0f}% of {r['matmul_peak_gflops']:.0f}  "
                  f"policy {r['policy_steps_per_second']:.0f} steps/s  "
                  f"RSS {r['peak_rss_mib']:.0f} MiB")
            for phase, seconds in r["phases_seconds"].items():
                print(f"{'':>18}{phase:<42} {seconds:.3f} s "
                      f"({100 * seconds / r['seconds_per_update']:.0f}%)")
    if args.json:
        print(json.dumps({"batch": args.batch, "length": args.length, "threads": args.threads,
                          "image": args.image, "results": results}))


if __name__ == "__main__":
    main()
