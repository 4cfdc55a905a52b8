"""Run the README's default pipeline, timed, and record it as the study ``default_run``.

    python benchmarks/default_run.py               # = time bash scripts/run.sh, then the study
    python benchmarks/default_run.py --first-run   # as from a fresh clone (what the README quotes)

It runs exactly what a user runs (``bash scripts/run.sh``: set-up if needed, then ``dvc repro``
with checkpoints, DVC and MLflow on), measures its wall-clock, and writes
``benchmarks/results/default_run/``: the training curve, the evaluation episodes and the returns
plot copied from the pipeline's outputs, and ``summary.json`` with the command, the code commit,
the machine and the run's figures from ``metrics/train.json`` and ``metrics/eval.json``. Then
``python benchmarks/results_doc.py`` puts it into ``docs/results.md`` and the README's table.
``--first-run`` first removes what a fresh clone lacks: the kernel cache ``.cache/torch`` (so the
cold compile counts) and the resumable checkpoints, and runs every stage (``dvc repro --force``,
nothing restored from DVC's run cache). Each stage's seconds are timed from DVC's
``Running stage '…'`` lines. ``--record-only --pipeline-seconds S`` records the outputs already
in the workspace instead (a run timed by hand, e.g. ``time bash scripts/run.sh``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study import ROOT, code_commit, machine, write_summary  # noqa: E402

STUDY = ROOT / "benchmarks" / "results" / "default_run"
COPIED = {  # pipeline output -> file in the study
    "metrics/train/returns.csv": "returns.csv",
    "metrics/eval/episodes.csv": "eval_episodes.csv",
    "plots/returns.png": "figure.png",
}


# What a fresh clone does not have (--first-run): inductor's kernels, the resumable checkpoints.
FRESH_CLONE_LACKS = [".cache/torch", ".cache/checkpoints", "models/checkpoint"]
STAGE_LINE = re.compile(r"Running stage '([\w-]+)'")


def run_timed(command: list[str]) -> tuple[float, dict[str, float]]:
    """Run ``command`` with its output passed through as it comes. Returns its seconds and each
    stage's, from the time DVC's ``Running stage 'NAME':`` line appeared to the next one (or the
    end); a stage restored from DVC's run cache prints no such line and is not listed."""
    started = time.perf_counter()
    marks: list[tuple[str, float]] = []
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pending = ""
    while chunk := process.stdout.read1(1 << 16):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        *lines, pending = (pending + chunk.decode(errors="replace")).split("\n")
        marks += [(m[1], time.perf_counter()) for m in map(STAGE_LINE.search, lines) if m]
    if process.wait():
        raise subprocess.CalledProcessError(process.returncode, command)
    ended = time.perf_counter()
    ends = [t for _, t in marks[1:]] + [ended]
    stages = {name: round(end - begun, 1) for (name, begun), end in zip(marks, ends, strict=True)}
    return ended - started, stages


def record(
    pipeline_seconds: float, commit: str, stage_seconds: dict | None = None, first_run=False
) -> Path:
    train = json.loads((ROOT / "metrics/train.json").read_text())
    evaluation = json.loads((ROOT / "metrics/eval.json").read_text())
    STUDY.mkdir(parents=True, exist_ok=True)
    for source, name in COPIED.items():
        shutil.copyfile(ROOT / source, STUDY / name)
    summary = {
        "title": "The default run: bash scripts/run.sh (Pendulum-v1, params.yaml as committed)",
        "question": "What a user sees from the README's first command: the committed dvc.lock, "
        "metrics/ and plots/ are this run's.",
        "command": "python benchmarks/default_run.py --first-run (= rm -rf .cache/torch "
        "models/checkpoint .cache/checkpoints; time bash scripts/run.sh --force)"
        if first_run
        else "python benchmarks/default_run.py (= time bash scripts/run.sh)",
        "path": "dvc repro (the pipeline users run)",
        "code_commit": commit,
        "machine": machine(train["train/matmul_dtype"]),
        "env_steps": train["train/env_steps"],
        "gradient_steps": train["train/gradient_steps"],
        "target": -200,
        "figure": "figure.png",
        "headline": {"task": "Pendulum, the defaults"},
        "runs": [
            {
                "label": "defaults",
                "seed": 0,
                "curve": "returns.csv",
                "eval_episodes": "eval_episodes.csv",
                "random_return_mean": round(evaluation["eval/random_return_mean"], 1),
                "train_seconds": train["train/wall_seconds"],
                "compile_seconds": train["train/compile_seconds"],
                "pipeline_seconds": round(pipeline_seconds, 1),
                **({"stage_seconds": stage_seconds} if stage_seconds else {}),
                "peak_rss_mib": train["train/peak_rss_mib"],
                "skipped_updates": train["train/skipped_updates"],
            }
        ],
    }
    summary["notes"] = _notes(stage_seconds or {}, first_run, train)
    return write_summary(STUDY, summary, generated=("notes",))  # a note says how it ran


def _notes(stage_seconds: dict, first_run: bool, train: dict) -> list[str]:
    """How the run ran: as a fresh clone or not, each stage's seconds, the stages not run."""
    compile_s, training_s = train["train/compile_seconds"], train["train/wall_seconds"]
    notes = []
    if first_run:
        notes.append(
            "A first run as from a fresh clone (--first-run): no kernel cache, so the train "
            f"stage's compile was cold ({compile_s:.0f} s); no checkpoint; every stage run "
            "(dvc repro --force)."
        )
    if stage_seconds:
        parts = [
            f"{name} {seconds:.0f} s"
            + (
                f" (compile {compile_s:.0f} s, training {training_s:.0f} s)"
                if name == "train"
                else ""
            )
            for name, seconds in stage_seconds.items()
        ]
        notes.append("Stages' wall-clock: " + ", ".join(parts) + ".")
        skipped = [s for s in ("warmup", "train", "evaluate", "plot") if s not in stage_seconds]
        if skipped:
            notes.append(
                f"Not run (up to date or restored from DVC's run cache): {', '.join(skipped)}."
            )
    return notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--record-only", action="store_true", help="record the outputs already there")
    p.add_argument(
        "--first-run",
        action="store_true",
        help="as a fresh clone: no kernel cache, no checkpoint, every stage run",
    )
    p.add_argument(
        "--pipeline-seconds", type=float, help="with --record-only: the run's wall-clock"
    )
    p.add_argument("--code-commit", help="with --record-only: the commit the outputs came from")
    args = p.parse_args(argv)
    stages = None
    if args.record_only:
        if args.pipeline_seconds is None or args.first_run:
            p.error("--record-only needs --pipeline-seconds (and records no first run)")
        commit = args.code_commit or code_commit()
    else:
        commit = code_commit()
        if args.first_run:
            for path in FRESH_CLONE_LACKS:
                shutil.rmtree(ROOT / path, ignore_errors=True)
        command = ["bash", "scripts/run.sh", *(["--force"] if args.first_run else [])]
        args.pipeline_seconds, stages = run_timed(command)
    path = record(args.pipeline_seconds, commit, stages, args.first_run)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
