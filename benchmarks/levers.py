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
- heads on the 16,384 imagined states: a 640 → 64 first layer whole against 16 row blocks of 1,024
  (one batched matmul with the weight broadcast), and a 64 → 255 two-hot output as it is against
  padded to 256 outputs and sliced back (forward, and forward + backward of a cross-entropy on it),
  each pair interleaved. Both pay in float32 only, so ``dreamer.networks.Linear`` does both in
  float32 on CPU and neither under autocast (study ``head_shapes``).
- row blocks by width: float32 16,384 × in → out whole against in 1,024-row blocks, forward,
  with the weight's gradient and with both gradients, for inputs 64 to 640 wide.
- MKL against oneDNN: each float32 linear shape of the update (forward, input gradient, weight
  gradient) through ATen's matmul (MKL) and through oneDNN's inner product
  (``torch.ops.mkldnn._linear_pointwise``), interleaved. (Both: study ``linear_levers``.)
- layout of the imagined features: the 16 states' (1,024, 640) features stacked batch-major
  (1,024, 16, 640), as ``ActorCritic.imagine`` does, against time-major (16, 1,024, 640); the heads
  multiply either as the same (16,384, 640) rows, so the stack is where a layout can differ.

    python benchmarks/levers.py --parts row_blocks onednn      # some parts only
