"""The four stage scripts called as a user would: ``main(argv)`` / ``python -m stages.X``.

One module-scoped project runs warmup → train → evaluate → plot on debug-size params against a
temporary MLflow store; the tests then check the outs, the MLflow runs, the model logged there,
resume after SIGKILL, and that bad input fails in one line without touching existing artifacts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dreamer.records import TIMING_COLUMNS
from dreamer.run import TIMING_KEYS
from pipeline import cli, schemas

from .helpers import REPO, write_params

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from stages import evaluate, plot, train, warmup  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

STAGE_ARGS = {
    "warmup": ["--out", "data/warmup"],
    "train": [
        "--warmup",
        "data/warmup",
        "--checkpoint",
        "models/checkpoint",
        "--agent",
        "models/agent.pt",
        "--metrics",
        "metrics/train.json",
        "--curves",
        "metrics/train",
    ],
    "evaluate": [
        "--agent",
        "models/agent.pt",
        "--metrics",
        "metrics/eval.json",
        "--episodes-csv",
        "metrics/eval/episodes.csv",
        "--media",
        "media/eval",
    ],
    "plot": [
        "--curves",
        "metrics/train",
        "--eval",
        "metrics/eval.json",
        "--media",
        "media/eval",
        "--out",
        "plots",
    ],
}
MAINS = {"warmup": warmup.main, "train": train.main, "evaluate": evaluate.main, "plot": plot.main}


def run_stage(stage: str) -> int:
    return cli.run(MAINS[stage], STAGE_ARGS[stage])


def stage_process(stage: str, cwd: Path, fault: str = "", **kwargs) -> subprocess.Popen:
    """``python -m stages.<stage>`` in ``cwd``; ``fault``: a ``DREAMER_FAULT`` point at which the
    process SIGKILLs itself (``dreamer.faults``), so a kill lands where the test wants it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DREAMER_FAULT", None)
    if fault:
        env["DREAMER_FAULT"] = fault
    return subprocess.Popen(
        [sys.executable, "-m", f"stages.{stage}", *STAGE_ARGS[stage]],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder in which all four stages have run once."""
    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.delenv("DVC_EXP_NAME", raising=False)
        write_params(root)
        for stage in ("warmup", "train", "evaluate", "plot"):
            assert run_stage(stage) == 0, stage
        yield root


def test_stage_outputs(project):
    warm = json.loads((project / "data/warmup/meta.json").read_text())
    assert warm["env_id"] == "Pendulum-v1" and warm["env_steps"] >= 200
    assert (project / "data/warmup/replay/meta.json").is_file()

    summary = json.loads((project / "metrics/train.json").read_text())
    assert {
        "train/env_steps",
        "train/gradient_steps",
        "train/wall_seconds",
        "train/mean_updates_per_second",
        "loss/world_model",
    } <= set(summary)
    assert summary["train/env_steps"] == 600 and summary["train/resumed"] is False
    # 32 replayed steps per env step at B·T = 64: half an update per env step after warm-up
    assert summary["train/gradient_steps"] == (600 - warm["env_steps"]) // 2
    returns = schemas.read_csv(
        project / "metrics/train/returns.csv", schemas.validate_train_returns
    )
    losses = schemas.read_csv(project / "metrics/train/losses.csv", schemas.validate_train_losses)
    assert len(returns) >= 1 and list(losses["env_step"]) == [300, 400, 500, 600]
    assert {"loss/world_model", "loss/reward", "loss/actor", "loss/critic"} <= set(losses)

    evaluation = json.loads((project / "metrics/eval.json").read_text())
    assert {"eval/return_mean", "eval/return_std", "eval/episodes", "eval/env_steps"} <= set(
        evaluation
    )
    assert evaluation["eval/episodes"] == 2 and evaluation["eval/env_steps"] == 600
    episodes = schemas.read_csv(project / "metrics/eval/episodes.csv", schemas.validate_episodes)
    assert np.isclose(episodes["return"].mean(), evaluation["eval/return_mean"])
    # the random baseline: the same two seeded episodes with uniform random actions
    from dreamer.config import load_config
    from dreamer.evaluation import evaluate_random

    baseline = [r.return_ for r in evaluate_random(load_config(project / "params.yaml"), 2)]
    assert evaluation["eval/random_return_mean"] == pytest.approx(np.mean(baseline))
    assert evaluation["eval/random_return_std"] == pytest.approx(np.std(baseline))
    assert evaluation["eval/random_return_mean"] < -500  # Pendulum: random swinging scores ≈ −1,200

    from pipeline.media import read_gif

    frames = read_gif(project / "media/eval/episode.gif")
    # one frame per step of the 200-step episode (Pillow merges identical consecutive frames)
    assert frames.ndim == 4 and 150 <= frames.shape[0] <= 200 and frames.shape[-1] == 3
    for name in ("returns.png", "losses.png", "eval_frames.png"):
        assert (project / "plots" / name).stat().st_size > 10_000


def test_mlflow_runs_are_grouped_tagged_and_hold_the_model(project):
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    experiment = client.get_experiment_by_name("stages-test")
    runs = client.search_runs([experiment.experiment_id])
    # The fixture's execution is the first pipeline run (a later test adds another).
    parent = min(
        (r for r in runs if r.data.tags.get("stage") == "pipeline"), key=lambda r: r.info.start_time
    )
    children = {
        r.data.tags["stage"]: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == {"warmup", "train", "evaluate", "plot"}
    for run in children.values():
        tags = run.data.tags
        assert tags["env_id"] == "Pendulum-v1" and tags["dvc_exp_name"] == "workspace"
        assert tags["git_commit"] and run.info.status == "FINISHED"
        assert run.data.params["training.lr"] == "0.001"
    train_run = children["train"].info.run_id
    history = client.get_metric_history(train_run, "loss/world_model")
    assert [m.step for m in history] == sorted(m.step for m in history) and len(history) == 4
    assert client.get_metric_history(train_run, "train/return")[0].step >= 200
    assert client.get_metric_history(train_run, "updates_per_second")
    artifacts = {a.path for a in client.list_artifacts(children["plot"].info.run_id, "plots")}
    assert "plots/returns.png" in artifacts
    assert [a.path for a in client.list_artifacts(children["evaluate"].info.run_id, "video")] == [
        "video/episode.gif"
    ]

    # The logged model holds the agent file and its description, no pickle; it was registered
    # by the evaluate stage as the first version, which is @best; both URIs load the agent.
    from pipeline.models import load_agent

    model_uri = children["train"].data.tags["model_uri"]
    model = client.get_logged_model(model_uri.removeprefix("models:/"))
    assert model.source_run_id == train_run
    names = {a.path for a in client.list_logged_model_artifacts(model.model_id)}
    assert names == {"agent.pt", "MLmodel"}
    version = client.get_model_version_by_alias("dreamerv3-Pendulum-v1", "best")
    assert version.source == model_uri and version.run_id == children["evaluate"].info.run_id
    evaluation = json.loads((project / "metrics/eval.json").read_text())
    assert float(version.tags["eval_return_mean"]) == evaluation["eval/return_mean"]
    assert {"git_commit", "dvc_exp_name", "env_steps", "eval_episodes_key"} <= set(version.tags)
    uri = f"sqlite:///{project}/mlflow.db"
    for name in (model_uri, "models:/dreamerv3-Pendulum-v1@best"):
        agent, extra = load_agent(name, uri, env_id="Pendulum-v1")
        assert extra["env_steps"] == 600
    obs = {"vector": np.zeros((1, 3), np.float32)}
    action, _ = agent.act(obs, np.array([True]), agent.initial_state(1), deterministic=True)
    assert action.shape == (1, 1) and -1 <= action[0, 0] <= 1


def test_the_readme_loads_the_best_agent_and_acts_with_it(project):
    """The README's example, run as a user would: the registered @best agent plays an episode."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    (example,) = [block for block in blocks if "models:/dreamerv3-Pendulum-v1@best" in block]
    done = subprocess.run(
        [sys.executable, "-c", example],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.fullmatch(r"return -\d+\.\d\n", done.stdout), done.stdout


def test_second_plot_run_starts_a_new_pipeline_group(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project}/mlflow.db")
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    experiment = client.get_experiment_by_name("stages-test")
    before = client.search_runs([experiment.experiment_id], "tags.stage = 'pipeline'")
    assert run_stage("plot") == 0
    after = client.search_runs([experiment.experiment_id], "tags.stage = 'pipeline'")
    assert len(after) == len(before) + 1


def _copy_upstream(project: Path, folder: Path) -> None:
    shutil.copytree(project / "data", folder / "data")
    shutil.copy(project / "params.yaml", folder / "params.yaml")


def _finish(process: subprocess.Popen, returncode: int = 0) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == returncode, err
    return err


def _same_agent(a: Path, b: Path) -> None:
    """The two agent files hold the same weights, bit for bit (their MLflow run ids differ)."""
    import torch

    first, second = (torch.load(p, weights_only=True)["modules"] for p in (a, b))
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def _same_outputs(folder: Path, reference: Path) -> None:
    """Resumed or not, the train stage's outputs equal the uninterrupted run's: the agent bit for
    bit, the curves and the summary but for their timing columns and keys."""
    _same_agent(folder / "models/agent.pt", reference / "models/agent.pt")
    for name in ("returns.csv", "losses.csv"):
        got, want = (pd.read_csv(p / "metrics/train" / name) for p in (folder, reference))
        drop = [c for c in TIMING_COLUMNS if c in want]
        pd.testing.assert_frame_equal(got.drop(columns=drop), want.drop(columns=drop))
    got, want = (json.loads((p / "metrics/train.json").read_text()) for p in (folder, reference))
    assert {k: v for k, v in got.items() if k not in TIMING_KEYS} == {
        k: v for k, v in want.items() if k not in TIMING_KEYS
    }


def test_train_killed_inside_a_checkpoint_write_resumes_exactly(project, tmp_path):
    """SIGKILL inside the second checkpoint's write (its replay and state written, not renamed):
    the first checkpoint stays whole and newest, and the resumed run ends with the uninterrupted
    run's agent, bit for bit, and its curves. Then: killed after training and inside the model
    upload, the reruns only write outputs, as does a change of an ``mlflow.*`` param; other
    params start fresh."""
    _copy_upstream(project, tmp_path)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    checkpoints = tmp_path / "models/checkpoint"
    try:
        _finish(stage_process("train", tmp_path, fault="checkpoint.state:2"), -signal.SIGKILL)
        assert sorted(p.name for p in checkpoints.iterdir()) == ["ckpt-000001"]
        # written to the mirror first (outside DVC's outs), then linked into models/checkpoint
        (mirror,) = (tmp_path / ".cache/checkpoints").iterdir()
        names = sorted(p.name for p in mirror.iterdir())
        assert names[-1] == "ckpt-000001" and names[0].startswith(".ckpt-000002."), names
        assert not (tmp_path / "models/agent.pt").exists()

        err = _finish(stage_process("train", tmp_path))
        assert f"train: resuming from {Path('models/checkpoint/ckpt-000001')} at " in err
        assert json.loads((tmp_path / "metrics/train.json").read_text())["train/resumed"]
        _same_outputs(tmp_path, project)
        kept = sorted(p.name for p in checkpoints.iterdir())
        assert len(kept) == 2 and all(name.startswith("ckpt-") for name in kept), kept
        assert sorted(p.name for p in mirror.iterdir()) == kept  # the dead writer's temp is gone

        # Killed after training, before its outputs; then killed uploading the model to MLflow:
        # each rerun takes up the finished checkpoint and does not train again.
        for fault in ("train.outputs", "tracking.log_model"):
            _finish(stage_process("train", tmp_path, fault=fault), -signal.SIGKILL)
        err = _finish(stage_process("train", tmp_path))
        assert "holds the finished run" in err and "writing its outputs only" in err
        assert "compiled" not in err
        _same_outputs(tmp_path, project)
        assert sorted(p.name for p in checkpoints.iterdir()) == kept  # nothing trained or saved

        write_params(tmp_path, **{"mlflow.experiment": "stages-test-renamed"})
        assert "writing its outputs only" in _finish(stage_process("train", tmp_path))
        _same_outputs(tmp_path, project)

        # Other params (a shorter budget too, to keep the suite short): a fresh start.
        write_params(tmp_path, **{"training.lr": 5.0e-4, "training.env_steps": 300})
        assert "other params; starting fresh" in _finish(stage_process("train", tmp_path))
        summary = json.loads((tmp_path / "metrics/train.json").read_text())
        assert summary["train/resumed"] is False and summary["train/gradient_steps"] > 0
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def _one_line_failure(stage: str, cwd: Path) -> str:
    process = stage_process(stage, cwd)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"training.lr": "1e-3"}, "training.lr: expected a positive float, got '1e-3'"),
        ({"training.env_steps": -5}, "training.env_steps: expected a positive integer"),
        ({"training.colour": 1}, "training.colour: unknown key"),
        ({"env.id": "NoSuchEnv-v0"}, "env.id: unknown gymnasium environment 'NoSuchEnv-v0'"),
        ({"env.id": "Blackjack-v1"}, "unsupported observation space Tuple"),
    ],
)
def test_bad_params_fail_in_one_line_and_keep_artifacts(project, tmp_path, overrides, message):
    _copy_upstream(project, tmp_path)
    before = (tmp_path / "data/warmup/meta.json").read_bytes()
    write_params(tmp_path, **overrides)
    line = _one_line_failure("warmup", tmp_path)
    assert message in line
    assert (tmp_path / "data/warmup/meta.json").read_bytes() == before


