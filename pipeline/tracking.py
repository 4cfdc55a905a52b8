"""MLflow tracking for the stages: one run per stage, grouped under one run per pipeline execution.

Where runs go (:func:`resolve_tracking_uri`): ``MLFLOW_TRACKING_URI`` wins, then
``mlflow.tracking_uri`` from ``params.yaml``, else an embedded sqlite store ``<root>/mlflow.db``
with artifacts in ``<root>/mlartifacts``. ``<root>`` is ``$DVC_ROOT`` when DVC runs the stage (DVC
sets it to the original repository even inside the temporary clones of queued ``dvc exp run``),
else the git top-level of the working directory. So workspace runs and queued experiments land in
the store that ``mlflow ui`` opens in the project root. A relative sqlite path is taken relative to
``<root>`` too.

Grouping: one parent run ``pipeline <env id> [<dvc exp>] <time>`` per pipeline execution, each
stage's run nested under it. Stages call ``stage_run(cfg, stage, pipeline_parent_id(cfg))``: the
latest parent of this DVC experiment (or of the workspace) is reused unless it already holds this
stage or a later one, which means a new execution has begun (``dvc repro`` reruns only what
changed, so an execution may start at any stage). Every run is tagged ``stage``, ``env_id``,
``git_commit``, ``dvc_exp_name`` and ``config_hash``; the parent also carries the whole config as
params, so the MLflow UI compares the pipeline runs of a sweep by the params that differ.

This is the only module that imports mlflow. It uses ``MlflowClient`` with explicit run ids rather
than mlflow's global active run, so nothing depends on (or leaks) fluent state.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except (
    ImportError
):  # Windows: no lock; create the store once before running experiments in parallel
    fcntl = None

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking.context import registry as context_registry

from dreamer.errors import UserError

if TYPE_CHECKING:
    from dreamer.config import Config

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
PARENT_TAG = "mlflow.parentRunId"
# The MLflow UI (3.x) opens an experiment on its GenAI overview. Where its workflow toggle is off it
# reads the experiment's kind tag; where it is on (MLflow 3.17's own server) the toggle decides, and
# a link with ``?workflowType=machine_learning`` opens the runs table (checked in headless
# Chromium: benchmarks/mlflow_ui_check.py). Both are set: the tag here, the link by ui_url.
KIND_TAG, KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"
UI_WORKFLOW = "workflowType=machine_learning"
STAGES = ("warmup", "train", "evaluate", "plot")  # dvc.yaml's order, for grouping runs
PROBE_TIMEOUT_S = 5.0
# A server that answered with these credentials within this many seconds is not asked again: a
# stage probes at its start and again before each run it opens, and with basic-auth each probe
# costs the server one deliberately slow password hash (about 0.3 s on a 2-core machine).
PROBE_FRESH_S = 60.0
_answered: dict[tuple[str, ...], float] = {}  # (uri, login env) -> time.monotonic() of the answer
_MAX_METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch call
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
_LOGIN_KEYS = ("USERNAME", "PASSWORD", "TOKEN")  # MLFLOW_TRACKING_<key>: what a client logs in with
_warned: set[str] = set()
# mlflow reads these at every request: a server that is down fails one call in seconds
_QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be used as configured (one readable line)."""


class MlflowUnavailable(TrackingError):
    """An http(s) tracking server does not answer."""


# --- where runs go --------------------------------------------------------------------------------
def _git(*args: str, cwd: Path | None = None) -> str | None:
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
    top = _git("rev-parse", "--show-toplevel", cwd=Path.cwd())
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
        _warn_once(f"{path}: could not switch the MLflow store to WAL mode ({exc})")


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
def _store_lock(uri: str) -> Iterator[None]:
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


# --- runs -----------------------------------------------------------------------------------------
def git_commit() -> str:
    """``git rev-parse HEAD`` of the working directory's checkout, or ``"unknown"``.

    In a temporary ``dvc exp`` clone that is the experiment's baseline commit.
    """
    return _git("rev-parse", "HEAD", cwd=Path.cwd()) or "unknown"


def dvc_exp_name() -> str:
    """The DVC experiment running this stage (``$DVC_EXP_NAME``), or ``"workspace"``."""
    return os.environ.get("DVC_EXP_NAME") or "workspace"


def run_tags(cfg: Config, stage: str) -> dict[str, str]:
    """The tags every run carries."""
    return {
        "stage": stage,
        "env_id": cfg.env.id,
        "git_commit": git_commit(),
        "dvc_exp_name": dvc_exp_name(),
        "config_hash": cfg.hash(),
    }


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _params(params: Mapping[str, Any]) -> list[Param]:
    """MLflow params: values stringified and cut to MLflow's 6000 characters."""
    return [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()]


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


