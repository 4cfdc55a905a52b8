"""Training curves of two to four sets of runs in one PNG, with when each first reaches a target.

    python benchmarks/compare_curves.py --title "CartPole-v1" --target 475 \
        --a "eager float32" benchmarks/results/archive/cartpole_T32_seed*.csv \
        --b "compiled, bf16" benchmarks/results/archive/cartpole_fast_seed*.csv \
        --out benchmarks/results/archive/cartpole_eager_vs_fast.png

Each CSV is an episodes table (``env_step``, ``return``), as ``benchmarks/learning.py --curves``
and the train stage write. Prints, per run, the first env step at which the rolling mean of 5
episodes reaches ``--target``, the last rolling mean and the mean of the last 10 episodes.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def summary(path: Path, target: float | None) -> dict:
    import pandas as pd

    df = pd.read_csv(path)
    rolling = df["return"].rolling(5, min_periods=1).mean()
    reached = df["env_step"][rolling >= target] if target is not None else []
    return {
        "df": df,
        "rolling": rolling,
        "first": int(reached.iloc[0]) if len(reached) else None,
        "last_rolling": float(rolling.iloc[-1]),
        "last10": float(df["return"].tail(10).mean()),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", nargs="+", required=True, metavar=("LABEL", "CSV"))
    p.add_argument("--b", nargs="+", required=True, metavar=("LABEL", "CSV"))
    p.add_argument("--c", nargs="+", metavar=("LABEL", "CSV"), help="a third set (dotted)")
    p.add_argument("--d", nargs="+", metavar=("LABEL", "CSV"), help="a fourth set (dash-dot)")
    p.add_argument("--target", type=float)
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    groups = (args.a, args.b, args.c, args.d)
    sets = [(group, style) for group, style in zip(groups, ("--", "-", ":", "-.")) if group]
    # Seeds share a colour across sets; sets of one run each get a colour of their own.
    by_set = all(len(group) == 2 for group, _ in sets)
    for number, ((label, *paths), style) in enumerate(sets):
        for index, path in enumerate(sorted(paths)):
            s = summary(Path(path), args.target)
            first = f"{s['first']:,}" if s["first"] is not None else "never"
            print(
                f"{label:<20} {Path(path).name:<28} first rolling ≥ {args.target:g}: {first:>7}"
                f"  last rolling {s['last_rolling']:8.1f}  last 10 {s['last10']:8.1f}"
            )
            ax.plot(
                s["df"]["env_step"],
                s["rolling"],
                style,
                color=f"C{number if by_set else index}",
                label=f"{label}: {Path(path).stem}",
            )
    if args.target is not None:
        ax.axhline(args.target, color="grey", lw=0.8)
    ax.set(
        title=f"{args.title}: training episode return (rolling mean of 5)",
        xlabel="environment steps",
        ylabel="episode return",
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
