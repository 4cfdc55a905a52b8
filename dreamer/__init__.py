"""DreamerV3 in PyTorch: world model (RSSM) + actor-critic learned in imagination.

The library knows nothing of DVC or MLflow; the pipeline in ``stages/`` drives it.

Shape letters used in comments and asserts throughout:
    B batch, T sequence (time), H imagination horizon, S stochastic groups,
    C classes per group, D features, A action dimensions, K bins (two-hot).
All tensors are batch-major: ``(B, T, ...)``.
"""

__version__ = "0.1.0"
