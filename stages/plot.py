"""Stage plot: learning curves and evaluation frames as PNGs, logged to MLflow.

    python -m stages.plot --curves metrics/train --eval metrics/eval.json --media media/eval \
        --out plots
writes plots/returns.png, plots/losses.png and, when the videos exist, plots/eval_frames.png
(frames of the evaluation episode), plots/open_loop.gif and plots/open_loop.png (the world
model's open-loop prediction: rows of real | predicted | difference, every 5th step).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from dreamer.faults import fault_point
from pipeline import cli, plots, schemas
from pipeline.media import read_gif

FRAME_GRID = 16  # frames shown in eval_frames.png
OPEN_LOOP_EVERY = 5  # steps between the rows of open_loop.png


def main(argv: list[str] | None = None) -> None:
    paths = {
        "--curves": "the training curves folder",
        "--eval": "the evaluation summary JSON",
        "--media": "the evaluation's media folder",
        "--out": "the folder for the figures",
    }
    args, cfg = cli.start(__doc__, paths, argv)
    curves, out = Path(args.curves), Path(args.out)
    # Validate what crosses the stage boundary before drawing it.
    schemas.read_csv(curves / "returns.csv", schemas.validate_train_returns)
    schemas.read_csv(curves / "losses.csv", schemas.validate_train_losses)
    try:
        evaluation = json.loads(Path(args.eval).read_text())
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"{args.eval}: missing or corrupt evaluation summary ({exc})"
        ) from None
    with cli.stage_run(cfg, "plot") as run:
        written = [
            plots.plot_returns(
                curves / "returns.csv", evaluation, out / "returns.png", title=cfg.env.id
            ),
            plots.plot_losses(curves / "losses.csv", out / "losses.png", title=cfg.env.id),
        ]
        video = Path(args.media) / "episode.gif"
        if video.exists():
            frames = read_gif(video)
            every = max(1, len(frames) // FRAME_GRID)
            written.append(
                plots.plot_frames(
                    frames[::every][:FRAME_GRID],
                    out / "eval_frames.png",
                    title=f"{cfg.env.id}: evaluation episode, every {every}th frame",
                )
            )
        dream = Path(args.media) / "open_loop.gif"
        if dream.exists():
            frames = read_gif(dream)
            written.append(out / "open_loop.gif")
            shutil.copyfile(dream, written[-1])
            written.append(
                plots.plot_frames(
                    frames[::OPEN_LOOP_EVERY],
                    out / "open_loop.png",
                    ncols=2,
                    title=f"{cfg.env.id} open loop: real | predicted | difference\n"
                    f"steps 0, {OPEN_LOOP_EVERY}, 10, …: 5 observed, then imagined",
                )
            )
        fault_point("plot.log")  # killed here: figures written, not logged to MLflow
        for path in written:
            run.log_artifact(path, "plots")
    print("plot: " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    sys.exit(cli.run(main))