def test_corrupt_artifacts_fail_in_one_line_naming_the_file(project, tmp_path):
    _copy_upstream(project, tmp_path)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        checkpoint = tmp_path / "models/checkpoint/ckpt-000001/state.pt"
        checkpoint.parent.mkdir(parents=True)
        checkpoint.write_bytes(b"not a checkpoint")
        line = _one_line_failure("train", tmp_path)
        assert "models/checkpoint/ckpt-000001/state.pt: corrupt or unreadable" in line
        assert line.endswith("remove models/checkpoint to start fresh")
        assert checkpoint.read_bytes() == b"not a checkpoint"

        (tmp_path / "models/agent.pt").write_bytes(b"\x00" * 100)
        assert "models/agent.pt" in _one_line_failure("evaluate", tmp_path)

        chunk = tmp_path / "data/warmup/replay/chunk_000000.npz"
        chunk.write_bytes(chunk.read_bytes()[:100])
        shutil.rmtree(checkpoint.parent.parent)
        assert "chunk_000000.npz" in _one_line_failure("train", tmp_path)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_a_run_made_to_diverge_stops_with_one_error_line_and_saves_nothing(project, tmp_path):
    """``training.lr: 1e30``: the first update throws the weights to about 1e30, every later one
    is non-finite and skipped; after ``max_skipped_updates`` in a row the stage stops with one
    line naming the update and that there is no checkpoint yet, and writes none."""
    _copy_upstream(project, tmp_path)
    write_params(tmp_path, **{"training.lr": 1.0e30, "training.max_skipped_updates": 5})
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        process = stage_process("train", tmp_path)
        out, err = process.communicate(timeout=300)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert process.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith(
        "error: training diverged: 5 updates in a row had a non-finite loss or gradient"
    )
    assert errors[0].endswith("; no checkpoint yet")
    assert not list((tmp_path / "models/checkpoint").glob("ckpt-*"))
    assert not (tmp_path / "models/agent.pt").exists()


