"""The rows that leave the training loop for tables and metrics, and their columns: the one
definition that the loop, the tables (``pipeline/tables.py``) and their schemas
(``pipeline/schemas.py``) share. Light on purpose (no torch): the plot stage reads it too.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

# Columns of a metrics row that time the process, not the run: they differ between two runs of
# the same params (and between a resumed run and an uninterrupted one); everything else is equal.
TIMING_COLUMNS = ["wall_seconds", "updates_per_second"]
# The columns of a metrics row before the agent's loss/* ones (the losses curve's header; the
# schema of metrics/train/losses.csv checks each). updates_per_second: over the last interval.
LOSS_COLUMNS = [
    "gradient_step",
    "env_step",
    "wall_seconds",
    "updates_per_second",
    "skipped_updates",
]


@dataclass
class EpisodeRecord:
    """One finished episode (a row of the episodes table)."""

    episode: int
    seed: int
    env_step: int  # env steps (frames, action repeat included) when the episode ended
    length: int
    return_: float  # ``return`` in every table and metric (the underscore: a Python keyword)

    def row(self) -> dict:
        """The episodes table's row: ``{column: value}`` under :data:`EPISODE_COLUMNS`."""
        return dict(zip(EPISODE_COLUMNS, astuple(self), strict=True))


# The episodes tables' columns (training returns, evaluation episodes): the record's fields.
EPISODE_COLUMNS = [f.name.removesuffix("_") for f in fields(EpisodeRecord)]
