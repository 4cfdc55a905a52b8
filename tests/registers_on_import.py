"""A module that registers a gymnasium namespace when imported, as shimmy does for dm_control/…,
without telling gymnasium: the adapter must import it before it can find the ids (test_envs.py)."""

import gymnasium

gymnasium.register(
    "OnImport/Pendulum-v0",
    "gymnasium.envs.classic_control.pendulum:PendulumEnv",
    max_episode_steps=20,
)
