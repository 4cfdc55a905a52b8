"""What every stage script shares: its opening (arguments, config, store check), its MLflow run,
one-line errors and atomic writes.

Light on purpose: it imports neither torch nor pandas, and mlflow only when a stage starts, so a
stage loads only what it uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from dreamer.atomic import write_text
from dreamer.config import Config, load_config
from dreamer.errors import UserError


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="the params file (default params.yaml)")
    return p


def load(params_path: str) -> Config:
    """Load and validate the config (one line naming the key on error, before any work)."""
    return load_config(params_path)


def start(
    doc: str, paths: dict[str, str], argv: list[str] | None
) -> tuple[argparse.Namespace, Config]:
    """Every stage's opening: parse ``--params`` and the stage's paths, load and check the config,
    and check the MLflow store, so bad params, an unreachable server or a refused login fail in
    one line before any work.

    Args:
        doc: the stage's module docstring (its first line is the ``--help`` description).
        paths: ``{"--flag": "help"}``; each is required: ``dvc.yaml``'s ``cmd`` names every path,
            so the stage script does not repeat them as defaults.
    """
    from pipeline.store import check_store

    p = parser(doc.splitlines()[0])
    for flag, help_text in paths.items():
        p.add_argument(flag, required=True, help=help_text)
    args = p.parse_args(argv)
    cfg = load(args.params)
    check_store(cfg)
    return args, cfg


def stage_run(cfg: Config, stage: str):
    """The stage's MLflow run, nested in this pipeline execution's parent run
    (:func:`pipeline.tracking.stage_run` under :func:`pipeline.tracking.pipeline_parent_id`)."""
    from pipeline import tracking

    return tracking.stage_run(cfg, stage, tracking.pipeline_parent_id(cfg))


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Call ``main``; turn user errors (bad params, files, server) into one line on stderr and
    exit code 2."""
    try:
        main(argv)
    except (UserError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; `dvc repro` resumes", file=sys.stderr)
        return 130
    return 0


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, frame) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    write_text(path, frame.to_csv(index=False))
