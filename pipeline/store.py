"""Where MLflow runs go: finding the store, probing a server, locking the embedded database.

:func:`resolve_tracking_uri`: ``MLFLOW_TRACKING_URI`` wins, then ``mlflow.tracking_uri`` from
``params.yaml``, else an embedded sqlite store ``<root>/mlflow.db`` with artifacts in
``<root>/mlartifacts``. ``<root>`` is ``$DVC_ROOT`` when DVC runs the stage (DVC sets it to the
original repository even inside the temporary clones of queued ``dvc exp run``), else the git
top-level of the working directory. So workspace runs and queued experiments land in the store
that ``mlflow ui`` opens in the project root. A relative sqlite path is taken relative to
``<root>`` too. :func:`check_tracking` fails in seconds, in one line, on a server that is down or
refuses the login; :func:`get_or_create_experiment` makes the experiment (marked as model
training). The runs themselves: :mod:`pipeline.tracking`.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

try:
    import fcntl
except (
    ImportError
):  # Windows: no lock; create the store once before running experiments in parallel
    fcntl = None

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from dreamer.errors import UserError

if TYPE_CHECKING:
    from dreamer.config import Config

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# The MLflow UI (3.x) opens an experiment on its GenAI overview. Where its workflow toggle is off it
# reads the experiment's kind tag; where it is on (MLflow 3.17's own server) the toggle decides, and
# a link with ``?workflowType=machine_learning`` opens the runs table (checked in headless
# Chromium: benchmarks/mlflow_ui_check.py). Both are set: the tag here, the link by ui_url.
KIND_TAG, KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"
UI_WORKFLOW = "workflowType=machine_learning"
PROBE_TIMEOUT_S = 5.0
# A server that answered with these credentials within this many seconds is not asked again: a
# stage probes at its start and again before each run it opens, and with basic-auth each probe
# costs the server one deliberately slow password hash (about 0.3 s on a 2-core machine).
PROBE_FRESH_S = 60.0
_answered: dict[tuple[str, ...], float] = {}  # (uri, login env) -> time.monotonic() of the answer
_LOGIN_KEYS = ("USERNAME", "PASSWORD", "TOKEN")  # MLFLOW_TRACKING_<key>: what a client logs in with
# mlflow reads these at every request: a server that is down fails one call in seconds
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """``warning: message`` on stderr, once per process."""
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be used as configured (one readable line)."""


class MlflowUnavailable(TrackingError):
    """An http(s) tracking server does not answer."""


