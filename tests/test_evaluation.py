"""Evaluation (dreamer/evaluation.py): seeded episodes, the mode or sampled actions, and the
random baseline on the same episodes."""

import torch

from dreamer.agent import Agent
from dreamer.config import override
from dreamer.env_pool import make_envs
from dreamer.evaluation import evaluate, evaluate_random

from .conftest import tiny


def test_random_baseline_runs_the_evaluation_episodes_reproducibly():
    cfg = tiny()
    agent = Agent(make_envs(cfg.env, 0).spec, cfg)
    evaluated, _ = evaluate(agent, cfg, 3)
    baseline = evaluate_random(cfg, 3)
    assert [r.seed for r in baseline] == [r.seed for r in evaluated] == [10_000, 10_001, 10_002]
    assert [r.length for r in baseline] == [200, 200, 200]
    scores = [r.return_ for r in baseline]
    assert scores == [r.return_ for r in evaluate_random(cfg, 3)]  # seeded action spaces
    assert len(set(scores)) == 3 and scores != [r.return_ for r in evaluated]


def test_evaluation_takes_the_mode_unless_told_to_sample():
    cfg = tiny()
    agent = Agent(make_envs(cfg.env, 0).spec, cfg)
    mode = [r.return_ for r in evaluate(agent, cfg, 2)[0]]
    assert mode == [r.return_ for r in evaluate(agent, cfg, 2)[0]]  # the mode draws nothing
    sampling = override(cfg, **{"evaluate.deterministic": False})
    sampled = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        sampled.append([r.return_ for r in evaluate(agent, sampling, 2)[0]])
    assert mode not in sampled and sampled[0] != sampled[1]
