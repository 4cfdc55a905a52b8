#!/usr/bin/env bash
# The GPU timings of issue 36 as one short run (a lent H200: 15 minutes of device time in all).
#
#   bash benchmarks/gpu_run.sh OUT_DIR      # on the GPU machine, from the repository root
#
# One update of size1m, the 64×64 image model and size12m (B 16 × T 64), eager float32 against
# the fast path (compiled, precision auto = bfloat16 on the GPU), timed interleaved by
# benchmarks/throughput.py --device cuda; each size in its own time box, so a slow compile costs
# that size only. The inductor/Triton kernels of each size are compiled in its process (the cache
# is the machine's /tmp, kept for the sizes after it). Prints and writes OUT_DIR/<name>.txt and a
# JSON line per size; the official JAX update for comparison: 22 ms at 16 × 64 in bfloat16 on a
# GB200 (../shared/ANCHORS.md). A machine without the project's pure-Python dependencies (the lent
# H200 has torch, not pydantic or gymnasium, and no network) gets them from WHEELS=DIR, made here
# with `pip download pydantic==2.14.4 gymnasium==1.4.0 pyyaml --python-version 3.12
# --only-binary=:all: --platform manylinux2014_x86_64 -d DIR` and carried along.
set -uo pipefail
out=${1:?usage: $0 OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ -n "${WHEELS:-}" ]; then  # no-deps: keep the machine's own numpy and torch
  "$PY" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl 2>&1 | tail -2
fi
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/device.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> "$out/device.txt" 2>&1
box() {  # box SECONDS NAME ARGS...: one throughput run, killed with its children past SECONDS
  local seconds=$1 name=$2
  shift 2
  echo "== $name: python benchmarks/throughput.py --device cuda $*" | tee "$out/$name.txt"
  timeout --kill-after=10 "$seconds" "$PY" benchmarks/throughput.py --device cuda "$@" 2>&1 \
    | tee -a "$out/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$out/$name.txt"
  pkill -9 -f "benchmarks/throughput.py" 2>/dev/null || true
}
box 200 size1m --sizes size1m
box 150 image --sizes size1m --image --action-dim 3
box 150 size12m --sizes size12m
