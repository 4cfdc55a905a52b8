"""DreamerV3 in PyTorch: world model (RSSM) + actor-critic learned in imagination.

The library knows nothing of DVC or MLflow; the pipeline in ``stages/`` drives it.

Shape letters used in comments and asserts throughout (one meaning each):
    B batch, T sequence (time), H imagination horizon, N rows of a flattened batch (B·T imagination
    starts, or one per env), A action dimensions, K bins (two-hot),
    D deterministic (GRU) state width, S stochastic groups, C classes per group,
    F model features D + S·C, E encoder embedding, G blocks (of the GRU or the decoder's map),
    V features of a vector observation.
Image shapes are the exception, by name: ``(H, W, C)`` is height, width, channels wherever a
docstring says "image". All tensors are batch-major: ``(B, T, ...)``.
"""

__version__ = "0.1.0"