"""

from __future__ import annotations

import argparse
import functools
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


def timed_pair(fa, fb, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fa()`` and of ``fb()``, called alternately (A, B, A, B, …) so that a
    machine speeding up or slowing down meanwhile hits both alike."""
    for _ in range(3):
        fa(), fb()
    times = ([], [])
    for _ in range(repeats):
        for fn, out in zip((fa, fb), times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    for part in args.parts:
        PARTS[part]()


def precision_and_memory() -> None:
    """float32 against bfloat16 by row count, percentiles, fresh against reused memory."""
    import torch

    from dreamer.actor_critic import percentiles

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


def heads_on_imagined_states() -> None:
    """Row blocks for the 640 → 64 layer and a 16-aligned width for the 255-bin output.

    The two-hot output is timed as the update runs it: float32 weights, bfloat16 by autocast,
    eager and torch.compile'd, forward alone and with a cross-entropy's backward."""
    import torch
    import torch.nn.functional as F

    rows, blocks = 16384, 16
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(rows, 640, generator=g), torch.randn(64, 640, generator=g)
    h = torch.randn(rows, 64, generator=g)
    w2 = (0.1 * torch.randn(255, 64, generator=g)).requires_grad_()
    b2 = torch.zeros(255, requires_grad=True)
    target = torch.softmax(torch.randn(rows, 255, generator=g), -1)

    def two_hot_loss(h, weight, bias, padded: bool):
        if padded:  # zero rows up to 256 outputs, sliced off again
            weight, bias = F.pad(weight, (0, 0, 0, 1)), F.pad(bias, (0, 1))
        logits = F.linear(h, weight, bias)[:, :255].float()
        return -(target * torch.log_softmax(logits, -1)).sum(-1).mean()

    def two_hot_ms(fn, low: bool, backward: bool) -> tuple[float, float, bool]:
        """ms as is and padded (interleaved), forward alone or with a backward; equal losses?"""
        cast = functools.partial(torch.autocast, "cpu", torch.bfloat16, enabled=low)

        def run(padded: bool):
            with cast(), torch.set_grad_enabled(backward):
                loss = fn(h, w2, b2, padded)
            if backward:
                loss.backward()
            return loss.detach()

        same = torch.equal(run(False), run(True))
        a, b = timed_pair(lambda: run(False), lambda: run(True), 60)
        return 1e3 * a, 1e3 * b, same

    compiled = torch.compile(two_hot_loss, dynamic=False)
    print("heads on 16,384 imagined states, ms (float32 | bfloat16 by autocast)")
    for low in (False, True):
        name = "bfloat16" if low else "float32"
        xs, ws = (x.bfloat16(), w.bfloat16()) if low else (x, w)
        wt = ws.t().expand(blocks, 640, 64)  # (16, 640, 64), stride 0 over the blocks
        whole, blocked = timed_pair(
            lambda xs=xs, ws=ws: xs @ ws.t(),
            lambda xs=xs, wt=wt: torch.bmm(xs.view(blocks, -1, 640), wt),
            60,
        )
        print(
            f"  {name:<8} 640 → 64 whole {1e3 * whole:6.2f}, "
            f"in {blocks} row blocks {1e3 * blocked:6.2f}"
        )
        for label, fn in (("eager", two_hot_loss), ("compiled", compiled)):
            fwd, fwd_p, same = two_hot_ms(fn, low, backward=False)
            step, step_p, _ = two_hot_ms(fn, low, backward=True)
            print(
                f"  {name:<8} 64 → 255 + loss, {label:<8}: forward {fwd:6.2f} as is, {fwd_p:6.2f} "
                f"padded to 256 (equal: {same}); with backward {step:6.2f} against {step_p:6.2f}"
            )


def row_blocks_by_width() -> None:
    """16,384 rows × in → out in float32, whole against 1,024-row blocks (one bmm, the weight
    broadcast, the bias added after): forward, with the weight's gradient (a layer on detached
    features), with the input's too (a layer inside a head)."""
    import torch
    import torch.nn.functional as F

    rows, block = 16384, 1024
    g = torch.Generator().manual_seed(0)
    print("float32 16,384 rows, whole | 1,024-row blocks, ms (speed-up of blocks)")
    for k, n in [(64, 64), (128, 64), (256, 64), (384, 64), (640, 64), (64, 256), (640, 256)]:
        x, grad = torch.randn(rows, k, generator=g), torch.randn(rows, n, generator=g)
        w = torch.randn(n, k, generator=g).requires_grad_()
        b = torch.zeros(n).requires_grad_()

        def whole(x, w=w, b=b):
            return F.linear(x, w, b)

        def blocks(x, w=w, b=b, k=k, n=n):
            xs = x.view(-1, block, k)  # (16, 1024, k)
            return torch.bmm(xs, w.t().expand(len(xs), -1, -1)).view(rows, n) + b

        cells = []
        for name, grads in (("forward", None), ("weight grad", False), ("both grads", True)):

            def run(layer, x=x, grads=grads, grad=grad):
                x = x.detach().requires_grad_(bool(grads))
                y = layer(x)
                if grads is not None:
                    y.backward(grad)

            a, c = timed_pair(lambda run=run: run(whole), lambda run=run: run(blocks), 30)
            cells.append(f"{name} {1e3 * a:6.2f} | {1e3 * c:6.2f} ({a / c:.2f}×)")
        print(f"  {k:>4} → {n:<4} " + "   ".join(cells))


def mkl_against_onednn() -> None:
    """The update's float32 linear shapes through ATen's matmul (MKL here) and through oneDNN's
    inner product, which ATen uses for float32 only with reduced-precision math allowed."""
    import torch

    onednn = torch.ops.mkldnn._linear_pointwise  # (x (M, K), w (N, K), bias) → x @ w.T
    g = torch.Generator().manual_seed(0)
    print("float32 x (M × K) @ w.T (K → N), µs: MKL | oneDNN (speed-up of oneDNN)")
    print(
        "  forward: x @ w.T; input grad: grad (M × N) @ w; weight grad: grad.T @ x; forward in "
        "blocks: the forward as Linear computes it on 16,384 rows (1,024-row blocks, one bmm)"
    )
    for m, k, n in [
        (1, 640, 64),  # the policy step's actor
        (16, 512, 64),  # the filter's steps
        (16, 192, 512),
        (1024, 192, 512),  # imagination's GRU input layer, the replay batch's layers
        (1024, 512, 64),
        (1024, 640, 64),
        (1024, 64, 256),
        (16384, 640, 64),  # the heads on the imagined states
        (16384, 64, 64),
        (16384, 64, 256),
    ]:
        x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
        grad = torch.randn(m, n, generator=g)
        operands = {  # MKL's torch.mm(a, b) as autograd calls it; oneDNN's inner product c @ d.T
            "forward": ((x, w.t()), (x, w)),
            "input grad": ((grad, w), (grad, w.t().contiguous())),
            "weight grad": ((grad.t(), x), (grad.t(), x.t())),
        }
        cells = []
        for name, ((a, b), (c, d)) in operands.items():
            mkl, dnn = timed_pair(
                lambda a=a, b=b: torch.mm(a, b),
                lambda c=c, d=d: onednn(c, d, None, "none", [], ""),
                200 if m < 10000 else 30,
            )
            cells.append(f"{name} {1e6 * mkl:8.1f} | {1e6 * dnn:8.1f} ({mkl / dnn:.2f}×)")
        if m > 1024:  # as Linear multiplies these rows: 1,024-row blocks, one bmm (MKL)
            blocks, wt = x.view(-1, 1024, k), w.t().expand(m // 1024, k, n)
            mkl, dnn = timed_pair(
                lambda blocks=blocks, wt=wt: torch.bmm(blocks, wt),
                lambda x=x, w=w: onednn(x, w, None, "none", [], ""),
                30,
            )
            cells.append(
                f"forward in blocks {1e6 * mkl:8.1f} | {1e6 * dnn:8.1f} ({mkl / dnn:.2f}×)"
            )
        print(f"  {m:>5} × {k:>3} → {n:<3}  " + "   ".join(cells))


def feature_layout() -> None:
    """Stacking the imagined features batch-major (the code) against time-major."""
    import torch

    g = torch.Generator().manual_seed(0)
    print("16 × (1,024, 640) imagined features stacked, ms: batch-major | time-major")
    for dtype in (torch.float32, torch.bfloat16):
        parts = [torch.randn(1024, 640, generator=g).to(dtype) for _ in range(16)]
        batch, time_ = timed_pair(
            lambda parts=parts: torch.stack(parts, 1), lambda parts=parts: torch.stack(parts, 0), 30
        )
        name = str(dtype).removeprefix("torch.")
        print(f"  {name:<8} {1e3 * batch:6.2f} | {1e3 * time_:6.2f} ({batch / time_:.2f}×)")


PARTS = {
    "precision": precision_and_memory,
    "heads": heads_on_imagined_states,
    "row_blocks": row_blocks_by_width,
    "onednn": mkl_against_onednn,
    "layout": feature_layout,
}


if __name__ == "__main__":
    main()
