"""Training curves of DeepMind Control runs next to the official DreamerV3 scores at the same steps.

    python benchmarks/dmc_anchor_plot.py --task cartpole-balance \
        --curves benchmarks/results/dmc_cartpole_balance_seed*.csv --eval 675.6 \
        --out benchmarks/results/dmc_cartpole_balance.png

``--curves``: CSVs written by ``benchmarks/learning.py --curves`` (one per seed); ``--eval``: the
evaluation mean of each seed at the end of its budget (deterministic policy), drawn as points.
The official figures are the median (min–max) over 5 seeds of the official repository's
``scores/dmc_proprio-dreamerv3.json.gz`` (size1m, train ratio 1024, action repeat 1), as listed in
``../shared/ANCHORS.md``: they are the reference, not results of this project.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# env steps -> (median, min, max) of the official DreamerV3 over 5 seeds
OFFICIAL = {
    "cartpole-balance": {
        10_000: (289, 264, 382),
        20_000: (203, 196, 300),
        30_000: (370, 294, 467),
        50_000: (513, 369, 554),
        100_000: (788, 752, 966),
    },
    "cartpole-swingup": {
        10_000: (61, 47, 82),
        20_000: (199, 137, 213),
        30_000: (261, 197, 293),
        50_000: (279, 265, 457),
        100_000: (512, 502, 599),
    },
    "cartpole-balance_sparse": {
        10_000: (41, 22, 43),
        20_000: (19, 13, 23),
        30_000: (98, 58, 191),
        50_000: (212, 79, 494),
        100_000: (383, 252, 969),
    },
    "walker-stand": {
        10_000: (131, 123, 147),
        20_000: (203, 164, 226),
        30_000: (219, 183, 319),
        50_000: (384, 255, 523),
        100_000: (705, 583, 948),
    },
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, choices=sorted(OFFICIAL))
    p.add_argument("--curves", nargs="+", required=True)
    p.add_argument("--eval", nargs="*", type=float, default=[], help="evaluation mean per seed")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import pandas as pd
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    last_step = 0
    for path in args.curves:
        df = pd.read_csv(path)
        last_step = max(last_step, int(df["env_step"].max()))
        ax.plot(
            df["env_step"],
            df["return"].rolling(5, min_periods=1).mean(),
            label=f"this project, training episodes (rolling 5): {Path(path).stem}",
        )
    for value in args.eval:
        ax.plot([last_step], [value], "D", color="tab:orange", markersize=8)
    if args.eval:
        ax.plot([], [], "D", color="tab:orange", label="this project, evaluation (10 episodes)")
    steps = [s for s in OFFICIAL[args.task] if s <= max(last_step, 50_000)]
    median = [OFFICIAL[args.task][s][0] for s in steps]
    low = [OFFICIAL[args.task][s][0] - OFFICIAL[args.task][s][1] for s in steps]
    high = [OFFICIAL[args.task][s][2] - OFFICIAL[args.task][s][0] for s in steps]
    ax.errorbar(
        steps,
        median,
        yerr=[low, high],
        fmt="s--",
        color="black",
        capsize=4,
        label="official DreamerV3: median (min–max) of 5 seeds",
    )
    ax.set(title=f"dm_control/{args.task}-v0", xlabel="environment steps", ylabel="episode return")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
