"""Collection speed: env steps/s through the adapter with 1, 2, … parallel environments.

    python benchmarks/env_steps.py                       # CarRacing-v3, 1 and 2 envs
    python benchmarks/env_steps.py --env Pendulum-v1 --num-envs 1 2 4 --json

Steps a random policy through ``dreamer.env_pool.make_envs`` and the replay-filling ``Collector``
(adapter conversion and 64×64 resizing included, as in training) for ``--steps`` env steps
after ``--warmup`` untimed ones, and prints env steps/s per setting and the speed-up over one env.
One env runs in this process; more run in subprocesses (gymnasium ``AsyncVectorEnv``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(env_id: str, num_envs: int, steps: int, warmup: int) -> dict:
    from dreamer.config import EnvConfig
    from dreamer.env_pool import make_envs
    from dreamer.loop import Collector, random_policy
    from dreamer.replay import ReplayBuffer

    cfg = EnvConfig(id=env_id, num_envs=num_envs)
    with make_envs(cfg, seed=0) as envs:
        replay = ReplayBuffer(envs.spec, capacity=steps + warmup + 1000)
        collector, policy = Collector(envs, replay, seed=0), random_policy(envs)
        while collector.env_steps < warmup:
            collector.step(policy)
        start, first = time.perf_counter(), collector.env_steps
        while collector.env_steps - first < steps:
            collector.step(policy)
        seconds = time.perf_counter() - start
    done = collector.env_steps - first
    return {
        "env_id": env_id,
        "num_envs": num_envs,
        "env_steps": done,
        "seconds": round(seconds, 2),
        "env_steps_per_second": round(done / seconds, 1),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="CarRacing-v3")
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    results = []
    for n in args.num_envs:
        results.append(measure(args.env, n, args.steps, args.warmup))
        r = results[-1]
        r["speedup"] = round(r["env_steps_per_second"] / results[0]["env_steps_per_second"], 2)
        if not args.json:
            print(
                f"{r['env_id']}: {n} env(s)  {r['env_steps_per_second']:.0f} env steps/s  "
                f"({r['speedup']:.2f}x one env; {r['env_steps']} steps in {r['seconds']} s)",
                flush=True,
            )
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
