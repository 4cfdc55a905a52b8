"""Tables that cross stage boundaries, built from library objects (validated in schemas.py)."""

from __future__ import annotations

import pandas as pd

from dreamer.loop import EpisodeRecord
from dreamer.replay import ReplayBuffer

EPISODE_COLUMNS = ["episode", "seed", "env_step", "length", "return"]


def episodes_frame(records: list[EpisodeRecord]) -> pd.DataFrame:
    """One row per finished episode: episode, seed, env_step, length, return."""
    return pd.DataFrame([r.row() for r in records], columns=EPISODE_COLUMNS)


def transitions_frame(replay: ReplayBuffer) -> pd.DataFrame:
    """One row per stored step: step, reward, flags, action_i and vector obs ``obs/<key>_i``.

    Image observations are left out (they are checked by shape and dtype in the replay itself).
    """
    arrays = replay.arrays()
    columns: dict[str, object] = {"step": range(len(arrays["reward"]))}
    columns["reward"] = arrays["reward"]
    for flag in ("is_first", "is_last", "is_terminal"):
        columns[flag] = arrays[flag]
    for i in range(arrays["action"].shape[1]):
        columns[f"action_{i}"] = arrays["action"][:, i]
    for key in replay.spec.vector_keys:
        values = arrays[f"obs/{key}"]
        for i in range(values.shape[1]):
            columns[f"obs/{key}_{i}"] = values[:, i]
    return pd.DataFrame(columns)
