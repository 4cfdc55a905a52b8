#!/usr/bin/env bash
# Run the four stages on debug-size params with the code in $1, outputs in $2.
set -euo pipefail
CODE=$1; OUT=$2
rm -rf "$OUT"; mkdir -p "$OUT"
/work/main/.venv/bin/python - "$CODE/params.yaml" "$OUT/params.yaml" <<'PY'
import sys, yaml
p = yaml.safe_load(open(sys.argv[1]))
p["model"]["size"] = "debug"; p["compile"] = False
p["warmup"]["steps"] = 400; p["training"].update(env_steps=1000, log_every=100, checkpoint_every=200, batch_size=4, batch_length=16, train_ratio=32.0, lr_warmup=0)
p["evaluate"]["episodes"] = 2; p["mlflow"]["experiment"] = "debug-compare"
yaml.safe_dump(p, open(sys.argv[2], "w"), sort_keys=False)
PY
cd "$OUT"
export PYTHONPATH="$CODE" MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db" OMP_NUM_THREADS=2
PY=/work/main/.venv/bin/python
$PY -m stages.warmup --params params.yaml --out data/warmup
$PY -m stages.train --params params.yaml --warmup data/warmup --checkpoint models/checkpoint --agent models/agent.pt --metrics metrics/train.json --curves metrics/train
$PY -m stages.evaluate --params params.yaml --agent models/agent.pt --metrics metrics/eval.json --episodes-csv metrics/eval/episodes.csv --media media/eval
$PY -m stages.plot --params params.yaml --curves metrics/train --eval metrics/eval.json --media media/eval --out plots
