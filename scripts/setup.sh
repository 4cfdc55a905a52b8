#!/usr/bin/env bash
# Create .venv and install the pinned requirements (about 2 minutes, ~2 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# (grep hides pip's harmless "Location ... is ignored" warnings; pip's own exit status is kept.)
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt \
  2> >(grep -v "is ignored" >&2)
.venv/bin/python -c "import torch, gymnasium, dvc, mlflow, pandera.pandas; print('setup: ok, torch', torch.__version__)"