def test_unreachable_mlflow_server_fails_fast(project, tmp_path):
    _copy_upstream(project, tmp_path)
    os.environ["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"  # discard port: nothing listens
    try:
        line = _one_line_failure("warmup", tmp_path)
        # the probe's line (mlflow's own client would retry for minutes and say something else)
        assert line.startswith("error: mlflow tracking server http://127.0.0.1:9 is unreachable (")
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_image_env_runs_through_every_stage_with_parallel_envs(tmp_path, monkeypatch):
    """CarRacing at 16×16 pixels (debug size), two subprocess envs: warm-up, train, evaluate
    with both videos, plot with the frame grids; the videos decode to the expected shapes."""
    from pipeline.media import read_gif

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    write_params(
        tmp_path,
        **{
            "env.id": "CarRacing-v3",
            "env.image_size": 16,
            "env.num_envs": 2,
            "env.action_repeat": 2,
            "env.kwargs": {"max_episode_steps": 120},
            "warmup.steps": 40,
            "training.env_steps": 120,
            "evaluate.episodes": 1,
        },
    )
    for stage in ("warmup", "train", "evaluate", "plot"):
        assert run_stage(stage) == 0, stage
    meta = json.loads((tmp_path / "data/warmup/meta.json").read_text())
    assert meta["spec"]["obs_shapes"] == {"image": [16, 16, 3]}
    assert json.loads((tmp_path / "metrics/train.json").read_text())["train/env_steps"] == 120
    episode = read_gif(tmp_path / "media/eval/episode.gif")
    assert episode.ndim == 4 and len(episode) > 10 and episode.shape[-1] == 3
    dream = read_gif(tmp_path / "media/eval/open_loop.gif")
    # real | predicted | difference, ≤ 50 frames (the GIF merges identical consecutive frames)
    assert dream.shape[1:] == (16, 48, 3) and 1 < len(dream) <= 50
    assert np.array_equal(read_gif(tmp_path / "plots/open_loop.gif"), dream)
    for name in ("eval_frames.png", "open_loop.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 5_000
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("stages-test").experiment_id], "tags.stage = 'evaluate'"
    )
    logged = {a.path for a in client.list_artifacts(runs[0].info.run_id, "video")}
    assert logged == {"video/episode.gif", "video/open_loop.gif"}


