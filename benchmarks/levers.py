"""The small measurements behind the fast path's design choices, each A/B in this process.

    python benchmarks/levers.py

- matmul: float32 against bfloat16 at the row counts the update has (1 row: the policy step;
  16: the RSSM filter; 1,024: imagination; 16,384: the heads on imagined states). bfloat16 only
  pays from a few hundred rows on: the filter and the policy step stay float32.
- percentiles: ``torch.quantile`` (sorts all 15,360 imagined returns) against selecting the two
  order statistics around each percentile (``dreamer.actor_critic.percentiles``).
- fresh memory: a new 42 MB tensor (the imagined features in float32) against reusing one: on this
  kind of VM each new page faults in, so the features are stored in bfloat16 (21 MB, reused by the
  allocator below glibc's 32 MB mmap threshold).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after a few untimed ones."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from dreamer.actor_critic import percentiles

    torch.set_num_threads(args.threads)
    print("matmul (rows × in → out): float32 µs, bfloat16 µs, bf16 speed-up")
    for rows, k, n in [
        (1, 640, 64),
        (16, 512, 64),
        (16, 192, 512),
        (1024, 192, 512),
        (1024, 640, 64),
        (16384, 640, 64),
    ]:
        us = {}
        for dtype in (torch.float32, torch.bfloat16):
            a, b = torch.randn(rows, k).to(dtype), torch.randn(k, n).to(dtype)
            us[dtype] = 1e6 * timed(lambda a=a, b=b: a @ b, 200 if rows < 10000 else 30)
        print(
            f"  {rows:>6} × {k:>3} → {n:<3}  {us[torch.float32]:9.1f}  "
            f"{us[torch.bfloat16]:9.1f}  {us[torch.float32] / us[torch.bfloat16]:5.2f}×"
        )

    returns, q = torch.randn(1024 * 15), (0.05, 0.95)
    quantile = timed(lambda: torch.quantile(returns, torch.tensor(q)), 200)
    select = timed(lambda: percentiles(returns, q), 200)
    same = torch.allclose(torch.quantile(returns, torch.tensor(q)), percentiles(returns, q))
    print(
        f"percentiles of 15,360 returns: torch.quantile {1e6 * quantile:.0f} µs, order-statistic "
        f"selection {1e6 * select:.0f} µs ({quantile / select:.1f}×; equal: {same})"
    )

    parts = [torch.randn(1024, 640) for _ in range(16)]
    out = torch.empty(1024, 16, 640)
    fresh = timed(lambda: torch.stack(parts, 1), 30)
    reused = timed(lambda: torch.stack(parts, 1, out=out), 30)
    half = [x.bfloat16() for x in parts]
    bf16 = timed(lambda: torch.stack(half, 1), 30)
    print(
        f"stacking 16 × (1024, 640) features: float32 into a fresh 42 MB tensor "
        f"{1e3 * fresh:.1f} ms, into a reused one {1e3 * reused:.1f} ms, bfloat16 (21 MB) "
        f"{1e3 * bf16:.1f} ms"
    )


if __name__ == "__main__":
    main()
