#!/usr/bin/env bash
# Set up .venv (first time only, ~2 minutes) and run the whole pipeline: warmup -> train -> evaluate -> plot.
# Extra arguments go to `dvc repro` (e.g. `bash scripts/run.sh --force`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/dvc ] || bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"  # dvc.yaml's commands call `python`
dvc repro "$@"