# --- device and evaluate.video: the evaluate stage on an untrained agent (no warm-up or training)
import torch  # noqa: E402  (kept with the tests below that use it)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """One MLflow store for the tests below, created once (a new sqlite store costs seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    MlflowClient(uri).search_experiments()
    return uri


def _evaluate_project(folder: Path, monkeypatch, store: str, **overrides) -> Path:
    """``folder`` as the working directory, with params.yaml (TINY_PARAMS + ``overrides``, an
    MLflow experiment of its own in ``store``) and an untrained models/agent.pt for its env."""
    from dreamer.agent import Agent
    from dreamer.checkpoint import save_agent
    from dreamer.config import load_config, override
    from dreamer.envs import DreamerEnv

    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    overrides.setdefault("mlflow.experiment", folder.name)
    cfg = load_config(write_params(folder, **overrides))
    with DreamerEnv(cfg.env, cfg.seed) as env:
        spec = env.spec
    save_agent(folder / "models/agent.pt", Agent(spec, override(cfg, device="cpu")))
    return folder


def _agents_built(monkeypatch) -> list:
    """Every Agent constructed from now on (wherever the stage builds it), in order."""
    from dreamer.agent import Agent

    built, init = [], Agent.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Agent, "__init__", recording_init)
    return built


def _tensor_devices(agent) -> set[str]:
    return {t.device.type for t in [*agent.parameters(), *agent.buffers()]}


