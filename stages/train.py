"""Stage train: world model + behaviour learning interleaved with collection, resumable.

    python -m stages.train --warmup data/warmup --checkpoint models/checkpoint \
        --agent models/agent.pt --metrics metrics/train.json --curves metrics/train
Resumes from the newest checkpoint in --checkpoint when it was written with the same params and
library code (hashes decide); otherwise starts from the warm-up replay. A finished checkpoint (a
run whose outputs failed, or a change of an ``mlflow.*`` param) is not trained again: only the
outputs are written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dreamer.checkpoint import save_agent
from dreamer.compiled import use_cache_dir
from dreamer.faults import fault_point
from dreamer.run import TrainingRun, load_warmup
from pipeline import cli, models, tables
from pipeline.progress import TrainMonitor
from pipeline.store import project_root


def main(argv: list[str] | None = None) -> None:
    paths = {
        "--warmup": "the warm-up folder to start from",
        "--checkpoint": "the checkpoint folder (resumed from, written to)",
        "--agent": "the trained agent file",
        "--metrics": "the summary JSON",
        "--curves": "the folder for returns.csv and losses.csv",
    }
    args, cfg = cli.start(__doc__, paths, argv)
    meta, warmup = load_warmup(Path(args.warmup), cfg)
    cache = use_cache_dir(project_root() / ".cache" / "torch")
    mirror = project_root() / ".cache" / "checkpoints"  # survives dvc exp run's checkout
    training = TrainingRun(cfg, warmup, Path(args.checkpoint), mirror)
    if message := training.restore():
        print(f"train: {message}", file=sys.stderr)
    if cfg.compile and not training.finished:
        print(
            f"train: compiled the update and the policy step in "
            f"{training.compile():.1f} s (kernel cache {cache})",
            file=sys.stderr,
        )

    with cli.stage_run(cfg, "train") as run:
        run.set_tags(
            {
                "resumed": training.resumed,
                "upstream.warmup_run_id": meta.extra.get("mlflow_run_id", ""),
                "matmul_dtype": str(training.agent.matmul_dtype).removeprefix("torch."),
            }
        )
        if training.resumed:  # the curves of the killed part, so this run's history is complete
            run.log_metric_rows(
                training.curves["returns"], "env_step", prefix="train/", keys=["return"]
            )
            run.log_metric_rows(training.curves["losses"], "gradient_step")
        monitor = TrainMonitor(run, cfg.training.env_steps, training.counters.env_steps)
        try:
            training.run(monitor.hooks())
        finally:
            monitor.close()  # logs what MLflow refused during training, or names it
        fault_point("train.outputs")  # killed here: the next run writes the outputs only

        curves = Path(args.curves)
        returns, losses = tables.curves_frames(training.curves, curves)
        cli.write_csv(curves / "returns.csv", returns)
        cli.write_csv(curves / "losses.csv", losses)
        save_agent(
            args.agent,
            training.agent,
            extra={
                "env_steps": training.counters.env_steps,
                "mlflow_run_id": run.run_id,
                "mlflow_parent_run_id": run.parent_run_id,
            },
        )
        summary = training.summary()
        cli.write_json(args.metrics, summary)
        # train/* under the file's names; the last loss/* values are already in their curves
        run.log_metrics({k: v for k, v in summary.items() if k.startswith("train/")})
        run.log_artifact(curves, "curves")
        run.set_tags({"model_uri": models.log_agent(run, args.agent)})  # weights, no pickle
    print(
        f"train: {summary['train/env_steps']} env steps, {summary['train/gradient_steps']} "
        f"updates, {summary['train/wall_seconds']:.0f}s -> {args.agent}"
    )


if __name__ == "__main__":
    sys.exit(cli.run(main))
