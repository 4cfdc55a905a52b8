"""Learning benchmark through the pipeline users run: one ``dvc exp run --temp`` per seed.

    python benchmarks/learning.py --env dm_control/cartpole-balance-v0 --seeds 0 \
        --set training.train_ratio=128.0 --curves benchmarks/results/dmc_pipeline
    python benchmarks/learning.py --env Pendulum-v1 --seeds 0 1 2 --json

Each seed is ``dvc exp run --temp -n NAME -S env.id=ENV -S seed=SEED -S KEY=VALUE…`` in this
repository (its workspace as it is, committed or not): all four stages, checkpoints on, MLflow
logging to the project's store, the experiment kept as a DVC experiment (``dvc exp show``). The
figures are read back from that experiment: ``metrics/train.json`` and ``metrics/eval.json``
from ``dvc exp show --json``, the training curve from ``metrics/train/returns.csv`` in the
experiment's commit. Per seed it prints the evaluation return mean ± std over
``evaluate.episodes`` deterministic episodes next to a random policy's on the same episodes,
env steps, gradient steps and the wall-clock of the whole ``dvc exp run``; with ``--curves DIR``
it writes each seed's training episodes as ``DIR/<env>_seed<N>.csv`` and a PNG of all seeds'
curves. ``--set`` values go to ``-S`` as they are (a preset's key: ``presets.<id>.<key>=…``).
Seeds run one after another: on 2 cores two runs slow each other down many times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", help="env.id (default: params.yaml's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more -S overrides")
    p.add_argument("--name", default="learning", help="prefix of the experiment names")
    p.add_argument("--curves", help="folder for returns CSVs and a PNG of the curves")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)

    results = []
    for seed in args.seeds:
        stem = _file_stem(args.env or "default")
        name = f"{args.name}-{stem}-s{seed}-{time.strftime('%m%d-%H%M%S')}".lower()
        sets = [*(["env.id=" + args.env] if args.env else []), f"seed={seed}", *args.set]
        command = [*DVC, "exp", "run", "--temp", "-n", name]
        for item in sets:
            command += ["-S", item]
        print("$ " + " ".join(command[2:]), file=sys.stderr, flush=True)
        baseline = _git("rev-parse", "HEAD").strip()  # dvc exp show lists experiments by baseline
        started = time.perf_counter()
        # its output streams to this terminal; dvc.yaml's commands call `python`: this one's
        subprocess.run(command, cwd=ROOT, check=True, env=_venv_first())
        seconds = time.perf_counter() - started
        rev, metrics = experiment(name, baseline)
        train, evaluation = metrics["metrics/train.json"], metrics["metrics/eval.json"]
        if args.curves:
            folder = Path(args.curves)
            folder.mkdir(parents=True, exist_ok=True)
            curve = _git("show", f"{rev}:metrics/train/returns.csv")
            (folder / f"{stem}_seed{seed}.csv").write_text(curve)
        results.append(
            {
                "experiment": name,
                "rev": rev,
                "command": "dvc exp run --temp " + " ".join(f"-S {s}" for s in sets),
                "env_id": args.env,
                "seed": seed,
                "eval_return_mean": evaluation["eval/return_mean"],
                "eval_return_std": evaluation["eval/return_std"],
                "random_return_mean": evaluation["eval/random_return_mean"],
                "eval_episodes": evaluation["eval/episodes"],
                "env_steps": train["train/env_steps"],
                "gradient_steps": train["train/gradient_steps"],
                "train_seconds": train["train/wall_seconds"],
                "compile_seconds": train["train/compile_seconds"],
                "pipeline_seconds": round(seconds, 1),
                "matmul_dtype": train["train/matmul_dtype"],
                "peak_rss_mib": train["train/peak_rss_mib"],
            }
        )
        if not args.json:
            r = results[-1]
            print(
                f"{name}: eval {r['eval_return_mean']:.1f} ± {r['eval_return_std']:.1f} "
                f"({r['eval_episodes']} episodes; random policy {r['random_return_mean']:.1f}) "
                f"after {r['env_steps']} env steps, {r['gradient_steps']} updates; "
                f"dvc exp run {seconds:.0f} s (training {r['train_seconds']:.0f} s, compile "
                f"{r['compile_seconds']:.0f} s, {r['matmul_dtype']}), peak RSS "
                f"{r['peak_rss_mib']} MiB",
                flush=True,
            )
    if args.curves:
        _plot_curves(Path(args.curves), args.env or "default")
        _write_study(Path(args.curves), args, results)
    if args.json:
        print(json.dumps({"results": results}))


def experiment(name: str, baseline: str) -> tuple[str, dict[str, dict]]:
    """The commit and the metrics files of DVC experiment ``name`` run on commit ``baseline``
    (``dvc exp show --json --rev``: the workspace may have moved on since)."""
    shown = json.loads(_run([*DVC, "exp", "show", "--json", "--no-pager", "--rev", baseline]))

    def find(node):
        if isinstance(node, dict):
            if node.get("name") == name and node.get("rev") and node.get("data"):
                return node
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            return None
        for child in children:
            if found := find(child):
                return found
        return None

    node = find(shown)
    if node is None:
        raise SystemExit(f"learning: experiment {name} is not in `dvc exp show`")
    metrics = {path: entry["data"] for path, entry in node["data"]["metrics"].items()}
    return node["rev"], metrics


def _venv_first() -> dict[str, str]:
    """This environment with this interpreter's folder first on PATH, as ``scripts/run.sh``
    does: a stage's ``python`` is then the one with torch, whichever PATH the caller had."""
    path = os.environ.get("PATH", "")
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{path}"}


