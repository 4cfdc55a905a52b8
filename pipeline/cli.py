"""What every stage script shares: argument parsing, config loading, one-line errors, atomic writes.

Light on purpose: it imports neither torch nor pandas, so a stage loads only what it uses.
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
