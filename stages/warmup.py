"""Stage warmup: seeded random-policy collection that fills the first replay buffer.

    python -m stages.warmup --out data/warmup
writes data/warmup/{replay/, episodes.csv, meta.json} and one MLflow run "warmup".
"""

from __future__ import annotations

import sys
from pathlib import Path

from dreamer.atomic import atomic_dir
from dreamer.faults import fault_point
from dreamer.run import collect_warmup, save_warmup
from pipeline import cli, schemas, tables


def main(argv: list[str] | None = None) -> None:
    args, cfg = cli.start(__doc__, {"--out": "the warm-up folder (data/warmup)"}, argv)
    out = Path(args.out)
    warmup = collect_warmup(cfg)  # checks the env id and spaces first
    with cli.stage_run(cfg, "warmup") as run:
        transitions = tables.validate_replay(warmup.replay, warmup.vector_bounds, f"{out}/replay")
        episodes = schemas.validate_episodes(
            tables.episodes_frame(warmup.records), f"{out}/episodes.csv"
        )
        with atomic_dir(out) as tmp:  # never a half-written out
            save_warmup(
                tmp,
                warmup,
                cfg,
                extra={"mlflow_run_id": run.run_id, "mlflow_parent_run_id": run.parent_run_id},
            )
            cli.write_csv(tmp / "episodes.csv", episodes)
            fault_point("warmup.write")  # killed here: a temporary folder, no data/warmup
        run.log_metrics(
            {
                "warmup/episodes": len(episodes),
                "warmup/return_mean": episodes["return"].mean() if len(episodes) else float("nan"),
                "warmup/transitions": len(transitions),
                "warmup/replay_bytes_per_step": warmup.replay.bytes_per_step,
            }
        )
        run.log_metric_rows(episodes, step_key="env_step", prefix="warmup/", keys=["return"])
        run.log_artifact(out / "episodes.csv")
    print(f"warmup: {len(episodes)} episodes, {warmup.replay.total_steps} steps -> {out}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
