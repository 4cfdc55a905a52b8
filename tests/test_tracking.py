"""pipeline.tracking against a throw-away sqlite store (one per module: creating one takes ~2 s)."""

import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from dreamer.config import config_from_dict  # noqa: E402
from pipeline import store, tracking  # noqa: E402
from tests.helpers import free_port, process_env  # noqa: E402

# mlflow 3.17 itself triggers this SQLAlchemy deprecation when it opens a sqlite store
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


@pytest.fixture(scope="module")
def project_store(tmp_path_factory):
    """The default resolution pointed at a temporary project root: ``$DVC_ROOT/mlflow.db``.

    The working directory is an empty folder, so a stray ``./mlruns`` would show up there.
    """
    root = tmp_path_factory.mktemp("project")
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_ROOT", str(root))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("DVC_EXP_NAME", raising=False)
        mp.chdir(cwd)
        uri = store.resolve_tracking_uri()
        yield {"root": root, "cwd": cwd, "uri": uri, "client": MlflowClient(uri)}


@pytest.fixture(scope="module")
def cfg():
    return config_from_dict({"env": {"id": "CartPole-v1"}, "mlflow": {"experiment": "test"}})


# --- resolution -----------------------------------------------------------------------------------
def test_default_uri_is_absolute_sqlite_under_dvc_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    uri = store.resolve_tracking_uri()
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert uri.startswith("sqlite:////")
    assert store.artifact_root(uri) == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_default_root_is_git_top_level(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "stages").mkdir()
    monkeypatch.chdir(tmp_path / "stages")
    assert store.resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_env_var_wins_over_config_and_relative_sqlite_is_rooted(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert store.resolve_tracking_uri("sqlite:///other.db") == "http://tracking.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert store.resolve_tracking_uri("http://team:5000") == "http://team:5000"
    assert store.resolve_tracking_uri("sqlite:///runs/m.db") == (
        f"sqlite:///{tmp_path.resolve()}/runs/m.db"
    )


def test_unreachable_server_fails_fast_with_one_line(cfg, monkeypatch):
    """The probe (urllib, one try, 5 s) refuses before mlflow's client (requests, retrying for
    minutes) sends anything."""
    url = f"http://127.0.0.1:{free_port()}"
    requests = []
    monkeypatch.setattr("requests.Session.request", lambda *a, **k: requests.append(a) or 1 / 0)
    with pytest.raises(store.MlflowUnavailable) as info:
        store.check_tracking(url)
    message = str(info.value)
    assert message.startswith(f"mlflow tracking server {url} is unreachable (")
    assert "\n" not in message
    assert isinstance(info.value, RuntimeError)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    with pytest.raises(store.MlflowUnavailable, match="unreachable"):
        with tracking.stage_run(cfg, "warmup"):
            pytest.fail("the block must not run")
    assert requests == []


def test_a_server_that_answered_is_not_probed_again_while_fresh(monkeypatch):
    """Each probe of a basic-auth server costs it a slow password hash: a stage's later probes
    within PROBE_FRESH_S reuse the answer; a new login, or a stale answer, asks again."""
    import http.server
    import threading

    asked = []

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(store, "_answered", {})
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ada")
    try:
        store.check_tracking(url)
        assert len(asked) == 2  # /health and one authenticated read
        store.check_tracking(url)
        assert len(asked) == 2
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
        store.check_tracking(url)
        assert len(asked) == 4
        monkeypatch.setattr(store, "PROBE_FRESH_S", 0.0)
        store.check_tracking(url)
        assert len(asked) == 6
    finally:
        server.shutdown()
        server.server_close()


# --- runs -----------------------------------------------------------------------------------------
def test_stage_runs_nest_under_one_parent_with_tags_and_params(project_store, cfg):
    client = project_store["client"]
    with tracking.stage_run(cfg, "warmup") as warmup:
        warmup.log_metrics({"warmup/episodes": 3}, step=100)
    with tracking.stage_run(cfg, "train", parent_run_id=warmup.parent_run_id) as train:
        pass
    assert train.parent_run_id == warmup.parent_run_id
    assert train.run_id != warmup.run_id

    parent = client.get_run(warmup.parent_run_id)
    assert parent.info.run_name.startswith("pipeline CartPole-v1 ")
    assert parent.data.tags["stage"] == "pipeline"
    assert parent.info.status == "FINISHED"
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.name == "test"
    assert (
        experiment.artifact_location == (project_store["root"].resolve() / "mlartifacts").as_uri()
    )

    for stage_run, stage in [(warmup, "warmup"), (train, "train")]:
        run = client.get_run(stage_run.run_id)
        assert run.info.run_name == stage
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == warmup.parent_run_id
        assert tags["stage"] == stage
        assert tags["env_id"] == "CartPole-v1"
        assert tags["dvc_exp_name"] == "workspace"
        assert tags["config_hash"] == cfg.hash()
        assert tags["git_commit"]
        assert run.data.params["training.lr"] == str(cfg.training.lr)
        assert run.data.params["env.id"] == "CartPole-v1"
        assert set(run.data.params) == set(cfg.flat())
    assert client.get_run(warmup.run_id).data.metrics == {"warmup/episodes": 3.0}
    assert (project_store["root"] / "mlflow.db").is_file()
    assert not (project_store["cwd"] / "mlruns").exists()
    assert not list(project_store["cwd"].iterdir())


def test_unknown_parent_gets_a_new_parent_and_one_warning(project_store, cfg, capsys):
    missing = "0" * 32
    with tracking.stage_run(cfg, "evaluate", parent_run_id=missing) as run:
        pass
    with tracking.stage_run(cfg, "plot", parent_run_id=missing):
        pass
    assert run.parent_run_id != missing
    parent = project_store["client"].get_run(run.parent_run_id)
    assert parent.info.run_name.startswith("pipeline CartPole-v1")
    assert capsys.readouterr().err.count(missing) == 1


def test_parent_of_another_dvc_experiment_is_not_reused(project_store, cfg, monkeypatch):
    """A cached upstream stage hands over the parent of the execution that produced it."""
    with tracking.stage_run(cfg, "warmup") as warmup:  # workspace
        pass
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-lark")
    with tracking.stage_run(cfg, "train", parent_run_id=warmup.parent_run_id) as train:
        pass
    with tracking.stage_run(cfg, "evaluate", parent_run_id=train.parent_run_id) as evaluate:
        pass
    assert train.parent_run_id != warmup.parent_run_id
    assert evaluate.parent_run_id == train.parent_run_id
    parent = project_store["client"].get_run(train.parent_run_id)
    assert parent.info.run_name.startswith("pipeline CartPole-v1 lucky-lark ")
    assert parent.data.tags["dvc_exp_name"] == "lucky-lark"
    # The parent carries the config, so a sweep's pipeline runs compare by their params in the UI.
    assert parent.data.params == train.client.get_run(train.run_id).data.params
    assert parent.data.params["env.id"] == "CartPole-v1"


def test_pipeline_parent_id_gives_one_parent_per_execution(project_store, monkeypatch):
    cfg = config_from_dict({"env": {"id": "CartPole-v1"}, "mlflow": {"experiment": "grouping"}})
    client = project_store["client"]

    def execute(*stages):
        parents = set()
        for stage in stages:
            with tracking.stage_run(cfg, stage, tracking.pipeline_parent_id(cfg)) as run:
                parents.add(run.parent_run_id)
        assert len(parents) == 1
        [parent] = parents
        children = client.search_runs(
            [run.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'"
        )
        assert sorted(c.data.tags["stage"] for c in children) == sorted(stages)
        return parent

    assert tracking.pipeline_parent_id(cfg) is None  # no experiment yet
    first = execute("warmup", "train", "evaluate", "plot")
    assert tracking.pipeline_parent_id(cfg) == first
    second = execute("evaluate", "plot")  # `dvc repro` after editing evaluate.episodes
    third = execute("plot")
    fourth = execute("evaluate", "plot")  # evaluate comes before the last parent's plot
    assert len({first, second, third, fourth}) == 4
    monkeypatch.setenv("DVC_EXP_NAME", "brave-bee")
    assert tracking.pipeline_parent_id(cfg) is None
    assert execute("train", "evaluate") not in {first, second, third, fourth}


def test_failed_block_marks_run_failed_and_reraises(project_store, cfg):
    with pytest.raises(ValueError, match="loss/reward is NaN"):
        with tracking.stage_run(cfg, "train") as run:
            raise ValueError("loss/reward is NaN at gradient step 12")
    child = project_store["client"].get_run(run.run_id)
    assert child.info.status == "FAILED"
    assert child.data.tags["error"].startswith("ValueError: loss/reward is NaN")
    assert project_store["client"].get_run(run.parent_run_id).info.status == "FAILED"


def test_dvc_experiment_name_tag(project_store, cfg, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-lark")
    with tracking.stage_run(cfg, "warmup") as run:
        run.set_tags({"note": 1})
    tags = project_store["client"].get_run(run.run_id).data.tags
    assert tags["dvc_exp_name"] == "lucky-lark"
    assert tags["note"] == "1"


def test_log_metric_rows_logs_whole_curves_in_batches(project_store, cfg):
    rows = [
        {
            "gradient_step": 10 * i,
            "env_step": 100 * i,
            "loss/reconstruction": 1.0 / (i + 1),
            "loss/kl_dynamics": math.nan if i == 3 else float(i),
            "updates_per_second": math.inf if i == 4 else 2.0,
            "note": "text is skipped",
        }
        for i in range(700)
    ]
    with tracking.stage_run(cfg, "train") as run:
        logged = run.log_metric_rows(rows, step_key="gradient_step")
        n_returns = run.log_metric_rows(
            [{"env_step": 50, "return": -120.5, "episode": 0}],
            "env_step",
            prefix="train/",
            keys=["return"],
        )
    assert logged == 700 * 4 - 2 and n_returns == 1
    client = project_store["client"]
    history = client.get_metric_history(run.run_id, "loss/reconstruction")
    assert sorted(m.step for m in history) == [10 * i for i in range(700)]
    by_step = {m.step: m.value for m in history}
    assert by_step[20] == pytest.approx(1 / 3)
    kl_steps = {m.step for m in client.get_metric_history(run.run_id, "loss/kl_dynamics")}
    assert 30 not in kl_steps and len(kl_steps) == 699
    [ret] = client.get_metric_history(run.run_id, "train/return")
    assert (ret.step, ret.value) == (50, -120.5)
    assert "train/episode" not in client.get_run(run.run_id).data.metrics


def test_artifact_round_trip(project_store, cfg, tmp_path):
    table = tmp_path / "episodes.csv"
    table.write_text("episode,return\n0,1.5\n")
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "returns.png").write_bytes(b"\x89PNG fake")
    with tracking.stage_run(cfg, "evaluate") as run:
        run.log_artifact(table, "tables")
        run.log_artifact(folder, "plots")
        run.log_dict({"eval/return_mean": 1.5}, "eval.json")
    got = tracking.download_artifact(run.run_id, "tables/episodes.csv", tmp_path / "dl")
    assert got.read_text() == table.read_text()
    got = tracking.download_artifact(run.run_id, "plots", tmp_path / "dl2")
    assert (got / "returns.png").read_bytes() == b"\x89PNG fake"
    got = tracking.download_artifact(run.run_id, "config.json", tmp_path / "dl3")
    assert '"CartPole-v1"' in got.read_text()
    # artifacts live beside the database, not in the working directory
    assert list((project_store["root"] / "mlartifacts").rglob("episodes.csv"))
    assert not (project_store["cwd"] / "mlruns").exists()


def test_experiment_creation_race_is_tolerated(project_store):
    client = project_store["client"]
    store.get_or_create_experiment("raced", None, client)

    class LateClient:
        """Sees no experiment at first, as if another process created it just after."""

        tracking_uri = client.tracking_uri
        calls = 0

        def get_experiment_by_name(self, name):
            self.calls += 1
            return None if self.calls == 1 else client.get_experiment_by_name(name)

        def create_experiment(self, name, artifact_location=None, tags=None):
            return client.create_experiment(name, artifact_location=artifact_location, tags=tags)

        def set_experiment_tag(self, *args):
            return client.set_experiment_tag(*args)

    assert store.get_or_create_experiment("raced", None, LateClient()) == (
        client.get_experiment_by_name("raced").experiment_id
    )


def test_deleted_experiment_is_a_clear_error(project_store):
    client = project_store["client"]
    experiment_id = store.get_or_create_experiment("gone", None, client)
    client.delete_experiment(experiment_id)
    with pytest.raises(store.TrackingError, match="'gone' is deleted"):
        store.get_or_create_experiment("gone", None, client)


def test_sqlite_parent_folder_is_created(tmp_path):
    store.check_tracking(f"sqlite:///{tmp_path}/deep/er/mlflow.db")
    assert Path(tmp_path, "deep", "er").is_dir()


def test_parallel_stages_can_create_a_new_store_together(tmp_path):
    """Two processes (two queued ``dvc exp`` runs) opening a store that does not exist yet."""
    script = (
        "from dreamer.config import config_from_dict\n"
        "from pipeline import tracking\n"
        "cfg = config_from_dict({'mlflow': {'experiment': 'parallel'}})\n"
        "with tracking.stage_run(cfg, 'warmup') as run:\n"
        "    run.log_metrics({'x': 1.0})\n"
    )
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DVC_ROOT": str(tmp_path), "PYTHONPATH": str(repo)}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("parallel")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.tags["stage"] for run in runs) == ["pipeline"] * 2 + ["warmup"] * 2


def test_a_sqlite_store_is_switched_to_write_ahead_logging(tmp_path):
    """WAL: readers (a browsing ``mlflow ui``, another queued run's searches) never block the
    writer, so parallel experiments do not fail with "database is locked"."""
    import sqlite3

    store.check_tracking(f"sqlite:///{tmp_path}/mlflow.db")
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- logging during training must never stop it ---------------------------------------------------
class FlakyRun:
    """A StageRun stand-in whose logging fails while ``down`` is set."""

    run_id = "flaky"
    metric_entries = staticmethod(tracking.StageRun.metric_entries)

    def __init__(self):
        self.down, self.logged, self.calls = False, [], 0

    def log_entries(self, entries, quick=False):
        self.calls += 1
        if self.down:
            raise mlflow.exceptions.MlflowException("database is locked")
        self.logged += entries


def test_a_logging_failure_during_training_is_kept_retried_and_reported(monkeypatch, capsys):
    from dreamer.records import EpisodeRecord
    from pipeline import progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    run = FlakyRun()
    monitor = progress.TrainMonitor(run, total=100, initial=0)
    monitor.on_metrics({"gradient_step": 1, "updates_per_second": 2.0, "loss/x": 1.0})
    run.down = True
    for step in range(2, 6):  # fails once, then waits RETRY_S before the next try
        monitor.on_metrics({"gradient_step": step, "updates_per_second": 2.0, "loss/x": 1.0})
    monitor.on_episode(EpisodeRecord(0, 0, 50, 50, -3.0))
    assert run.calls == 2 and len(run.logged) == 3  # gradient_step, updates_per_second, loss
    err = capsys.readouterr().err
    assert err.count("MLflow logging failed (MlflowException: database is locked)") == 1
    run.down = False
    clock[0] += progress.RETRY_S
    monitor.on_metrics({"gradient_step": 6, "updates_per_second": 2.0, "loss/x": 1.0})
    assert "logging works again; 17 kept values sent" in capsys.readouterr().err
    assert sorted(m.step for m in run.logged if m.key == "loss/x") == [1, 2, 3, 4, 5, 6]
    assert [m.value for m in run.logged if m.key == "train/return"] == [-3.0]

    run.down = True  # down to the end: close() names what is missing, and does not raise
    monitor.on_metrics({"gradient_step": 7, "updates_per_second": 2.0, "loss/x": 1.0})
    monitor.close()
    assert "3 metric values of MLflow run flaky could not be logged" in capsys.readouterr().err


def _start_server(port: int, store: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--backend-store-uri", f"sqlite:///{store}/mlflow.db", "--workers", "1"]
        + ["--artifacts-destination", str(store / "artifacts")],
        env=env,
        stdout=open(log, "a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return process
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)


def _stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, 9)
    process.wait(timeout=30)


def _wait_until_paused(process: subprocess.Popen, timeout: float = 300) -> None:
    """Until ``process`` is stopped (state ``T`` in ``/proc/<pid>/stat``)."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()[0] != "T":
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"the process did not pause within {timeout:g} s"
        time.sleep(0.05)


def test_training_survives_its_tracking_server_stopping_and_restarting(tmp_path):
    """The train stage logs every row (``training.log_every: 1``) to a server that is stopped
    once the first checkpoint is written and started again once the second one is: training goes
    on, the stage ends cleanly, and the server ends up holding every row and every episode."""
    import pandas as pd

    from tests.helpers import write_params
    from tests.test_stages import STAGE_ARGS

    repo = Path(__file__).resolve().parents[1]
    port, server_dir = free_port(), tmp_path / "server"
    server_dir.mkdir()
    log = tmp_path / "server.log"
    write_params(tmp_path, **{"training.log_every": 1, "training.env_steps": 1000})
    env = process_env(PYTHONPATH=str(repo), MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
    server = _start_server(port, server_dir, log)
    try:
        subprocess.run(
            [sys.executable, "-m", "stages.warmup", *STAGE_ARGS["warmup"]],
            cwd=tmp_path,
            env=env,
            check=True,
            capture_output=True,
        )
        # The train process pauses itself (SIGSTOP) right after its first and second checkpoint
        # (dreamer.faults): the server is stopped at the first pause and started at the second,
        # so training runs on between the two with its server down, whatever the machine's speed.
        pauses = "checkpoint.linked:1:stop,checkpoint.linked:2:stop"
        train = subprocess.Popen(
            [sys.executable, "-m", "stages.train", *STAGE_ARGS["train"]],
            cwd=tmp_path,
            env={**env, "DREAMER_FAULT": pauses},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for action in ("stop", "start"):
            _wait_until_paused(train)
            if action == "stop":
                _stop_server(server)
            else:
                server = _start_server(port, server_dir, log)
            os.kill(train.pid, signal.SIGCONT)
        out, err = train.communicate(timeout=600)
        assert train.returncode == 0, err
        assert "warning: MLflow logging failed" in err and "logging works again" in err, err
        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.get_experiment_by_name("stages-test")
        (run,) = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
        losses = pd.read_csv(tmp_path / "metrics/train/losses.csv")
        returns = pd.read_csv(tmp_path / "metrics/train/returns.csv")
        history = client.get_metric_history(run.info.run_id, "loss/world_model")
        assert sorted(m.step for m in history) == losses["gradient_step"].tolist()
        history = client.get_metric_history(run.info.run_id, "train/return")
        assert sorted(m.step for m in history) == returns["env_step"].tolist()
    finally:
        _stop_server(server)


def test_the_experiment_is_marked_as_model_training_for_the_ui(tmp_path):
    """The experiment carries ``mlflow.experimentKind: custom_model_development``, which MLflow's
    UI reads where its workflow toggle is off (MLflow 3.17's own server goes by the toggle: the
    link of ``python -m pipeline.ui``, checked in a browser by test_pipeline_e2e). Stores made
    before the tag get it on their next stage."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    made = store.get_or_create_experiment("kind", client=client)
    assert client.get_experiment(made).tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("old")  # as earlier versions made it: no kind
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert store.get_or_create_experiment("old", client=client) == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
