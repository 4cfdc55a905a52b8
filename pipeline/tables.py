"""Tables that cross stage boundaries, built from library objects (validated in schemas.py)."""

from __future__ import annotations

import pandas as pd

from dreamer.loop import EpisodeRecord
from dreamer.replay import ReplayBuffer

from . import schemas

EPISODE_COLUMNS = ["episode", "seed", "env_step", "length", "return"]


def episodes_frame(records: list[EpisodeRecord]) -> pd.DataFrame:
    """One row per finished episode: episode, seed, env_step, length, return."""
    return pd.DataFrame([r.row() for r in records], columns=EPISODE_COLUMNS)


def transitions_frame(replay: ReplayBuffer) -> pd.DataFrame:
    """One row per stored step (see :func:`pipeline.schemas.transitions_frame`); images left out."""
    arrays = replay.arrays()
    return schemas.transitions_frame(
        arrays["reward"], arrays["is_first"], arrays["is_last"], arrays["is_terminal"],
        arrays["action"], {key: arrays[f"obs/{key}"] for key in replay.spec.vector_keys},
        stream=arrays["stream"])