def _run(command: list[str]) -> str:
    return subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def _git(*args: str) -> str:
    return _run(["git", *args])


def _write_study(folder: Path, args, results: list[dict]) -> None:
    """The runs as a study's ``summary.json`` (``benchmarks/results_doc.py`` reads it)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.study import code_commit, machine, write_summary

    stem = _file_stem(args.env or "default")
    runs = [
        {
            "label": " ".join(args.set) or "defaults",
            "seed": r["seed"],
            "curve": f"{stem}_seed{r['seed']}.csv",
            **{k: r[k] for k in ("eval_return_mean", "eval_return_std", "random_return_mean")},
            **{k: r[k] for k in ("train_seconds", "compile_seconds", "pipeline_seconds")},
            "peak_rss_mib": r["peak_rss_mib"],
            "experiment": r["experiment"],
        }
        for r in results
    ]
    command = "python benchmarks/learning.py " + " ".join(
        [*(["--env", args.env] if args.env else []), "--seeds", *map(str, args.seeds)]
        + (["--set", *args.set] if args.set else [])
        + ["--curves", str(folder)]
    )
    summary = {
        "title": f"{args.env or 'the default env'}, seeds {', '.join(map(str, args.seeds))}",
        "question": "How the agent learns with "
        + (" ".join(args.set) if args.set else "the env's preset")
        + f" over {len(args.seeds)} seed(s): evaluation, training curves, time "
        "(a hand-written question in an existing summary.json is kept).",
        "command": command,
        "path": "dvc exp run --temp per seed (the pipeline users run)",
        "code_commit": code_commit(),
        "machine": machine(results[0]["matmul_dtype"] if results else "?"),
        "env_steps": results[0]["env_steps"] if results else 0,
        "gradient_steps": results[0]["gradient_steps"] if results else 0,
        "figure": f"{stem}_curves.png",
        "runs": runs,
    }
    write_summary(folder, summary)


def _file_stem(env_id: str) -> str:
    """An env id as one file name: ``dm_control/x-v0`` -> ``dm_control-x-v0``."""
    return env_id.replace("/", "-").replace(":", "-")


def _plot_curves(folder: Path, env_id: str) -> None:
    import pandas as pd
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for path in sorted(folder.glob(f"{_file_stem(env_id)}_seed*.csv")):
        df = pd.read_csv(path)
        if len(df):
            ax.plot(
                df["env_step"],
                df["return"].rolling(5, min_periods=1).mean(),
                label=path.stem.split("_")[-1],
            )
    ax.set(
        title=f"{env_id}: training episode return (rolling mean of 5)",
        xlabel="environment steps",
        ylabel="episode return",
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.savefig(folder / f"{_file_stem(env_id)}_curves.png", dpi=110)


if __name__ == "__main__":
    main()
