"""One thin script per DVC stage: warmup → train → evaluate → plot (see dvc.yaml)."""
