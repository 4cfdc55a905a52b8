"""Training curves of DeepMind Control runs next to the official DreamerV3 scores at the same steps.

    cd benchmarks/results/archive && python ../../dmc_anchor_plot.py \
        --out dmc_cartpole_balance.png \
        --panel cartpole-balance dmc_cartpole_balance_seed*.csv --eval 675.6
    python benchmarks/dmc_anchor_plot.py --out OUT.png --panel cartpole-balance A.csv B.csv \
        --panel walker-stand C.csv            # one panel per task, side by side
    python benchmarks/dmc_anchor_plot.py --out OUT.png --panel cartpole-swingup A.csv --eval 481.3 \
        --panel cartpole-balance_sparse B.csv --eval 1000.0   # each panel's evaluations

``--panel TASK CSV...``: a task and the CSVs ``benchmarks/learning.py --curves`` wrote for it (one
per seed), drawn as the rolling mean of 5 training episodes; ``--eval MEAN...``: the evaluation
mean of each seed at the end of its budget (deterministic policy), drawn as points; the first
``--eval`` goes with the first ``--panel``, the second with the second, and so on; where a
panel has one evaluation per CSV, each is drawn in its seed's colour.
The official figures are the median (min–max) over 5 seeds of the official repository's
``scores/dmc_proprio-dreamerv3.json.gz`` (size1m, train ratio 1024, action repeat 1), as listed in
``../shared/ANCHORS.md``: they are the reference, not results of this project; each panel shows
them up to the first recorded step at or past the end of its curves.
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
    p.add_argument(
        "--panel",
        nargs="+",
        action="append",
        required=True,
        metavar="TASK CSV",
        help=f"a task ({', '.join(sorted(OFFICIAL))}) and its curves' CSVs",
    )
    p.add_argument(
        "--eval",
        nargs="*",
        type=float,
        action="append",
        metavar="MEAN",
        help="evaluation mean per seed, one --eval per --panel in their order",
    )
    p.add_argument("--title", default="", help="the figure's title")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    for task, *curves in args.panel:
        if task not in OFFICIAL or not curves:
            p.error(f"--panel {task}: expected one of {sorted(OFFICIAL)} and at least one CSV")
    evals = args.eval or []
    if len(evals) > len(args.panel):
        p.error(f"--eval: {len(evals)} given for {len(args.panel)} --panel")
    evals += [[]] * (len(args.panel) - len(evals))

    from matplotlib.figure import Figure

    cols = min(2, len(args.panel))
    rows = -(-len(args.panel) // cols)
    fig = Figure(figsize=(7 * cols, 4.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (task, *curves), panel_evals in zip(axes, args.panel, evals):
        _panel(ax, task, curves, panel_evals)
    if args.title:
        fig.suptitle(args.title)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


def _panel(ax, task: str, curves: list[str], evals: list[float]) -> None:
    import pandas as pd

    last_step, colors = 0, []
    for path in curves:
        df = pd.read_csv(path)
        last_step = max(last_step, int(df["env_step"].max()))
        (line,) = ax.plot(
            df["env_step"],
            df["return"].rolling(5, min_periods=1).mean(),
            label=f"this project, {Path(path).stem.rsplit('_', 1)[-1]}: training (rolling 5)",
        )
        colors.append(line.get_color())
    # one evaluation per curve, in the curves' order: each drawn in its seed's colour
    for value, color in zip(evals, colors if len(evals) == len(colors) else ["black"] * len(evals)):
        ax.plot([last_step], [value], "D", color=color, markeredgecolor="black", markersize=8)
    if evals:
        ax.plot(
            [],
            [],
            "D",
            color="white",
            markeredgecolor="black",
            label="this project, evaluation (10 episodes)",
        )
    official = OFFICIAL[task]
    shown = min([s for s in official if s >= last_step] or [max(official)])
    steps = [s for s in official if s <= shown]
    median = [official[s][0] for s in steps]
    low = [official[s][0] - official[s][1] for s in steps]
    high = [official[s][2] - official[s][0] for s in steps]
    ax.errorbar(
        steps,
        median,
        yerr=[low, high],
        fmt="s--",
        color="black",
        capsize=4,
        label="official DreamerV3: median (min–max) of 5 seeds",
    )
    ax.set(title=f"dm_control/{task}-v0", xlabel="environment steps", ylabel="episode return")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=7)


if __name__ == "__main__":
    main()
