#!/usr/bin/env bash
# Set up .venv if needed and run the test suite on CPU (about 10 minutes on 2 cores, 13 from an
# empty kernel cache: README, Tests).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
python -m pytest -q "$@"
