"""Run assembly (dreamer/run.py): training in one call, envs closed when a run cannot be built,
and a diverging run stopped naming its last good checkpoint."""

import pytest
import torch

from dreamer.env_pool import make_envs
from dreamer.loop import Hooks
from dreamer.run import train

from .conftest import tiny


def test_train_in_one_call_on_a_discrete_env():
    rows = []
    agent, counters = train(
        tiny(**{"env.id": "CartPole-v1", "training.env_steps": 150}), Hooks(on_metrics=rows.append)
    )
    assert counters.env_steps == 150 and agent.spec.discrete and agent.gradient_steps > 0
    assert [r["env_step"] for r in rows] == [100, 150]


def test_a_training_run_that_cannot_be_built_closes_its_envs(monkeypatch):
    """The envs come first and may be subprocesses: an error building the rest closes them."""
    import dreamer.run as run_module

    cfg = tiny(**{"env.id": "Pendulum-v1"})
    warmup = run_module.collect_warmup(cfg)
    closed = []

    def make_envs_recorded(*args, **kwargs):
        envs = make_envs(*args, **kwargs)
        close = envs.close
        envs.close = lambda: (closed.append(True), close())
        return envs

    def broken_agent(*args, **kwargs):
        raise RuntimeError("no agent today")

    monkeypatch.setattr(run_module, "make_envs", make_envs_recorded)
    monkeypatch.setattr(run_module, "Agent", broken_agent)
    with pytest.raises(RuntimeError, match="no agent today"):
        run_module.TrainingRun(cfg, warmup, checkpoint=None)
    assert closed == [True]


def test_a_diverging_run_skips_updates_then_stops_naming_the_last_good_checkpoint(tmp_path):
    """After the first checkpoint the learning rate explodes (1e30): the next update drives the
    weights to about 1e30, every later update is non-finite and skipped, and after
    ``max_skipped_updates`` in a row training stops with one line naming the update, the env step
    and the last good checkpoint, which holds finite weights; nothing diverged is saved."""
    from dreamer.checkpoint import CheckpointDir
    from dreamer.errors import DivergenceError
    from dreamer.run import TrainingRun, collect_warmup

    cfg = tiny(**{"training.env_steps": 400, "training.max_skipped_updates": 3})
    run = TrainingRun(cfg, collect_warmup(cfg), tmp_path / "checkpoint")
    saved = {}

    def explode(trainer):
        if not saved:
            saved["weights"] = {k: v.clone() for k, v in trainer.agent.state_dict().items()}
            for group in trainer.agent.optimizer.optimizer.param_groups:
                group["base_lr"] = 1.0e30

    with pytest.raises(DivergenceError) as error:
        run.run(Hooks(on_checkpoint=explode))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("training diverged: 3 updates in a row had a non-finite loss")
    assert f"the last good checkpoint is {tmp_path / 'checkpoint' / 'ckpt-000001'}" in message
    assert run.counters.skipped_updates == 3
    folders = CheckpointDir(tmp_path / "checkpoint")
    assert [p.name for p in folders.entries()] == ["ckpt-000001"]
    state = folders.load_state(folders.latest())["trainer"]["agent"]["modules"]
    assert all(torch.equal(state[k], v) for k, v in saved["weights"].items())
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
