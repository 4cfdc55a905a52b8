"""Tables that cross stage boundaries, built from library objects and validated (schemas.py)."""

from __future__ import annotations

import pandas as pd

from dreamer.records import EPISODE_COLUMNS, LOSS_COLUMNS, EpisodeRecord
from dreamer.replay import ReplayBuffer

from . import schemas


def episodes_frame(records: list[EpisodeRecord]) -> pd.DataFrame:
    """One row per finished episode, under :data:`~dreamer.records.EPISODE_COLUMNS`."""
    return pd.DataFrame([r.row() for r in records], columns=EPISODE_COLUMNS)


def transitions_frame(replay: ReplayBuffer) -> pd.DataFrame:
    """One row per stored step (see :func:`pipeline.schemas.transitions_frame`); images left out."""
    arrays = replay.arrays()
    return schemas.transitions_frame(
        arrays["reward"],
        arrays["is_first"],
        arrays["is_last"],
        arrays["is_terminal"],
        arrays["action"],
        {key: arrays[f"obs/{key}"] for key in replay.spec.vector_keys},
        stream=arrays["stream"],
    )


def validate_replay(replay: ReplayBuffer, bounds: dict, source: str) -> pd.DataFrame:
    """The replay's transitions table, validated against its spec and the env's vector bounds
    ``{key: (low, high)}`` (observations outside a bounded Box fail, naming the column)."""
    spec = replay.spec
    return schemas.validate_transitions(
        transitions_frame(replay),
        source,
        action_dim=spec.action_dim,
        discrete=spec.discrete,
        vector_columns=[
            c
            for key, shape in spec.obs_shapes.items()
            if key in bounds
            for c in schemas.vector_columns(key, shape[0])
        ],
        obs_low={key: low for key, (low, _) in bounds.items()},
        obs_high={key: high for key, (_, high) in bounds.items()},
    )


def curves_frames(curves: dict[str, list[dict]], folder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training curves ``{"returns": rows, "losses": rows}`` as validated tables, named after
    their files in ``folder`` (``returns.csv``, ``losses.csv``); both keep their header when a
    short run has no row yet."""
    returns = pd.DataFrame(curves["returns"], columns=EPISODE_COLUMNS)
    losses = pd.DataFrame(curves["losses"])
    if losses.empty:
        losses = pd.DataFrame(columns=LOSS_COLUMNS)
    return (
        schemas.validate_train_returns(returns, f"{folder}/returns.csv"),
        schemas.validate_train_losses(losses, f"{folder}/losses.csv"),
    )
