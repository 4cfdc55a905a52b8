#!/usr/bin/env bash
# Set up .venv if needed and run the test suite on CPU (about 10 minutes on 2 cores with the kernel
# cache warm; compiling from an empty cache adds about 3: README, Tests).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
python -m pytest -q "$@"