# --- where runs go --------------------------------------------------------------------------------
def git_output(*args: str, cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def project_root() -> Path:
    """``$DVC_ROOT`` if set, else the git top-level of the working directory, else the cwd."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    top = git_output("rev-parse", "--show-toplevel", cwd=Path.cwd())
    return Path(top) if top else Path.cwd().resolve()


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative paths left relative), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def resolve_tracking_uri(cfg_uri: str = "") -> str:
    """The tracking URI to use: ``MLFLOW_TRACKING_URI``, else ``cfg_uri``, else the embedded store.

    Args:
        cfg_uri: ``mlflow.tracking_uri`` from ``params.yaml`` (empty: not set).
    Returns:
        A URI; sqlite URIs are absolute (``sqlite:////abs/path/mlflow.db``), relative ones being
        taken relative to :func:`project_root` rather than to the working directory.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip() or cfg_uri.strip()
    if not uri:
        return "sqlite:///" + (project_root() / DB_NAME).as_posix()
    path = _sqlite_path(uri)
    if path is not None and not path.is_absolute():
        query = uri.partition("?")[2]
        uri = "sqlite:///" + (project_root() / path).as_posix() + (f"?{query}" if query else "")
    return uri


@contextmanager
def process_tracking_uri(uri: str) -> Iterator[None]:
    """mlflow's process-wide tracking URI set to ``uri`` while the block runs, then put back.

    For the calls inside mlflow that make their own ``MlflowClient()`` (the registry looks a logged
    model up through one): their default is ``./mlflow.db`` of the working directory, which in a
    queued or ``--temp`` experiment is DVC's temporary clone, not the project's store.
    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` (which
    :func:`resolve_tracking_uri` reads first), so both are restored exactly.
    """
    from mlflow.tracking._tracking_service import utils  # the global has no public getter

    before, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    utils.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils.set_tracking_uri(before)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments: ``mlartifacts/`` beside a sqlite database.

    None for other stores (a server chooses its own artifact store).
    """
    path = _sqlite_path(uri)
    if path is None:
        return None
    return (path.resolve().parent / ARTIFACTS_DIR).as_uri()


def check_tracking(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast, before any long work, if ``uri`` cannot be used.

    An http(s) server must answer within ``timeout`` seconds (any HTTP status counts as an
    answer); mlflow's own client would retry for minutes. For sqlite, the database's folder is
    created.

    A server with logins must accept the client's credentials (:func:`_check_login`). A server
    that answered the same login less than ``PROBE_FRESH_S`` seconds ago is not asked again.

    Raises:
        MlflowUnavailable: ``mlflow tracking server http://… is unreachable (…)``.
        TrackingError: the server requires a login, or refuses the one given.
    """
    if uri.startswith(("http://", "https://")):
        refuse_plain_http_login(uri)
        login = (uri, *(os.environ.get(f"MLFLOW_TRACKING_{k}", "") for k in _LOGIN_KEYS))
        if time.monotonic() - _answered.get(login, -math.inf) < PROBE_FRESH_S:
            return
        try:
            try:
                urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
            except urllib.error.HTTPError:
                pass  # it answered: reachable, whatever it thinks of /health
            _check_login(uri, timeout)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                why = f"no answer within {timeout:g} s"
            else:
                why = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
            raise MlflowUnavailable(
                f"mlflow tracking server {uri} is unreachable ({why}); start it, or unset "
                "MLFLOW_TRACKING_URI / mlflow.tracking_uri to use the local store"
            ) from None
        _answered[login] = time.monotonic()
        return
    path = _sqlite_path(uri)
    if path is not None:
        path.resolve().parent.mkdir(parents=True, exist_ok=True)
        _use_wal(path.resolve())


def refuse_plain_http_login(uri: str) -> None:
    """Refuse to send a login (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``) to a
    non-loopback ``http://`` server: Basic credentials cross the network in clear text. An
    ``https://`` URI (a TLS reverse proxy in front of the server) is the fix;
    ``MLFLOW_ALLOW_PLAIN_HTTP=1`` (the setting ``scripts/team_server.sh`` reads) accepts the risk.

    Raises:
        TrackingError: one line naming the host and both ways out.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "http" or os.environ.get("MLFLOW_ALLOW_PLAIN_HTTP") == "1":
        return
    if not any(os.environ.get(f"MLFLOW_TRACKING_{k}") for k in _LOGIN_KEYS):
        return
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: only localhost is known to stay on this machine
        loopback = False
    if not loopback:
        raise TrackingError(
            f"refusing to send the MLflow login to {host} over plain http:// (clear text): "
            "serve it through a TLS reverse proxy and use https://, or set "
            "MLFLOW_ALLOW_PLAIN_HTTP=1 to accept that"
        )


def _use_wal(path: Path) -> None:
    """Put a sqlite store in write-ahead-log mode (once; the mode is stored in the file): readers
    then never block the writer, so queued experiments and a browsing ``mlflow ui`` share one
    store without "database is locked". Left as it is if another process holds it right now."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        warn_once(f"{path}: could not switch the MLflow store to WAL mode ({exc})")


def _check_login(uri: str, timeout: float) -> None:
    """One authenticated read (search one experiment) with the credentials MLflow's client will
    send (``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD``, or ``MLFLOW_TRACKING_TOKEN``): a server
    with logins (``mlflow server --app-name basic-auth``) that refuses them fails here in
    one line, instead of at the first logged metric after the warm-up."""
    request = urllib.request.Request(
        uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    )
    user, password = (os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD"))
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code not in (401, 403):
            return  # reachable; anything else is the server's business, not a login problem
        if not (user and password) and not token:
            raise TrackingError(
                f"mlflow tracking server {uri} requires a login: set MLFLOW_TRACKING_USERNAME "
                "and MLFLOW_TRACKING_PASSWORD"
            ) from None
        who = f"user {user!r}" if user and password else "MLFLOW_TRACKING_TOKEN"
        raise TrackingError(
            f"mlflow tracking server {uri} refused the credentials of {who} (HTTP {exc.code}); "
            "check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
        ) from None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise creating a sqlite store: mlflow's first-time table migrations are not safe to
    run from two processes at once (``duplicate column name: step`` with ``dvc exp run -j 2``).

    Locks the database's folder itself (flock on a directory), so no lock file is left behind.
    """
    path = _sqlite_path(uri)
    if path is None or fcntl is None:
        yield
        return
    fd = os.open(path.resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def get_or_create_experiment(
    name: str, artifact_root: str | None = None, client: MlflowClient | None = None
) -> str:
    """Id of experiment ``name``, creating it with ``artifact_root`` if needed, marked as model
    training (``mlflow.experimentKind``) so that the MLflow UI opens it on its runs table.

    Tolerates a parallel ``dvc exp`` creating it between our look-up and our create.
    """
    client = client or MlflowClient(resolve_tracking_uri())
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name, artifact_location=artifact_root, tags={KIND_TAG: KIND_TRAINING}
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.tags.get(KIND_TAG) is None:  # a store made by an earlier version
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND_TRAINING)
    if experiment.lifecycle_stage != "active":
        raise TrackingError(
            f"mlflow experiment {name!r} is deleted in {client.tracking_uri}; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or set "
            "mlflow.experiment to another name"
        )
    return experiment.experiment_id


def ui_url(base: str, experiment_id: str) -> str:
    """The MLflow UI's link to an experiment's runs table (not its GenAI overview)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?{UI_WORKFLOW}"


def find_experiment_id(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in the store at ``uri``, or None if it has none yet."""
    experiment = MlflowClient(uri).get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else None


def check_store(cfg: Config) -> None:
    """:func:`check_tracking` for the store ``cfg`` resolves to: a stage calls it first, so an
    unreachable server or a refused login fails before any work (nothing is created in it)."""
    check_tracking(resolve_tracking_uri(cfg.mlflow.tracking_uri))
