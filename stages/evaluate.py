"""Stage evaluate: seeded episodes (mode actions by default), videos, metrics/eval.json.

    python -m stages.evaluate --agent models/agent.pt --metrics metrics/eval.json \
        --episodes-csv metrics/eval/episodes.csv --media media/eval
writes media/eval/episode.gif (the first episode, rendered) and, for image observations,
media/eval/open_loop.gif (5 observed + 45 imagined frames: real | predicted | difference).
metrics/eval.json also holds a uniform random policy's return on the same seeded episodes
(``eval/random_return_mean``, ``eval/random_return_std``), so every run says whether the agent
beats chance.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dreamer.evaluation import evaluate_agent
from dreamer.faults import fault_point
from pipeline import cli, schemas, tables
from pipeline.media import write_gif


def main(argv: list[str] | None = None) -> None:
    paths = {
        "--agent": "the agent file to evaluate",
        "--metrics": "the summary JSON",
        "--episodes-csv": "the per-episode table",
        "--media": "the folder for the episode video and the open-loop prediction",
    }
    args, cfg = cli.start(__doc__, paths, argv)
    evaluation, info = evaluate_agent(args.agent, cfg)  # a bad agent file fails before MLflow
    with cli.stage_run(cfg, "evaluate") as run:
        run.set_tags({"upstream.train_run_id": info.get("mlflow_run_id", "")})
        episodes = schemas.validate_episodes(
            tables.episodes_frame(evaluation.records), args.episodes_csv
        )
        summary = evaluation.summary()
        fault_point("evaluate.write")  # killed here: episodes run, nothing written
        cli.write_csv(args.episodes_csv, episodes)
        cli.write_json(args.metrics, summary)
        run.log_metrics(summary, step=summary["eval/env_steps"])
        run.log_artifact(args.episodes_csv)
        media = Path(args.media)
        media.mkdir(parents=True, exist_ok=True)  # an out even when the env cannot render
        for name, frames, fps in [
            ("episode.gif", evaluation.frames, 30),
            ("open_loop.gif", evaluation.open_loop, 10),
        ]:
            if frames is not None:
                write_gif(media / name, frames, fps=fps)
                run.log_artifact(media / name, "video")
        if cfg.evaluate.video and evaluation.frames is None:
            print(f"evaluate: {cfg.env.id} cannot render; no video", file=sys.stderr)
    print(
        f"evaluate: return {summary['eval/return_mean']:.1f} ± {summary['eval/return_std']:.1f} "
        f"(random policy {summary['eval/random_return_mean']:.1f} ± "
        f"{summary['eval/random_return_std']:.1f}) over {summary['eval/episodes']} episodes -> "
        f"{args.metrics}"
    )


if __name__ == "__main__":
    sys.exit(cli.run(main))
