"""Stage evaluate: seeded episodes with deterministic actions, videos, metrics/eval.json.

    python -m stages.evaluate --agent models/agent.pt --metrics metrics/eval.json \
        --episodes-csv metrics/eval/episodes.csv --media media/eval
writes media/eval/episode.gif (the first episode, rendered) and, for image observations,
media/eval/open_loop.gif (5 observed + 45 imagined frames: real | predicted | difference).
metrics/eval.json also holds a uniform random policy's return on the same seeded episodes
(``random_return_mean``, ``random_return_std``), so every run says whether the agent beats chance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dreamer.checkpoint import CheckpointError, load_agent
from dreamer.evaluation import evaluate, evaluate_random
from dreamer.report import open_loop_frames
from pipeline import cli, schemas, tables
from pipeline.media import write_gif
from pipeline.tracking import pipeline_parent_id, stage_run


def main(argv: list[str] | None = None) -> None:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--agent", default="models/agent.pt")
    p.add_argument("--metrics", default="metrics/eval.json")
    p.add_argument("--episodes-csv", default="metrics/eval/episodes.csv")
    p.add_argument("--media", default="media/eval", help="folder for the episode video")
    args = p.parse_args(argv)
    cfg = cli.setup(args.params)
    agent, info = load_agent(args.agent, device=cfg.device)
    if agent.spec.env_id != cfg.env.id:
        raise CheckpointError(f"{args.agent}: trained on {agent.spec.env_id}, params say "
                              f"{cfg.env.id}")
    with stage_run(cfg, "evaluate", pipeline_parent_id(cfg)) as run:
        run.set_tags({"upstream.train_run_id": info.get("mlflow_run_id", "")})
        records, frames = evaluate(agent, cfg, cfg.evaluate.episodes,
                                   record_video=cfg.evaluate.video)
        episodes = schemas.validate_episodes(tables.episodes_frame(records), args.episodes_csv)
        returns = episodes["return"]
        baseline = [r.score for r in evaluate_random(cfg, cfg.evaluate.episodes)]
        summary = {
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std(ddof=0)),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "length_mean": float(episodes["length"].mean()),
            "episodes": len(episodes),
            "env_steps": int(info.get("env_steps", 0)),
            "gradient_steps": agent.gradient_steps,
            "random_return_mean": float(np.mean(baseline)),
            "random_return_std": float(np.std(baseline)),
        }
        cli.write_csv(args.episodes_csv, episodes)
        cli.write_json(args.metrics, summary)
        run.log_metrics({f"eval/{k}": v for k, v in summary.items()}, step=summary["env_steps"])
        run.log_artifact(args.episodes_csv)
        media = Path(args.media)
        media.mkdir(parents=True, exist_ok=True)  # an out even when the env cannot render
        if frames is not None:
            write_gif(media / "episode.gif", frames)
            run.log_artifact(media / "episode.gif", "video")
        elif cfg.evaluate.video:
            print(f"evaluate: {cfg.env.id} cannot render; no video", file=sys.stderr)
        dream = open_loop_frames(agent, cfg) if cfg.evaluate.video else None
        if dream is not None:
            write_gif(media / "open_loop.gif", dream, fps=10)
            run.log_artifact(media / "open_loop.gif", "video")
    print(f"evaluate: return {summary['return_mean']:.1f} ± {summary['return_std']:.1f} "
          f"(random policy {summary['random_return_mean']:.1f} ± "
          f"{summary['random_return_std']:.1f}) over {summary['episodes']} episodes -> "
          f"{args.metrics}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