class StageRun:
    """Handle on one stage's MLflow run; every method logs to that run by id."""

    def __init__(
        self, client: MlflowClient, run_id: str, parent_run_id: str, experiment_id: str
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.experiment_id = experiment_id
        self.tracking_uri: str = client.tracking_uri

    def _log_metrics(self, metrics: list[Metric]) -> None:
        for start in range(0, len(metrics), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(
                self.run_id, metrics=metrics[start : start + _MAX_METRICS_PER_BATCH]
            )

    @staticmethod
    def metric_entries(metrics: Mapping[str, Any], step: int | None = None) -> list[Metric]:
        """``{name: value}`` at ``step`` (0 if None), stamped now; non-finite values dropped."""
        now = int(time.time() * 1000)
        return [
            Metric(key, number, now, int(step or 0))
            for key, value in metrics.items()
            if (number := _finite(value)) is not None
        ]

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log ``{name: value}`` at ``step`` (0 if None); non-finite values are skipped."""
        self._log_metrics(self.metric_entries(metrics, step))

    def log_entries(self, entries: list[Metric], quick: bool = False) -> None:
        """Log prepared :meth:`metric_entries`. ``quick``: one try with a short timeout against a
        server (no minutes of retries), for logging that must not hold up training."""
        if not quick:
            self._log_metrics(entries)
            return
        saved = {k: os.environ.get(k) for k in _QUICK_HTTP}
        os.environ.update(_QUICK_HTTP)
        try:
            self._log_metrics(entries)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def log_metric_rows(
        self,
        rows: Iterable[Mapping[str, Any]],
        step_key: str,
        prefix: str = "",
        keys: Iterable[str] | None = None,
    ) -> int:
        """Log a whole curve at once: each row's values become metrics at step ``row[step_key]``.

        Args:
            rows: e.g. ``df.to_dict("records")`` (a DataFrame is accepted too).
            step_key: the column holding the step (``"gradient_step"``, ``"env_step"``).
            prefix: prepended to every metric name (``"train/"`` turns ``return`` into
                ``train/return``).
            keys: the columns to log (default: all but ``step_key``). Values that are not finite
                numbers (NaN, inf, strings) are skipped.
        Returns:
            The number of metric values logged.
        """
        if hasattr(rows, "to_dict"):
            rows = rows.to_dict("records")
        wanted = None if keys is None else set(keys)
        now = int(time.time() * 1000)
        entries = []
        for row in rows:
            step = int(row[step_key])
            for key, value in row.items():
                if key == step_key or (wanted is not None and key not in wanted):
                    continue
                number = _finite(value)
                if number is not None:
                    entries.append(Metric(f"{prefix}{key}", number, now, step))
        self._log_metrics(entries)
        return len(entries)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (values stringified and cut to MLflow's 6000 characters)."""
        self.client.log_batch(self.run_id, params=_params(params))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values stringified)."""
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, under ``artifact_path`` of the run."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        """Write ``data`` as the artifact ``name`` (``.json`` or ``.yaml`` by extension)."""
        self.client.log_dict(self.run_id, dict(data), name)

    def log_pytorch_model(self, model: Any, name: str = "model") -> str:
        """Log a ``torch.nn.Module`` with ``mlflow.pytorch`` (pickled), linked to this run.

        Returns:
            The model URI (``models:/m-…``) for :func:`load_pytorch_model`. Loading needs the
            model's classes importable (the ``dreamer`` package).
        """
        import mlflow.pytorch
        import torch

        from dreamer.faults import fault_point

        fault_point("tracking.log_model")  # killed here: training done, the run's model missing
        mlflow.set_tracking_uri(self.tracking_uri)
        quiet = logging.getLogger("mlflow.pytorch")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its pickle-safety warning, once per call
        try:
            with warnings.catch_warnings():
                # mlflow inspects type hints for a signature we do not use, and says so
                warnings.filterwarnings("ignore", message=".*type hint is inferred as AnyType")
                info = mlflow.pytorch.log_model(
                    model,
                    name=name,
                    run_id=self.run_id,
                    # pickle, not the default 'pt2': pt2 traces forward() with an input example
                    serialization_format="pickle",
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                )
        finally:
            quiet.setLevel(level)
        return info.model_uri


def _quote(value: str) -> str:
    """A string literal for an MLflow filter."""
    return f'"{value}"' if "'" in value else f"'{value}'"


def check_store(cfg: Config) -> None:
    """:func:`check_tracking` for the store ``cfg`` resolves to: a stage calls it first, so an
    unreachable server or a refused login fails before any work (nothing is created in it)."""
    check_tracking(resolve_tracking_uri(cfg.mlflow.tracking_uri))


def pipeline_parent_id(cfg: Config) -> str | None:
    """The latest pipeline (parent) run of this DVC experiment, or of the workspace; None if none.

    Pass it to :func:`stage_run`, which starts a new pipeline run instead when that one already
    holds a run of this stage or of a later one (this is then a new execution), so every stage
    can simply call ``stage_run(cfg, stage, pipeline_parent_id(cfg))``.
    """
    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri)
    check_tracking(uri)
    with _store_lock(uri):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.stage = 'pipeline' and tags.dvc_exp_name = {_quote(dvc_exp_name())}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _stage_done(client: MlflowClient, experiment_id: str, parent_id: str, stage: str) -> bool:
    """Whether the parent already holds a run of ``stage`` or of a stage after it."""
    later = set(STAGES[STAGES.index(stage) :]) if stage in STAGES else {stage}
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = {_quote(parent_id)}"
    )
    return any(child.data.tags.get("stage") in later for child in children)


def _parent_run(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str | None,
    cfg: Config,
    stage: str,
    context_tags: dict[str, str],
) -> str:
    """The id of the parent run to nest under: ``parent_run_id`` if usable, else a new one.

    One parent per pipeline execution: a parent is not reused by another DVC experiment (an
    upstream stage restored from DVC's cache hands over its own execution's parent), nor when it
    already holds this stage or a later one (``dvc repro`` after a change or a failure).
    """
    if parent_run_id:
        try:
            run = client.get_run(parent_run_id)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            run = None
        if (
            run is None
            or run.info.lifecycle_stage != "active"
            or run.info.experiment_id != experiment_id
        ):
            _warn_once(
                f"mlflow parent run {parent_run_id} is not in experiment "
                f"{cfg.mlflow.experiment!r} of {client.tracking_uri}; grouping this stage under "
                "a new pipeline run"
            )
        elif run.data.tags.get("dvc_exp_name") == dvc_exp_name() and not _stage_done(
            client, experiment_id, parent_run_id, stage
        ):
            return parent_run_id
    exp = dvc_exp_name()
    words = ["pipeline", cfg.env.id, *([exp] if exp != "workspace" else [])]
    name = " ".join([*words, time.strftime("%m-%d %H:%M:%S")])
    tags = {**context_tags, **run_tags(cfg, "pipeline")}
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    # The whole config on the parent too, so the MLflow UI compares a sweep's pipeline runs
    # side by side with the params that differ (its "show diff only" view).
    client.log_batch(run_id, params=_params(cfg.flat()))
    return run_id


@contextmanager
def stage_run(cfg: Config, stage: str, parent_run_id: str | None = None) -> Iterator[StageRun]:
    """One MLflow run for one stage, nested under the pipeline's parent run.

    Checks the store first (fails in seconds if a server is down), logs ``cfg.flat()`` as params
    and ``config.json`` as an artifact. The run ends FINISHED, or FAILED (KILLED on Ctrl-C) if the
    block raises; the exception propagates. The parent's status follows its latest stage.

    Args:
        cfg: the loaded config (``cfg.mlflow`` picks store and experiment).
        stage: the stage name, also the run name.
        parent_run_id: the pipeline run to nest under: :func:`pipeline_parent_id`, or the id an
            upstream stage wrote to its outputs. A new parent is created instead for None, an id
            missing from this store (warned), a parent of another DVC experiment, or one that
            already holds this stage or a later one (see ``_parent_run``).
    """
    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri)
    check_tracking(uri)
    with _store_lock(uri):
        client = MlflowClient(uri)
        experiment_id = get_or_create_experiment(cfg.mlflow.experiment, artifact_root(uri), client)
    context_tags = context_registry.resolve_tags({})  # mlflow.user, mlflow.source.name, …
    parent_id = _parent_run(client, experiment_id, parent_run_id, cfg, stage, context_tags)
    tags = {**context_tags, **run_tags(cfg, stage), PARENT_TAG: parent_id}
    run_id = client.create_run(experiment_id, run_name=stage, tags=tags).info.run_id
    client.update_run(parent_id, status="RUNNING")
    run = StageRun(client, run_id, parent_id, experiment_id)
    status = "FAILED"
    try:
        run.log_params(cfg.flat())
        run.log_dict(cfg.to_dict(), "config.json")
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except SystemExit as exc:
        status = "FINISHED" if exc.code in (0, None) else "FAILED"
        raise
    except Exception as exc:
        first_line = (str(exc).splitlines() or [""])[0]
        client.set_tag(run_id, "error", f"{type(exc).__name__}: {first_line}"[:5000])
        raise
    finally:
        client.set_terminated(run_id, status)
        client.set_terminated(parent_id, status)


# --- reading back ---------------------------------------------------------------------------------
def download_artifact(
    run_id: str, artifact_path: str, dst: str | os.PathLike, tracking_uri: str = ""
) -> Path:
    """Download a run's artifact (file or folder) into folder ``dst``; returns the local path.

    ``tracking_uri`` defaults to :func:`resolve_tracking_uri`'s answer.
    """
    Path(dst).mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id,
        artifact_path=artifact_path,
        dst_path=str(dst),
        tracking_uri=tracking_uri or resolve_tracking_uri(),
    )
    return Path(local)


def load_pytorch_model(model_uri: str, tracking_uri: str = "") -> Any:
    """Load a model logged by :meth:`StageRun.log_pytorch_model` (on CPU)."""
    import mlflow.pytorch

    mlflow.set_tracking_uri(tracking_uri or resolve_tracking_uri())
    return mlflow.pytorch.load_model(model_uri, map_location="cpu")
