"""The open-loop prediction report (5 observed + 45 imagined frames)."""

from __future__ import annotations

import numpy as np
import torch

from dreamer.agent import Agent
from dreamer.envs import env_spec_of
from dreamer.report import open_loop_frames

from .conftest import make_batch, make_spec, tiny


def test_open_loop_observes_the_context_then_imagines_from_actions_alone():
    cfg = tiny()
    agent = Agent(make_spec(vector=None, image=(16, 16, 3)), cfg)
    batch = make_batch(agent.spec, B=2, T=12)
    wm = agent.world_model
    torch.manual_seed(0)
    predicted = wm.open_loop(batch.obs, batch.action, batch.is_first, context=5)["image"]
    assert predicted.shape == (2, 12, 16, 16, 3)
    assert predicted.min() >= 0 and predicted.max() <= 255
    # Changing the observations after the context changes nothing: the rest is imagined.
    later = {"image": batch.obs["image"].clone()}
    later["image"][:, 5:] = 255 - later["image"][:, 5:]
    torch.manual_seed(0)
    same = wm.open_loop(later, batch.action, batch.is_first, context=5)["image"]
    assert torch.equal(predicted, same)
    # Changing the observations inside the context changes the prediction (all five: one alone
    # may leave every sampled class of an untrained debug model, 4 groups of 4, as it was).
    early = {"image": batch.obs["image"].clone()}
    early["image"][:, :5] = 255 - early["image"][:, :5]
    torch.manual_seed(0)
    assert not torch.equal(predicted, wm.open_loop(early, batch.action, batch.is_first, 5)["image"])


def test_report_frames_show_real_predicted_and_difference_side_by_side():
    cfg = tiny(**{"env.id": "CarRacing-v3", "env.image_size": 16, "env.action_repeat": 2})
    agent = Agent(env_spec_of(cfg.env), cfg)
    frames = open_loop_frames(agent, cfg)
    assert frames.shape == (50, 16, 48, 3) and frames.dtype == np.uint8
    real = frames[:, :, :16]
    assert real.std() > 0 and not np.array_equal(real[0], real[-1])  # a moving episode
    assert open_loop_frames(Agent(env_spec_of(tiny().env), tiny()), tiny()) is None  # vectors
