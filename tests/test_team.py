"""The team tracking server on loopback: PostgreSQL backend, proxied artifacts, basic-auth logins.

A fresh PostgreSQL cluster in a temporary folder and ``scripts/team_server.sh`` are started by the
module fixtures and stopped after. Checked: a request without credentials is refused; the stages'
probe refuses missing and wrong credentials in one line (a stage exits 2).

Then two machines (two clones of one bare git repository, one DVC remote folder, the server) do
what README "Team and scale" shows: a ``dvc repro`` killed on A resumes on B from the checkpoint
A pushed; the finished run's runs, metrics and model (downloaded through the server) are there;
each machine runs its part of a sweep with its own ``dvc queue`` worker and ``dvc exp push``es it,
and both see both experiments (``dvc exp list origin``, ``dvc exp pull``, the server's parent runs
with their params). Skipped where PostgreSQL or psycopg is not installed (``.ci/run`` installs
both).
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline import store
from tests.helpers import (
    DVC,
    REPO,
    TINY_PARAMS,
    copy_worktree,
    free_port,
    newest_checkpoint,
    process_env,
    ran,
    repro_killed_at,
    run,
    set_params,
    start_queue_worker,
    wait_for_experiment,
    write_params,
)
from tests.test_stages import STAGE_ARGS

pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is not installed")
mlflow = pytest.importorskip("mlflow")
torch = pytest.importorskip("torch")

from dreamer.checkpoint import load_agent  # noqa: E402
from pipeline import models  # noqa: E402

PASSWORD = "s3cret-for-tests"  # the admin's
PG_PASSWORD = "pg-s3cret-for-tests"  # PostgreSQL's, in MLFLOW_BACKEND_STORE_URI only
MODEL = "dreamerv3-Pendulum-v1"


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user there."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster on 127.0.0.1 in a temporary folder, password logins only
    (scram-sha-256); yields the URI of its database ``mlflow``, password included."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed (initdb, pg_ctl)")
    folder = Path(tempfile.mkdtemp(prefix="dreamer-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    run = dict(check=True, capture_output=True, timeout=120)
    pwfile = folder / "pwfile"
    pwfile.write_text(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres")
    init = [initdb, "-D", str(data), "-A", "scram-sha-256", "-U", "postgres", f"--pwfile={pwfile}"]
    subprocess.run(_as_postgres(init), **run)
    pwfile.unlink()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    log = str(folder / "postgres.log")  # the server's output: a pipe would keep run() waiting
    subprocess.run(
        _as_postgres([pg_ctl, "-D", str(data), "-o", options, "-l", log, "-w", "start"]), **run
    )
    try:
        uri = f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{port}/postgres"
        import psycopg

        # autocommit: CREATE DATABASE cannot run inside a transaction
        with psycopg.connect(uri, autocommit=True) as connection:
            connection.execute("CREATE DATABASE mlflow")
        yield f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)


SERVER_STATE: dict[str, Path] = {}  # the running server's folders, for the permission test


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """``scripts/team_server.sh`` on a free loopback port, every secret in its environment;
    yields its URL."""
    state = tmp_path_factory.mktemp("team")
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": postgres,
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
        "MLFLOW_PORT": str(port),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret",
        "MLFLOW_STATE_DIR": str(state / "state"),
        "MLFLOW_WORKERS": "1",
    }
    SERVER_STATE.update(state=state / "state", artifacts=state / "artifacts")
    log = open(state / "server.log", "w")
    process = subprocess.Popen(
        ["bash", str(REPO / "scripts/team_server.sh"), str(state / "artifacts")],
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


@pytest.mark.parametrize(
    ("unset", "extra", "named"),
    [
        ("MLFLOW_BACKEND_STORE_URI", {}, "MLFLOW_BACKEND_STORE_URI is not set"),
        ("MLFLOW_AUTH_ADMIN_PASSWORD", {}, "MLFLOW_AUTH_ADMIN_PASSWORD is not set"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", {}, "MLFLOW_FLASK_SERVER_SECRET_KEY is not set"),
        ("MLFLOW_STATE_DIR", {}, "MLFLOW_STATE_DIR is not set"),
        (None, {"MLFLOW_STATE_DIR": str(REPO / "state")}, "is inside the repository"),
        (None, {"MLFLOW_STATE_DIR": "state"}, "MLFLOW_STATE_DIR 'state' is a relative path"),
        (None, {"ARTIFACTS": "art"}, "the artifacts destination 'art' is a relative path"),
        (None, {"ARTIFACTS": str(REPO / "art")}, "is inside the repository"),
        (None, {"MLFLOW_HOST": "0.0.0.0"}, "MLFLOW_HOST=0.0.0.0 serves logins over plain HTTP"),
        (None, {"MLFLOW_AUTH_CACHE_TTL_S": "1m"}, "MLFLOW_AUTH_CACHE_TTL_S must be a whole"),
    ],
)
def test_the_server_script_refuses_missing_secrets_unsafe_places_and_plain_http(
    unset, extra, named, tmp_path
):
    """One line naming what to fix, before anything is made (nothing in the repository)."""
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": "sqlite:///x.db",
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret",
        "MLFLOW_STATE_DIR": str(tmp_path / "s" / "state"),
        **extra,
    }
    env.pop(unset, None)
    artifacts = env.pop("ARTIFACTS", str(tmp_path / "s/art"))
    done = subprocess.run(
        ["bash", str(REPO / "scripts/team_server.sh"), artifacts],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ") and named in done.stderr
    assert not (tmp_path / "s").exists() and not (REPO / "state").exists()


def test_no_command_line_holds_a_password_and_the_state_is_private(server):
    """Every process's command line (what any local user sees in ``ps``) is free of the
    PostgreSQL and the admin password; the server's folders are 0700 and its files 0600."""
    leaks = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended meanwhile
        if PG_PASSWORD in text or PASSWORD in text:
            leaks.append(f"{cmdline.parent.name}: {text[:200]}")
    assert not leaks, leaks
    state, artifacts = SERVER_STATE["state"], SERVER_STATE["artifacts"]
    for folder in (state, artifacts):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for name in ("mlflow_auth.ini", "mlflow_auth.db"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name


def _as_user(server: str, user: str, password: str, path: str, body: dict | None = None) -> int:
    """HTTP status of one API call as ``user``."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server + path, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {pair}")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        return refused.code


def _team_users(server: str, *args: str, password: str = "") -> str:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": server,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
        "TEAM_USER_PASSWORD": password,
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/team_users.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_one_login_per_person_with_a_grant_and_a_rotated_password(server, monkeypatch):
    """The admin creates two users and grants one EDIT on an experiment and on a registered model
    (scripts/team_users.py): only that one can log a run or tag the model; after a new password
    the old one is refused."""
    _login(monkeypatch, PASSWORD)  # the admin makes the experiment
    experiment = mlflow.MlflowClient(server).create_experiment("team-permissions")
    _team_users(server, "create", "alice", password="alice-password-1")
    _team_users(server, "create", "bob", password="bob-password-1")
    _team_users(server, "grant", "alice", "team-permissions")
    run = {"experiment_id": experiment}
    assert _as_user(server, "bob", "bob-password-1", "/api/2.0/mlflow/runs/create", run) == 403
    assert _as_user(server, "alice", "alice-password-1", "/api/2.0/mlflow/runs/create", run) == 200
    # a registered model: whoever may edit it adds versions, sets tags, moves aliases
    mlflow.MlflowClient(server).create_registered_model("team-model")
    _team_users(server, "grant", "alice", "--model", "team-model")
    tag = {"name": "team-model", "key": "note", "value": "x"}
    set_tag = "/api/2.0/mlflow/registered-models/set-tag"
    assert _as_user(server, "bob", "bob-password-1", set_tag, tag) == 403
    assert _as_user(server, "alice", "alice-password-1", set_tag, tag) == 200
    _team_users(server, "password", "alice", password="alice-password-2")
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _as_user(server, "alice", "alice-password-1", search) == 401
    assert _as_user(server, "alice", "alice-password-2", search) == 200


def test_a_changed_admin_password_takes_effect_at_the_next_start(tmp_path):
    """MLflow applies MLFLOW_AUTH_ADMIN_PASSWORD only when it creates the admin; the script's
    ``sync-admin`` (run before every start) sets the stored one, so the old password stops."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    database = f"sqlite:///{tmp_path}/auth.db"
    (tmp_path / "auth.ini").write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {database}\nadmin_username = admin\n"
    )
    logins = SqlAlchemyStore()
    logins.init_db(database)
    logins.create_user("admin", "old-admin-password", is_admin=True)
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": "new-admin-password",
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/team_users.py"), "sync-admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert not logins.authenticate_user("admin", "old-admin-password", use_primary=True)
    assert logins.authenticate_user("admin", "new-admin-password", use_primary=True)


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
    with pytest.raises(store.TrackingError, match="requires a login: set MLFLOW_TRACKING_US"):
        store.check_tracking(server)
    _login(monkeypatch, "wrong")
    with pytest.raises(store.TrackingError, match="refused the credentials of user 'admin'"):
        store.check_tracking(server)
    _login(monkeypatch, PASSWORD)
    store.check_tracking(server)


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