@pytest.mark.parametrize("video", [True, False])
def test_evaluate_video_flag_decides_the_videos_not_the_metrics(
    tmp_path, monkeypatch, capsys, mlflow_store, video
):
    """An image env (both videos possible): ``evaluate.video: false`` writes neither GIF nor logs
    one, says nothing about rendering, and still writes the metrics, the episodes CSV and the
    (empty) media folder that is the stage's DVC out. ``true`` is the control."""
    _evaluate_project(
        tmp_path,
        monkeypatch,
        mlflow_store,
        **{
            "env.id": "CarRacing-v3",
            "env.image_size": 16,
            "env.action_repeat": 4,
            "env.kwargs": {"max_episode_steps": 24},
            "evaluate.episodes": 1,
            "evaluate.video": video,
        },
    )
    assert run_stage("evaluate") == 0
    gifs = {"episode.gif", "open_loop.gif"} if video else set()
    assert {p.name for p in (tmp_path / "media/eval").iterdir()} == gifs
    assert "cannot render" not in capsys.readouterr().err
    summary = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert summary["eval/episodes"] == 1
    assert {"eval/return_mean", "eval/random_return_mean"} <= set(summary)
    episodes = schemas.read_csv(tmp_path / "metrics/eval/episodes.csv", schemas.validate_episodes)
    assert len(episodes) == 1 and episodes["length"][0] == 24 // 4
    client = MlflowClient(mlflow_store)
    [run] = client.search_runs(
        [client.get_experiment_by_name(tmp_path.name).experiment_id], "tags.stage = 'evaluate'"
    )
    assert {a.path for a in client.list_artifacts(run.info.run_id, "video")} == {
        f"video/{name}" for name in gifs
    }
    assert run.data.metrics["eval/return_mean"] == pytest.approx(summary["eval/return_mean"])


def test_device_cpu_evaluates_on_the_cpu(tmp_path, monkeypatch, mlflow_store):
    _evaluate_project(
        tmp_path,
        monkeypatch,
        mlflow_store,
        device="cpu",
        **{"evaluate.episodes": 1, "evaluate.video": False},
    )
    built = _agents_built(monkeypatch)
    assert run_stage("evaluate") == 0
    [agent] = built
    assert agent.device == torch.device("cpu") and agent.cfg.device == "cpu"
    assert _tensor_devices(agent) == {"cpu"}
    assert json.loads((tmp_path / "metrics/eval.json").read_text())["eval/episodes"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_fails_in_one_line(tmp_path, monkeypatch, capsys, mlflow_store):
    _evaluate_project(tmp_path, monkeypatch, mlflow_store, device="cuda")
    assert run_stage("evaluate") == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "device: 'cuda' requested but torch sees no CUDA device" in lines[0]
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "media").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_cuda_evaluates_on_the_gpu(tmp_path, monkeypatch, mlflow_store):
    _evaluate_project(
        tmp_path,
        monkeypatch,
        mlflow_store,
        device="cuda",
        **{"evaluate.episodes": 1, "evaluate.video": False},
    )
    built = _agents_built(monkeypatch)
    assert run_stage("evaluate") == 0
    [agent] = built
    assert agent.device.type == "cuda" and _tensor_devices(agent) == {"cuda"}
    assert json.loads((tmp_path / "metrics/eval.json").read_text())["eval/episodes"] == 1
