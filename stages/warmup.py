"""Stage warmup: seeded random-policy collection that fills the first replay buffer.

    python -m stages.warmup --out data/warmup
writes data/warmup/{replay/, episodes.csv, meta.json} and one MLflow run "warmup".
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from dreamer.envs import make_envs
from dreamer.loop import collect_random
from dreamer.replay import ReplayBuffer
from pipeline import cli, schemas, tables
from pipeline.tracking import pipeline_parent_id, stage_run


def main(argv: list[str] | None = None) -> None:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--out", default="data/warmup", help="output folder")
    args = p.parse_args(argv)
    cfg = cli.setup(args.params)
    envs = make_envs(cfg.env, cfg.seed)  # checks the id and spaces before anything else
    out = Path(args.out)
    with envs, stage_run(cfg, "warmup", pipeline_parent_id(cfg)) as run:
        # Agent steps (the last round of N envs may overshoot by N − 1); resets add one each.
        steps = cfg.warmup.steps // cfg.env.action_repeat + envs.num_envs
        replay = ReplayBuffer(envs.spec, capacity=2 * steps + 2)
        collector, records = collect_random(envs, replay, cfg.warmup.steps, cfg.seed,
                                            cfg.env.action_repeat)
        spec, bounds = envs.spec, envs.vector_bounds()
        transitions = schemas.validate_transitions(
            tables.transitions_frame(replay), f"{out}/replay", action_dim=spec.action_dim,
            discrete=spec.discrete,
            vector_columns=[c for key, shape in spec.obs_shapes.items() if key in bounds
                            for c in schemas.vector_columns(key, shape[0])],
            obs_low={key: low for key, (low, _) in bounds.items()},
            obs_high={key: high for key, (_, high) in bounds.items()})
        episodes = schemas.validate_episodes(tables.episodes_frame(records), f"{out}/episodes.csv")

        # Write everything into a temporary folder, then swap it in: never a half-written out.
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        replay.save(tmp / "replay")
        cli.write_csv(tmp / "episodes.csv", episodes)
        cli.write_json(tmp / "meta.json", {
            "env_id": cfg.env.id, "seed": cfg.seed, "env_steps": collector.env_steps,
            "episodes": len(records),
            "replay_steps": replay.total_steps, "spec": spec.to_dict(),
            "mlflow_run_id": run.run_id, "mlflow_parent_run_id": run.parent_run_id,
        })
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)

        returns = episodes["return"]
        run.log_metrics({
            "warmup/episodes": len(episodes),
            "warmup/return_mean": returns.mean() if len(returns) else float("nan"),
            "warmup/transitions": len(transitions),
            "warmup/replay_bytes_per_step": replay.bytes_per_step,
        })
        run.log_metric_rows(episodes, step_key="env_step", prefix="warmup/", keys=["return"])
        run.log_artifact(out / "episodes.csv")
    print(f"warmup: {len(episodes)} episodes, {replay.total_steps} steps -> {out}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