# --- Several machines: one git remote, one DVC remote, one MLflow server ------------------------
@pytest.fixture(scope="module")
def machines(server, tmp_path_factory):
    """Machine A: a git + DVC copy of this repository on the tiny params, its git remote ``origin``
    a bare repository and its default DVC remote a folder, logging to the team server as carol
    (her own login, EDIT on the experiment; not the admin). Machine B is a ``git clone`` of
    ``origin`` made by the tests at ``b``."""
    base = tmp_path_factory.mktemp("machines")
    a, origin = copy_worktree(base / "a"), base / "origin.git"
    # The admin makes the experiment and a login for the person who runs both machines.
    with pytest.MonkeyPatch.context() as admin:
        _login(admin, PASSWORD)
        mlflow.MlflowClient(server).create_experiment("team-machines")
    _team_users(server, "create", "carol", password="carol-password")
    _team_users(server, "grant", "carol", "team-machines")
    env = process_env(
        MLFLOW_TRACKING_URI=server,
        MLFLOW_TRACKING_USERNAME="carol",
        MLFLOW_TRACKING_PASSWORD="carol-password",
    )
    params = {
        **TINY_PARAMS,
        "evaluate": {"episodes": 1},
        "mlflow": {"experiment": "team-machines"},
    }
    set_params(a / "params.yaml", params)
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base, env)
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "remote", "add", "origin", str(origin)],
        [*DVC, "remote", "add", "-d", "storage", str(base / "dvc-storage")],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "the project, a DVC remote"],
        ["git", "push", "-q", "-u", "origin", "main"],
    ):
        run(command, a, env)
    return {"a": a, "b": base / "b", "env": env, "server": server}


