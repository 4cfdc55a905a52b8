"""The real pipeline: ``dvc repro`` in a temporary copy of this repository, on debug-size params.

Checks what a user relies on: all four stages run and write their outs; the MLflow store lands at
the repository root (resolved from ``DVC_ROOT``) with one run per stage under one parent; a second
``dvc repro`` skips every stage; changing only ``evaluate.episodes`` reruns only ``evaluate`` and
``plot``; ``dvc exp run -S`` runs an experiment whose runs land in the same store; ``dvc push`` to
an S3 remote (moto's server on loopback) and ``dvc pull`` into a second clone retrain nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from tests.test_stages import TINY_PARAMS  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
REPO = Path(__file__).resolve().parents[1]
BUCKET = "dreamer-remote"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
STAGES = ("warmup", "train", "evaluate", "plot")


def _run(args: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _set_params(path: Path, updates: dict) -> None:
    """Deep-merge ``updates`` into the params file (keeping every key dvc.yaml lists)."""
    params = yaml.safe_load(path.read_text())

    def merge(node: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                merge(node[key], value)
            else:
                node[key] = value

    merge(params, updates)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _ran(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port with one bucket; yields its endpoint URL."""
    pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed")
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path_factory.mktemp("s3") / "moto.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.5)
        boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git + DVC copy of this working tree (tracked and untracked-but-not-ignored files)."""
    root = tmp_path_factory.mktemp("e2e") / "repo"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "GIT_"))}
    # dvc.yaml's commands call `python`: the interpreter running these tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )
    _set_params(root / "params.yaml", {**TINY_PARAMS, "compile": True})  # as a user runs it
    _run(["git", "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "e2e"], root, env)
    first = _run([sys.executable, "-m", "dvc", "repro"], root, env)
    return {"root": root, "env": env, "first": first}


def test_repro_runs_every_stage_and_lands_runs_in_the_root_store(repo):
    root = repo["root"]
    assert _ran(repo["first"]) == set(STAGES)
    for out in (
        "data/warmup/meta.json",
        "models/agent.pt",
        "metrics/train.json",
        "metrics/eval.json",
        "plots/returns.png",
        "plots/losses.png",
    ):
        assert (root / out).is_file(), out
    assert json.loads((root / "metrics/eval.json").read_text())["eval/episodes"] == 2
    assert (root / "dvc.lock").is_file()
    # Trained through torch.compile, with the kernels cached in the project's ignored folder.
    assert json.loads((root / "metrics/train.json").read_text())["train/compile_seconds"] > 0
    assert "train: compiled the update and the policy step" in repo["first"]
    assert any((root / ".cache" / "torch").iterdir())

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name(TINY_PARAMS["mlflow"]["experiment"])
    runs = client.search_runs([experiment.experiment_id])
    stages = sorted(r.data.tags["stage"] for r in runs)
    assert stages == sorted(["pipeline", *STAGES])
    assert Path(experiment.artifact_location.removeprefix("file://")) == root / "mlartifacts"


def test_push_then_pull_into_a_second_clone_retrains_nothing(repo, s3, tmp_path):
    """The S3 remote (moto's server on loopback; any S3-compatible store via ``endpointurl``):
    ``dvc push`` from this clone, ``git clone`` + ``dvc pull`` into a second one, whose
    ``dvc repro`` then skips every stage with byte-identical outs and the same metrics."""
    first, env = repo["root"], {**repo["env"], **AWS_ENV}
    dvc = [sys.executable, "-m", "dvc"]
    _run([*dvc, "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc"], first, env)
    _run([*dvc, "remote", "modify", "storage", "endpointurl", s3], first, env)
    _run(["git", "add", "-A"], first, env)
    _run(["git", "commit", "-qm", "a trained run"], first, env)
    assert "pushed" in _run([*dvc, "push"], first, env)

    second = tmp_path / "second"
    _run(["git", "clone", "-q", str(first), str(second)], tmp_path, env)
    assert not (second / "models/agent.pt").exists()
    _run([*dvc, "pull"], second, env)
    again = _run([*dvc, "repro"], second, env)
    assert _ran(again) == set()
    assert all(f"Stage '{stage}' didn't change, skipping" in again for stage in STAGES)
    for out in ("models/agent.pt", "data/warmup/meta.json", "models/checkpoint/state.pt"):
        assert (second / out).read_bytes() == (first / out).read_bytes(), out
    shown = subprocess.run(
        [*dvc, "metrics", "show", "--json"],
        cwd=second,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    evaluation = json.loads((first / "metrics/eval.json").read_text())
    assert json.loads(shown)[""]["data"]["metrics/eval.json"]["data"] == evaluation


def test_second_repro_skips_and_params_change_reruns_only_what_depends_on_it(repo):
    root, env = repo["root"], repo["env"]
    again = _run([sys.executable, "-m", "dvc", "repro"], root, env)
    assert _ran(again) == set()
    assert all(f"Stage '{stage}' didn't change, skipping" in again for stage in STAGES)

    _set_params(root / "params.yaml", {"evaluate": {"episodes": 3}})
    changed = _run([sys.executable, "-m", "dvc", "repro"], root, env)
    assert _ran(changed) == {"evaluate", "plot"}
    assert json.loads((root / "metrics/eval.json").read_text())["eval/episodes"] == 3


def test_dvc_exp_run_with_a_set_param_lands_in_the_same_store(repo):
    root, env = repo["root"], repo["env"]
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-q", "--allow-empty", "-m", "baseline"], root, env)
    output = _run(
        [sys.executable, "-m", "dvc", "exp", "run", "-S", "training.lr=2.0e-3"], root, env
    )
    assert _ran(output) == {"train", "evaluate", "plot"}
    shown = _run([sys.executable, "-m", "dvc", "exp", "show", "--csv"], root, env)
    assert "0.002" in shown

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name(TINY_PARAMS["mlflow"]["experiment"])
    train_runs = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
    assert {r.data.params["training.lr"] for r in train_runs} == {"0.001", "0.002"}
    names = {r.data.tags["dvc_exp_name"] for r in train_runs}
    assert "workspace" in names and len(names) == 2
