"""Glue between the ``dreamer`` library and the DVC stages: tracking, data validation, plots.

``pipeline.store`` and ``pipeline.tracking`` are the only modules that import mlflow and
``pipeline.schemas`` the only one that imports pandera; both are slow to import (~2 s and ~1 s), so
this package imports neither and each stage imports just the modules it uses.
"""
