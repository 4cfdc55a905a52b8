"""Run the README's default pipeline, timed, and record it as the study ``default_run``.

    python benchmarks/default_run.py      # = time bash scripts/run.sh, then write the study

It runs exactly what a user runs (``bash scripts/run.sh``: set-up if needed, then ``dvc repro``
with checkpoints, DVC and MLflow on), measures its wall-clock, and writes
``benchmarks/results/default_run/``: the training curve, the evaluation episodes and the returns
plot copied from the pipeline's outputs, and ``summary.json`` with the command, the code commit,
the machine and the run's figures from ``metrics/train.json`` and ``metrics/eval.json``. Then
``python benchmarks/results_doc.py`` puts it into ``docs/results.md`` and the README's table.
``--record-only --pipeline-seconds S`` records the outputs already in the workspace instead (a
run timed by hand, e.g. ``time bash scripts/run.sh``).
"""

from __future__ import annotations

import argparse
import json
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


def record(pipeline_seconds: float, commit: str) -> Path:
    train = json.loads((ROOT / "metrics/train.json").read_text())
    evaluation = json.loads((ROOT / "metrics/eval.json").read_text())
    STUDY.mkdir(parents=True, exist_ok=True)
    for source, name in COPIED.items():
        shutil.copyfile(ROOT / source, STUDY / name)
    summary = {
        "title": "The default run: bash scripts/run.sh (Pendulum-v1, params.yaml as committed)",
        "question": "What a user sees from the README's first command: the committed dvc.lock, "
        "metrics/ and plots/ are this run's.",
        "command": "python benchmarks/default_run.py (= time bash scripts/run.sh)",
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
                "peak_rss_mib": train["train/peak_rss_mib"],
                "skipped_updates": train["train/skipped_updates"],
            }
        ],
    }
    return write_summary(STUDY, summary)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--record-only", action="store_true", help="record the outputs already there")
    p.add_argument(
        "--pipeline-seconds", type=float, help="with --record-only: the run's wall-clock"
    )
    p.add_argument("--code-commit", help="with --record-only: the commit the outputs came from")
    args = p.parse_args(argv)
    if args.record_only:
        if args.pipeline_seconds is None:
            p.error("--record-only needs --pipeline-seconds")
        commit = args.code_commit or code_commit()
    else:
        commit = code_commit()
        started = time.perf_counter()
        subprocess.run(["bash", "scripts/run.sh"], cwd=ROOT, check=True)
        args.pipeline_seconds = time.perf_counter() - started
    print(f"wrote {record(args.pipeline_seconds, commit).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
