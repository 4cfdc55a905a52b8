"""Learning benchmark: train on one gymnasium id, then evaluate deterministically.

    python benchmarks/learning.py --env Pendulum-v1 --steps 20000 --seeds 0 1 2
    python benchmarks/learning.py --params params.yaml --set training.lr=1.0e-4 --json

Uses the library in memory (``dreamer.run.train``) with the config of ``--params`` (default
``params.yaml``) plus ``--set`` overrides, set before the env preset is merged exactly as
``dvc exp run -S`` does, so a row here is what the pipeline's defaults achieve.
Prints, per seed: evaluation return mean ± std over ``--episodes`` deterministic episodes (and a
random policy's mean on the same episodes), env steps, gradient steps, wall-clock seconds of
warm-up and training (compiling included, with ``compile: true``) and peak RSS; with
``--curves DIR`` also writes each seed's training episodes as CSV (with the seconds since its start;
rewritten after every episode, so a run cut short leaves its curve) and a PNG of all seeds' curves.
Compiled kernels are cached in ``.cache/torch``, as the pipeline caches them.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--env", help="env.id (default: the params file's)")
    p.add_argument("--steps", type=int, help="training.env_steps (default: the params file's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="dotted overrides, values parsed as YAML (training.lr=1.0e-4)",
    )
    p.add_argument("--curves", help="folder for returns CSVs and a PNG of the curves")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)

    import torch

    from dreamer.compiled import use_cache_dir
    from dreamer.config import load_config, override
    from dreamer.evaluation import evaluate, evaluate_random
    from dreamer.loop import Hooks
    from dreamer.run import train

    use_cache_dir(ROOT / ".cache" / "torch")
    changes = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.env:
        changes["env.id"] = args.env
    if args.steps:
        changes["training.env_steps"] = args.steps
    base = load_config(args.params, changes)
    torch.set_num_threads(base.threads)
    results = []
    for seed in args.seeds:
        cfg = override(base, seed=seed)
        episodes = []
        started = time.perf_counter()

        def on_episode(record, episodes=episodes, started=started, cfg=cfg):
            episodes.append({**record.row(), "seconds": round(time.perf_counter() - started, 1)})
            if args.curves:  # after every episode: a run cut short still leaves its curve
                _write_curve(Path(args.curves), cfg, episodes)

        agent, counters = train(cfg, Hooks(on_episode=on_episode))
        train_seconds = time.perf_counter() - started
        records, _ = evaluate(agent, cfg, args.episodes)
        returns = [r.score for r in records]
        baseline = [r.score for r in evaluate_random(cfg, args.episodes)]  # same episodes
        results.append(
            {
                "env_id": cfg.env.id,
                "seed": seed,
                "size": cfg.model.size,
                "train_ratio": cfg.training.train_ratio,
                "lr": cfg.training.lr,
                "eval_return_mean": round(statistics.fmean(returns), 1),
                "eval_return_std": round(statistics.pstdev(returns), 1),
                "random_return_mean": round(statistics.fmean(baseline), 1),
                "eval_episodes": len(returns),
                "env_steps": counters.env_steps,
                "gradient_steps": agent.gradient_steps,
                "train_seconds": round(train_seconds, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
        if not args.json:
            r = results[-1]
            print(
                f"{r['env_id']} seed {seed}: eval {r['eval_return_mean']:.1f} ± "
                f"{r['eval_return_std']:.1f} ({r['eval_episodes']} episodes; random policy "
                f"{r['random_return_mean']:.1f}) after "
                f"{r['env_steps']} env steps, {r['gradient_steps']} updates, "
                f"{r['train_seconds']:.0f} s, peak RSS {r['peak_rss_mib']} MiB",
                flush=True,
            )
    if args.curves:
        _plot_curves(Path(args.curves), base.env.id)
    if args.json:
        print(json.dumps({"config": base.flat(), "results": results}, default=str))


def _file_stem(env_id: str) -> str:
    """An env id as one file name: ``dm_control/x-v0`` -> ``dm_control-x-v0``."""
    return env_id.replace("/", "-").replace(":", "-")


def _write_curve(folder: Path, cfg, rows: list[dict]) -> None:
    """The seed's training episodes so far (env_step, length, return, seconds since the start
    of warm-up) as CSV, replaced atomically."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_file_stem(cfg.env.id)}_seed{cfg.seed}.csv"
    tmp = path.with_suffix(".csv.tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    tmp.replace(path)


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
