"""The real pipeline: ``dvc repro`` in a temporary copy of this repository, on debug-size params.

Checks what a user relies on: all four stages run and write their outs; the MLflow store lands at
the repository root (resolved from ``DVC_ROOT``) with one run per stage under one parent; a second
``dvc repro`` skips every stage; changing only ``evaluate.episodes`` reruns only ``evaluate`` and
``plot``; a queued ``dvc exp run -S`` runs in its temporary clone and lands in the same store;
``dvc push`` to an S3 remote (moto's server on loopback) and ``dvc pull`` into a second clone
retrain nothing. (Several machines sharing remotes and a server: ``tests/test_team.py``.)
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from tests.helpers import (  # noqa: E402
    COMPILED_PARAMS,
    DVC,
    KERNEL_CACHE,
    REPO,
    STAGES,
    TINY_PARAMS,
    copy_worktree,
    free_port,
    newest_checkpoint,
    process_env,
    ran,
    run,
    set_params,
    start_queue_worker,
    wait_for_experiment,
)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
BUCKET = "dreamer-remote"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port with one bucket; yields its endpoint URL."""
    pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed")
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
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
    root = copy_worktree(tmp_path_factory.mktemp("e2e") / "repo")
    env = process_env()
    set_params(root / "params.yaml", COMPILED_PARAMS)  # compiled, as a user runs it
    if KERNEL_CACHE.is_dir():  # tests/test_compiled.py compiled these graphs: reuse its kernels
        shutil.copytree(KERNEL_CACHE, root / ".cache" / "torch")
    run(["git", "init", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "e2e"], root, env)
    first = run([*DVC, "repro"], root, env)
    return {"root": root, "env": env, "first": first}


def test_repro_runs_every_stage_and_lands_runs_in_the_root_store(repo):
    root = repo["root"]
    assert ran(repo["first"]) == set(STAGES)
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
    # one folder per vector ISA (dreamer.compiled.use_cache_dir), this machine's named
    isa = re.search(
        rf"\(kernel cache {re.escape(str(root / '.cache' / 'torch'))}/(isa-\S+)\)", repo["first"]
    )
    assert isa, repo["first"]
    assert any((root / ".cache" / "torch" / isa.group(1)).iterdir())

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
    run([*DVC, "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc"], first, env)
    run([*DVC, "remote", "modify", "storage", "endpointurl", s3], first, env)
    run(["git", "add", "-A"], first, env)
    run(["git", "commit", "-qm", "a trained run"], first, env)
    assert "pushed" in run([*DVC, "push"], first, env)

    second = tmp_path / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path, env)
    assert not (second / "models/agent.pt").exists()
    run([*DVC, "pull"], second, env)
    again = run([*DVC, "repro"], second, env)
    assert ran(again) == set()
    assert all(f"Stage '{stage}' didn't change, skipping" in again for stage in STAGES)
    newest = newest_checkpoint(first).relative_to(first)
    for out in ("models/agent.pt", "data/warmup/meta.json", f"{newest}/state.pt"):
        assert (second / out).read_bytes() == (first / out).read_bytes(), out
    shown = subprocess.run(
        [*DVC, "metrics", "show", "--json"],
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
    again = run([*DVC, "repro"], root, env)
    assert ran(again) == set()
    assert all(f"Stage '{stage}' didn't change, skipping" in again for stage in STAGES)

    set_params(root / "params.yaml", {"evaluate": {"episodes": 3}})
    changed = run([*DVC, "repro"], root, env)
    assert ran(changed) == {"evaluate", "plot"}
    assert json.loads((root / "metrics/eval.json").read_text())["eval/episodes"] == 3


def test_two_queued_experiments_log_every_row_at_once_into_the_root_store(repo):
    """``dvc exp run --queue`` runs in temporary clones under ``.dvc/tmp``; two of them, run at
    once (``-j 2``) and logging every metric row (``training.log_every: 1``), land in the
    repository's own store (``DVC_ROOT``, WAL mode), tagged with their names, with every row."""
    root, env = repo["root"], repo["env"]
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "--allow-empty", "-m", "baseline"], root, env)
    for name, seed in (("four", 3), ("five", 4)):
        sets = ["-S", "evaluate.episodes=4", "-S", "training.log_every=1", "-S", f"seed={seed}"]
        run([*DVC, "exp", "run", "--queue", "-n", name, *sets], root, env)
    start_queue_worker(root, env, jobs=2)
    outputs = {name: wait_for_experiment(root, env, name) for name in ("four", "five")}
    for output in outputs.values():
        assert {"train", "evaluate", "plot"} <= ran(output)  # the seed: warm-up too unless 3
        assert "MLflow logging failed" not in output and "database is locked" not in output
    shown = run([*DVC, "exp", "show", "--csv"], root, env)
    assert "four" in shown and "five" in shown

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name(TINY_PARAMS["mlflow"]["experiment"])
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
    by_name = {r.data.tags["dvc_exp_name"]: r for r in runs}
    for name in ("four", "five"):
        assert by_name[name].data.params["training.log_every"] == "1"
        history = client.get_metric_history(by_name[name].info.run_id, "loss/world_model")
        steps = [m.step for m in history]
        assert len(steps) == len(set(steps)) > 100  # one row per env step with updates
    evaluations = client.search_runs([experiment.experiment_id], "tags.stage = 'evaluate'")
    assert {r.data.tags["dvc_exp_name"]: r.data.metrics["eval/episodes"] for r in evaluations}[
        "four"
    ] == 4


def test_the_mlflow_ui_opens_on_the_runs_table_and_draws_train_curves(repo):
    """The README's MLflow UI steps in headless Chromium (``benchmarks/mlflow_ui_check.py``):
    ``python -m pipeline.ui``'s link opens the runs table, not the GenAI overview, and the train
    runs of two pipelines draw ``train/return`` side by side. Skips without Chromium."""
    pytest.importorskip("playwright")
    spec = importlib.util.spec_from_file_location(
        "mlflow_ui_check", REPO / "benchmarks" / "mlflow_ui_check.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not Path(module.CHROMIUM).exists():
        pytest.skip(f"no Chromium at {module.CHROMIUM} (Debian package chromium)")
    client = MlflowClient(f"sqlite:///{repo['root']}/mlflow.db")
    experiment = client.get_experiment_by_name(TINY_PARAMS["mlflow"]["experiment"])
    trained = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
    runs = min(2, len(trained))  # 3 after the queued test above; 1 when run alone
    seen = module.check(repo["root"], runs=runs, env=repo["env"])
    assert seen["link"].endswith("?workflowType=machine_learning")
    assert seen["pipeline_rows"] >= runs and seen["train_return_lines"] >= runs
