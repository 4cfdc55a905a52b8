"""``benchmarks/train_phases.py``: its params copy changes only the budget, and its timers count a
part only inside the training loop (the compile's own first update is not the loop's)."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from dreamer.config import load_config
from tests.helpers import REPO

spec = importlib.util.spec_from_file_location(
    "train_phases", REPO / "benchmarks" / "train_phases.py"
)
train_phases = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_phases)


@pytest.mark.parametrize(
    "env_id, preset_budget",
    [("Pendulum-v1", 6000), ("CartPole-v1", 12000), ("dm_control/cartpole-balance-v0", 50000)],
)
def test_params_copy_sets_the_budget_and_the_presets_own(tmp_path, env_id, preset_budget):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["env"]["id"] = env_id
    source = tmp_path / "source.yaml"
    source.write_text(yaml.safe_dump(params, sort_keys=False))
    folder = tmp_path / "out"
    folder.mkdir()
    copy = train_phases.write_params(source, 2500, folder)
    cfg, original = load_config(copy), load_config(source)
    assert cfg.training.env_steps == 2500 and original.training.env_steps == preset_budget
    assert cfg.model == original.model and cfg.behavior == original.behavior
    assert cfg.training.train_ratio == original.training.train_ratio


class Loop:
    def compile(self):
        return self.part()

    def run(self):
        return self.part() + self.part()

    def part(self):
        return 1


def test_parts_are_counted_inside_the_loop_only():
    timers = train_phases.Timers()
    timers.wrap(Loop, "part", "part")
    timers.wrap(Loop, "compile", "compile", outer="alone")
    timers.wrap(Loop, "run", "loop", outer="loop")
    loop = Loop()
    loop.part()  # outside: not counted
    assert loop.compile() == 1  # counted itself, its inner part not
    assert loop.run() == 2
    assert dict(timers.calls) == {"compile": 1, "loop": 1, "part": 2}
    assert timers.seconds["loop"] >= timers.seconds["part"] > 0
    assert not timers.in_loop
