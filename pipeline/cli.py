"""What every stage script shares: argument parsing, config loading, one-line errors."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from dreamer.agent import NonFiniteLossError
from dreamer.atomic import write_text
from dreamer.checkpoint import CheckpointError
from dreamer.compiled import CompileError
from dreamer.config import Config, ConfigError, load_config
from dreamer.envs import EnvSpecError
from dreamer.replay import ReplayError
from dreamer.seeding import seed_everything

from .schemas import DataValidationError
from .tracking import TrackingError

# Errors a user can cause (bad params, bad files, unreachable server): one line, exit code 2.
USER_ERRORS = (ConfigError, EnvSpecError, ReplayError, CheckpointError, DataValidationError,
               TrackingError, NonFiniteLossError, CompileError, FileNotFoundError)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="the params file (default params.yaml)")
    return p


def setup(params_path: str) -> Config:
    """Load and validate the config, then seed and size torch's thread pool."""
    cfg = load_config(params_path)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    return cfg


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Call ``main``; turn user errors into one line on stderr and exit code 2."""
    try:
        main(argv)
    except USER_ERRORS as exc:
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


def frame(rows: list[dict], columns: list[str] | None = None):
    """A pandas DataFrame from a list of row dicts (pandas imported lazily); ``columns`` keeps
    the header when there are no rows yet (e.g. no episode finished in a short run)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)