@contextmanager
def _client(machines: dict) -> Iterator[mlflow.MlflowClient]:
    """A client of the team server, logged in as the machines are (MLflow reads the login from
    the environment)."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    os.environ.update({key: machines["env"][key] for key in keys})
    try:
        yield mlflow.MlflowClient(machines["server"])
    finally:
        for key in keys:
            os.environ.pop(key, None)


def _kill_during_train(root: Path, env: dict) -> None:
    """``dvc repro`` whose train stage is SIGKILLed right after its first checkpoint."""
    repro_killed_at(root, env, "checkpoint.linked:1")
    assert newest_checkpoint(root) is not None
    assert not (root / "models/agent.pt").exists(), "train finished before the kill"


def test_a_run_killed_on_one_machine_resumes_on_another(machines):
    """The README's commands: machine A pushes the warm-up replay and the killed run's checkpoint
    to the DVC remote; machine B clones, pulls both, and ``dvc repro`` resumes train there
    (warm-up skipped), logging to the same server. B then commits and pushes the finished run."""
    a, b, env = machines["a"], machines["b"], machines["env"]
    _kill_during_train(a, env)
    # machine A
    run([*DVC, "push", "warmup"], a, env)
    run([*DVC, "add", "--to-remote", "-o", "models/resume", "models/checkpoint"], a, env)
    run(["git", "add", "dvc.lock", "models/resume.dvc"], a, env)
    run(["git", "commit", "-qm", "resume point"], a, env)
    run(["git", "push", "-q"], a, env)
    # machine B
    run(["git", "clone", "-q", str(a.parent / "origin.git"), str(b)], a.parent, env)
    run([*DVC, "pull", "warmup"], b, env)
    run([*DVC, "get", ".", "models/resume", "-o", "models/checkpoint"], b, env)
    run(["git", "rm", "-q", "models/resume.dvc"], b, env)
    resumed = run([*DVC, "repro"], b, env)
    assert "Stage 'warmup' didn't change, skipping" in resumed
    assert ran(resumed) == {"train", "evaluate", "plot"}
    step = re.search(r"train: resuming from models/checkpoint/ckpt-\d+ at (\d+) env steps", resumed)
    assert step and int(step[1]) < TINY_PARAMS["training"]["env_steps"], resumed[-3000:]
    summary = json.loads((b / "metrics/train.json").read_text())
    assert summary["train/env_steps"] == TINY_PARAMS["training"]["env_steps"]
    assert summary["train/resumed"] is True
    run(["git", "add", "-A"], b, env)
    run(["git", "commit", "-qm", "the run, finished on machine B"], b, env)
    run([*DVC, "push"], b, env)
    run(["git", "push", "-q"], b, env)

    with _client(machines) as client:
        experiment = client.get_experiment_by_name("team-machines")
        runs = client.search_runs([experiment.experiment_id])
        finished = {r.data.tags["stage"]: r for r in runs if r.info.status == "FINISHED"}
        assert set(finished) == {"pipeline", "warmup", "train", "evaluate", "plot"}
        train = finished["train"]
        assert train.data.tags["resumed"] == "True"
        # the resumed run carries the killed part's curve too: its history starts at the start
        losses = client.get_metric_history(train.info.run_id, "loss/world_model")
        assert min(m.step for m in losses) < 100 and len(losses) >= 2
        evaluation = json.loads((b / "metrics/eval.json").read_text())
        assert finished["evaluate"].data.metrics["eval/return_mean"] == pytest.approx(
            evaluation["eval/return_mean"]
        )
        # Registered by carol's evaluate stage as the first version, @best; loaded through the
        # server's artifact proxy by the documented loader, it is the agent file's weights.
        best = client.get_model_version_by_alias(MODEL, "best")
        assert str(best.version) == "1" and best.run_id == finished["evaluate"].info.run_id
        assert best.source == train.data.tags["model_uri"]
        assert float(best.tags["eval_return_mean"]) == evaluation["eval/return_mean"]
        agent, extra = models.load_agent(f"models:/{MODEL}@best", machines["server"])
    local, _ = load_agent(b / "models/agent.pt")
    assert extra["env_steps"] == summary["train/env_steps"]
    for name, value in local.state_dict().items():
        assert torch.equal(agent.state_dict()[name], value), name


def test_two_machines_share_queued_experiments_through_the_remotes(machines):
    """Each machine queues its part of a sweep and runs it with its own ``dvc queue`` worker
    (both at once), then ``dvc exp push``; either machine lists both experiments on ``origin``,
    pulls the other's with its data, and the server holds both, their params on the parents."""
    a, b, env = machines["a"], machines["b"], machines["env"]
    assert (b / "models/agent.pt").exists(), "needs the finished run of the test before"
    run(["git", "pull", "-q"], a, env)
    run([*DVC, "pull", "--force"], a, env)  # replaces A's stale checkpoint with B's finished run
    # The swept key reruns evaluate and plot only, to keep the test short; a sweep of
    # training.lr queues and pushes the same way and reruns train too.
    sweep = {a: ("sweep-a", "2"), b: ("sweep-b", "3")}
    for root, (name, episodes) in sweep.items():
        queue = [*DVC, "exp", "run", "--queue", "-n", name, "-S", f"evaluate.episodes={episodes}"]
        run(queue, root, env)
    for root in sweep:  # each machine its own worker, both at once
        start_queue_worker(root, env)
    for root, (name, _) in sweep.items():
        output = wait_for_experiment(root, env, name)
        assert ran(output) == {"evaluate", "plot"}, output[-3000:]
        run([*DVC, "exp", "push", "origin", name], root, env)
    for root in sweep:
        listed = run([*DVC, "exp", "list", "origin"], root, env)
        assert "sweep-a" in listed and "sweep-b" in listed
    run([*DVC, "exp", "pull", "origin", "sweep-b"], a, env)
    shown = run([*DVC, "exp", "show", "--csv"], a, env)
    assert "sweep-a" in shown and "sweep-b" in shown
    assert json.loads((b / "metrics/eval.json").read_text())["eval/episodes"] == 1  # B's own

    with _client(machines) as client:
        experiment = client.get_experiment_by_name("team-machines")
        parents = client.search_runs(
            [experiment.experiment_id], "tags.stage = 'pipeline' and attributes.status = 'FINISHED'"
        )
        by_name = {r.data.tags["dvc_exp_name"]: r.data.params for r in parents}
        assert by_name["sweep-a"]["evaluate.episodes"] == "2"
        assert by_name["sweep-b"]["evaluate.episodes"] == "3"
        # Each evaluation registered a version. The sweeps scored the same agent on other
        # episodes, so each evaluated @best again on its own episodes first: the same agent
        # scores the same, which is not better, so @best stays at the first version.
        versions = client.search_model_versions(f"name = '{MODEL}'")
        assert {v.tags["dvc_exp_name"] for v in versions} == {"workspace", "sweep-a", "sweep-b"}
        assert str(client.get_model_version_by_alias(MODEL, "best").version) == "1"
