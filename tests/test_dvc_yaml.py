"""``dvc.yaml`` lists every params key each stage reads, so DVC never reuses a stale output.

Each stage's ``main()`` runs on debug-size params while every read of a config field of the
stage's own config is recorded (attribute access on its pydantic blocks, properties included;
``load_config``'s validation and configs rebuilt from an agent file are not the stage's reads).
A key read but not covered by the stage's ``params:`` fails the test, naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dreamer import config as config_module
from pipeline import cli

from .helpers import REPO, write_params

pytest.importorskip("mlflow")
from stages import evaluate, plot, train, warmup  # noqa: E402
from tests.test_stages import STAGE_ARGS  # noqa: E402

MAINS = {"warmup": warmup.main, "train": train.main, "evaluate": evaluate.main, "plot": plot.main}
BLOCKS = [
    config_module.Config,
    config_module.EnvConfig,
    config_module.WarmupConfig,
    config_module.ModelConfig,
    config_module.WorldModelConfig,
    config_module.BehaviorConfig,
    config_module.TrainingConfig,
    config_module.EvaluateConfig,
    config_module.MlflowConfig,
]


class KeyRecorder:
    """Records ``section.key`` for every field (or property) read on the tracked config."""

    def __init__(self, monkeypatch):
        self.sections: dict[int, str] = {}  # id(block) -> its section ("" for the root)
        self.tracked: list = []  # the blocks themselves, so that no other object takes their id
        self.read: set[str] = set()
        for block in BLOCKS:
            monkeypatch.setattr(block, "__getattribute__", self._getter(block))

    def track(self, cfg: config_module.Config) -> config_module.Config:
        self.sections, self.tracked = {id(cfg): ""}, [cfg]
        for name in type(cfg).model_fields:
            value = object.__getattribute__(cfg, name)
            if isinstance(value, config_module._Block):
                self.sections[id(value)] = name
                self.tracked.append(value)
        return cfg

    def _getter(self, block):
        base = object.__getattribute__
        fields = set(block.model_fields)
        properties = {n for n in dir(block) if isinstance(getattr(block, n, None), property)}

        def getter(obj, name):
            section = self.sections.get(id(obj))
            if section is not None and (name in fields or name in properties):
                value = base(obj, name)
                if not isinstance(value, config_module._Block):  # a section, not a key
                    self.read.add(f"{section}.{name}" if section else name)
                return value
            return base(obj, name)

        return getter


def _covered(key: str, listed: list[str]) -> bool:
    return any(key == entry or key.startswith(entry + ".") for entry in listed)


def test_every_key_a_stage_reads_is_listed_in_dvc_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    write_params(tmp_path, **{"training.env_steps": 300, "evaluate.episodes": 1})
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    recorder = KeyRecorder(monkeypatch)
    load = cli.load
    monkeypatch.setattr(cli, "load", lambda path: recorder.track(load(path)))
    missing = {}
    for stage, main in MAINS.items():
        recorder.read = set()
        main(STAGE_ARGS[stage])
        listed = [p if isinstance(p, str) else next(iter(p)) for p in stages[stage]["params"]]
        missing[stage] = sorted(k for k in recorder.read if not _covered(k, listed))
        assert recorder.read, f"{stage}: no config read recorded (the recorder is broken)"
    assert missing == {stage: [] for stage in MAINS}, json.dumps(missing)


@pytest.mark.parametrize("stage", list(MAINS))
def test_every_module_a_stage_imports_is_a_dependency(stage):
    """A stage's ``deps`` cover every ``dreamer``/``pipeline``/``stages`` file it imports (plot
    lists single files), so a change to one of them reruns it."""
    import subprocess
    import sys

    code = (
        f"import sys, stages.{stage}; "
        "print('\\n'.join(m.__file__ for n, m in sys.modules.items() "
        "if n.split('.')[0] in ('dreamer', 'pipeline', 'stages') and getattr(m, '__file__', 0)))"
    )
    files = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    imported = {str(Path(f).resolve().relative_to(REPO)) for f in files}
    imported.discard("stages/__init__.py")  # the package marker, one comment line
    missing = sorted(f for f in imported if not any(f == d or f.startswith(d + "/") for d in deps))
    assert missing == [], f"{stage} imports files dvc.yaml does not list: {missing}"
