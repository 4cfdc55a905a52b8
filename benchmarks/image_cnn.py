"""What the official image encoder/decoder layout costs, A/B in this process.

    python benchmarks/image_cnn.py [--depth 4] [--images 1024] [--threads 2]

Times forward + backward of encoder and decoder on ``--images`` 64×64×3 frames (B·T of one update
at 16 × 64) for the current networks (``dreamer.networks``: k5 convolutions with 2×2 max-pooling in,
a block-diagonal first map and 2× upsampling + k5 convolutions out, sigmoid) against the earlier
layout kept here for the comparison (k4 stride-2 convolutions in, k4 stride-2 transposed
convolutions out, linear output), eagerly in float32, alternating the two so machine noise hits
both alike.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def stride2_layout(depth: int, feature_dim: int):
    """The encoder/decoder before the official layout: k4 stride-2 (transposed) convolutions."""
    from torch import nn

    from dreamer.networks import CNN_MULTIPLIERS, ChannelNorm

    encoder, channels = [], 3
    for mult in CNN_MULTIPLIERS:
        encoder += [
            nn.Conv2d(channels, depth * mult, 4, 2, 1, bias=False),
            ChannelNorm(depth * mult),
            nn.SiLU(),
        ]
        channels = depth * mult
    start = (depth * CNN_MULTIPLIERS[-1], 4, 4)
    decoder = [nn.Linear(feature_dim, math.prod(start)), nn.Unflatten(1, start)]
    channels = start[0]
    for mult in reversed(CNN_MULTIPLIERS[:-1]):
        decoder += [
            nn.ConvTranspose2d(channels, depth * mult, 4, 2, 1, bias=False),
            ChannelNorm(depth * mult),
            nn.SiLU(),
        ]
        channels = depth * mult
    decoder.append(nn.ConvTranspose2d(channels, 3, 4, 2, 1))
    return nn.Sequential(*encoder, nn.Flatten()), nn.Sequential(*decoder)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=4, help="CNN base channels (size1m: 4)")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)

    import torch

    from dreamer.networks import ImageDecoder, ImageEncoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    deter, stoch_flat = 512, 128  # size1m
    N = args.images
    images = torch.randint(0, 256, (N, 64, 64, 3), dtype=torch.uint8)
    feat = torch.randn(N, deter + stoch_flat)
    target = images.float() / 255

    official = (
        ImageEncoder((64, 64, 3), args.depth),
        ImageDecoder(deter, stoch_flat, (64, 64, 3), args.depth, units=64),
    )
    strided = stride2_layout(args.depth, deter + stoch_flat)

    def step_official():
        enc, dec = official
        loss = enc(images).square().mean() + (dec(feat) - target).square().sum((1, 2, 3)).mean()
        loss.backward()

    def step_strided():
        enc, dec = strided
        x = images.permute(0, 3, 1, 2).float() / 255 - 0.5
        prediction = dec(feat).permute(0, 2, 3, 1)
        loss = enc(x).square().mean() + (prediction - (target - 0.5)).square().sum((1, 2, 3)).mean()
        loss.backward()

    times = {"official (k5 + max-pool / upsample + k5)": [], "earlier (k4 stride 2)": []}
    steps = dict(zip(times, (step_official, step_strided)))
    for fn in steps.values():
        fn()  # untimed warm-up
    for _ in range(args.repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    params = [sum(p.numel() for m in pair for p in m.parameters()) for pair in (official, strided)]
    print(
        f"# encoder + decoder forward + backward, {N} images 64x64x3, depth {args.depth}, "
        f"float32 eager, {args.threads} threads, median of {args.repeats} alternating"
    )
    for (name, values), count in zip(times.items(), params):
        print(f"{name:42s} {statistics.median(values):7.3f} s   {count:,} parameters")
    first, second = (statistics.median(v) for v in times.values())
    print(f"ratio official / earlier: {first / second:.2f}x")


if __name__ == "__main__":
    main()
