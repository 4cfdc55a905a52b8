"""Stage evaluate: seeded episodes (mode actions by default), videos, metrics/eval.json.

    python -m stages.evaluate --agent models/agent.pt --metrics metrics/eval.json \
        --episodes-csv metrics/eval/episodes.csv --media media/eval
writes media/eval/episode.gif (the first episode, rendered) and, for image observations,
media/eval/open_loop.gif (5 observed + 45 imagined frames: real | predicted | difference).
metrics/eval.json also holds a uniform random policy's return on the same seeded episodes
(``eval/random_return_mean``, ``eval/random_return_std``), so every run says whether the agent
beats chance. The agent is then registered in MLflow as a version of ``dreamerv3-<env id>``, and
``@best`` moves to it if it beats the current best on the same episodes (:mod:`pipeline.models`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from dreamer.evaluation import evaluate_agent, mean_return
from dreamer.faults import fault_point
from pipeline import cli, models, schemas, tables, tracking
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
        register(run, cfg, args.agent, info, summary["eval/return_mean"])
    print(
        f"evaluate: return {summary['eval/return_mean']:.1f} ± {summary['eval/return_std']:.1f} "
        f"(random policy {summary['eval/random_return_mean']:.1f} ± "
        f"{summary['eval/random_return_std']:.1f}) over {summary['eval/episodes']} episodes -> "
        f"{args.metrics}"
    )


def register(run: tracking.StageRun, cfg, agent_file: str, info: dict, score: float) -> None:
    """Register the agent (the train run's logged model, or this file logged here when the train
    run is not in this store) and move ``@best`` if it wins. A refusal (a team server's
    permissions) is one warning: the evaluation is written and stands."""
    model_uri = run.tag_of(info.get("mlflow_run_id", ""), "model_uri")
    try:
        done = models.register_agent(
            run,
            cfg,
            model_uri or models.log_agent(run, agent_file),
            score,
            env_steps=int(info.get("env_steps", 0)),
            rescore=lambda uri: mean_return(
                models.load_agent(uri, run.tracking_uri, cfg.device, cfg.env.id)[0], cfg
            ),
        )
    except models.RegistryError as exc:
        print(f"warning: the agent was not registered: {exc}", file=sys.stderr)
        run.set_tags({"registry_error": str(exc)[:5000]})
        return
    run.set_tags({"registered_model": f"{done.name}/{done.version}"})
    print(f"evaluate: {done.line(score)}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
