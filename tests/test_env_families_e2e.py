"""Every environment family the README names, through the path users take: ``dvc exp run -S``
at the debug size, SIGKILLed right after its first checkpoint, then ``dvc exp run`` again, which
resumes from it and finishes the pipeline.

Families: vector observations with discrete actions (``CartPole-v1``), a Dict of vectors with
continuous actions (DeepMind Control ``cartpole-balance``), pixels with continuous actions
(``CarRacing-v3``, two subprocess envs). Vector observations with continuous actions (the default
``Pendulum-v1``) go through ``dvc repro`` and a kill in tests/test_pipeline_e2e.py and
tests/test_team.py. Episodes are cut to 100 frames (gymnasium's ``max_episode_steps``) so that
the debug budget of 600 frames holds checkpoints at episode ends.
"""

from __future__ import annotations

import json

import pytest

from dreamer.faults import KILLED_MARKER
from tests.helpers import (
    DVC,
    TINY_PARAMS,
    copy_worktree,
    process_env,
    ran,
    run,
    set_params,
)

pytest.importorskip("mlflow")
SHORT = ["-S", "++env.kwargs.max_episode_steps=100", "-S", "evaluate.episodes=1"]
FAMILIES = {
    "CartPole-v1": [
        "-S",
        "presets.CartPole-v1.training.batch_length=16",
        "-S",
        "presets.CartPole-v1.training.env_steps=600",  # the preset's own budget (12,000) wins
    ],
    "dm_control/cartpole-balance-v0": [
        # the command: every DMC task died writing its first checkpoint
        "-S",
        "presets.dm_control.cartpole-balance-v0.training.env_steps=600",
    ],
    "CarRacing-v3": [
        "-S",
        "env.image_size=16",
        "-S",
        "presets.CarRacing-v3.warmup.steps=200",
        "-S",
        "presets.CarRacing-v3.training.env_steps=600",
        "-S",
        "presets.CarRacing-v3.training.train_ratio=32.0",
    ],
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = copy_worktree(tmp_path_factory.mktemp("families") / "repo")
    env = process_env()
    set_params(root / "params.yaml", {**TINY_PARAMS, "evaluate": {"episodes": 1, "video": False}})
    run(["git", "init", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "families"], root, env)
    return root, env


@pytest.mark.parametrize("env_id", list(FAMILIES))
def test_dvc_exp_run_killed_after_a_checkpoint_resumes_and_finishes(repo, env_id):
    root, env = repo
    if env_id.startswith("dm_control/"):
        pytest.importorskip("shimmy")
    before = _mirrored(root)
    command = [*DVC, "exp", "run", "-S", f"env.id={env_id}", *FAMILIES[env_id], *SHORT]
    killed = run_failing(command, root, {**env, "DREAMER_FAULT": "checkpoint.renamed:1"})
    assert f"{KILLED_MARKER} checkpoint.renamed:1" in killed, killed[-2000:]
    assert "failed to reproduce 'train'" in killed, killed[-2000:]
    assert len(_mirrored(root)) > len(before)  # the killed run wrote one (mirror first)
    assert not (root / "models/agent.pt").exists()

    resumed = run([*DVC, "exp", "run"], root, env)  # params.yaml keeps the -S values
    assert ran(resumed) == {"train", "evaluate", "plot"}, resumed[-2000:]
    # dvc exp run first checks the workspace out, which deletes the killed stage's untracked
    # models/checkpoint: the run resumes from its copy under .cache/checkpoints
    line = next(x for x in resumed.splitlines() if x.startswith("train: resuming from "))
    assert line.startswith("train: resuming from models/checkpoint/ckpt-"), line
    assert "(restored from its copy in " in line and "/.cache/checkpoints/" in line, line
    summary = json.loads((root / "metrics/train.json").read_text())
    assert summary["train/env_steps"] >= 600 and summary["train/resumed"] is True
    assert summary["train/gradient_steps"] > 0
    assert json.loads((root / "metrics/eval.json").read_text())["eval/episodes"] == 1
    shown = json.loads(run([*DVC, "exp", "show", "--json"], root, env))
    names = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    assert names, "dvc exp show lists no experiment"


def _mirrored(root) -> list:
    return sorted((root / ".cache" / "checkpoints").glob("*/ckpt-*"))


def run_failing(args: list[str], cwd, env: dict) -> str:
    import subprocess

    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0, done.stdout[-2000:]
    return done.stdout + done.stderr


def test_dvc_exp_run_killed_before_its_outputs_writes_only_the_outputs(repo):
    """Killed after training, before its outputs (the last family's params): ``dvc exp run``
    again deletes the untracked ``models/checkpoint``, takes the finished checkpoint up from its
    copy, puts it back, and writes only the outputs."""
    root, env = repo
    params = (root / "params.yaml").read_text()
    command = [*DVC, "exp", "run", "-S", "seed=9"]  # new params: warm-up and training again
    killed = run_failing(command, root, {**env, "DREAMER_FAULT": "train.outputs"})
    assert f"{KILLED_MARKER} train.outputs" in killed, killed[-2000:]
    again = run([*DVC, "exp", "run"], root, env)
    line = next(x for x in again.splitlines() if "holds the finished run" in x)
    assert "(restored from its copy in " in line and line.endswith("writing its outputs only")
    assert "compiled the update" not in again
    assert list((root / "models/checkpoint").glob("ckpt-*/state.pt"))
    (root / "params.yaml").write_text(params)
