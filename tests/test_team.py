"""The team tracking server on loopback: PostgreSQL backend, proxied artifacts, basic-auth logins.

A fresh PostgreSQL cluster in a temporary folder and ``scripts/team_server.sh`` are started by the
module fixtures and stopped after. Checked: a request without credentials is refused; the stages'
probe refuses missing and wrong credentials in one line (a stage exits 2); the tiny pipeline runs
against the server with a login, and its runs, metrics and model (downloaded through the server)
are there. Skipped where PostgreSQL or psycopg is not installed (``.ci/run`` installs both).
"""

from __future__ import annotations

import base64
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline import tracking
from tests.test_stages import REPO, STAGE_ARGS, write_params

pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is not installed")
mlflow = pytest.importorskip("mlflow")

PASSWORD = "s3cret-for-tests"


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user there."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster on 127.0.0.1 in a temporary folder; yields a database URI."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed (initdb, pg_ctl)")
    folder = Path(tempfile.mkdtemp(prefix="dreamer-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()
    run = dict(check=True, capture_output=True, timeout=120)
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "postgres"]), **run)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    log = str(folder / "postgres.log")  # the server's output: a pipe would keep run() waiting
    subprocess.run(
        _as_postgres([pg_ctl, "-D", str(data), "-o", options, "-l", log, "-w", "start"]), **run
    )
    try:
        uri = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        import psycopg

        # autocommit: CREATE DATABASE cannot run inside a transaction
        with psycopg.connect(uri, autocommit=True) as connection:
            connection.execute("CREATE DATABASE mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """``scripts/team_server.sh`` on a free loopback port; yields its URL."""
    state = tmp_path_factory.mktemp("team")
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
        "MLFLOW_PORT": str(port),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret",
        "MLFLOW_WORKERS": "1",
    }
    log = open(state / "server.log", "w")
    process = subprocess.Popen(
        ["bash", str(REPO / "scripts/team_server.sh"), postgres, str(state / "artifacts")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, (state / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "team server did not start in 120 s"
                time.sleep(1)
        # The server's first authenticated request took longer than the probe's 5 s on a busy
        # 2-core machine: make it here, so the tests time the stages, not the server's start.
        request = urllib.request.Request(url + "/api/2.0/mlflow/experiments/search?max_results=1")
        pair = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
        urllib.request.urlopen(request, timeout=60).close()
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)
        log.close()


def _login(monkeypatch, password: str | None) -> None:
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    if password is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def test_the_server_refuses_a_request_without_credentials(server):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server + "/api/2.0/mlflow/experiments/search?max_results=1")
    assert refused.value.code == 401
    request = urllib.request.Request(server + "/api/2.0/mlflow/experiments/search?max_results=1")
    pair = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {pair}")
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200


def test_the_probe_names_a_missing_or_refused_login(server, monkeypatch):
    _login(monkeypatch, None)
    with pytest.raises(tracking.TrackingError, match="requires a login: set MLFLOW_TRACKING_US"):
        tracking.check_tracking(server)
    _login(monkeypatch, "wrong")
    with pytest.raises(tracking.TrackingError, match="refused the credentials of user 'admin'"):
        tracking.check_tracking(server)
    _login(monkeypatch, PASSWORD)
    tracking.check_tracking(server)


def _stage(stage: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", *STAGE_ARGS[stage]],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_wrong_credentials_make_a_stage_exit_2_in_one_line(server, tmp_path):
    write_params(tmp_path)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": server,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": "wrong",
    }
    done = _stage("warmup", tmp_path, env)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: mlflow tracking server {server} refused the credentials")
    assert not (tmp_path / "data").exists()


def test_the_pipeline_logs_runs_metrics_and_the_model_to_the_team_server(server, tmp_path):
    write_params(tmp_path, **{"mlflow.experiment": "team-test"})
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": server,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
    }
    env.pop("DVC_EXP_NAME", None)
    for stage in ("warmup", "train", "evaluate", "plot"):
        done = _stage(stage, tmp_path, env)
        assert done.returncode == 0, f"{stage}: {done.stderr[-2000:]}"
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
    try:
        client = mlflow.MlflowClient(server)
        experiment = client.get_experiment_by_name("team-test")
        runs = client.search_runs([experiment.experiment_id])
        stages = {r.data.tags.get("stage"): r for r in runs}
        assert set(stages) == {"pipeline", "warmup", "train", "evaluate", "plot"}
        summary = json.loads((tmp_path / "metrics/eval.json").read_text())
        assert stages["evaluate"].data.metrics["eval/return_mean"] == pytest.approx(
            summary["eval/return_mean"]
        )
        assert len(client.get_metric_history(stages["train"].info.run_id, "loss/world_model")) >= 4
        # The model, downloaded through the server's artifact proxy, is the agent file's bytes.
        folder = client.download_artifacts(
            stages["train"].info.run_id, "model", str(tmp_path / "dl")
        )
        assert (Path(folder) / "agent.pt").read_bytes() == (
            tmp_path / "models/agent.pt"
        ).read_bytes()
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)
