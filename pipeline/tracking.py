"""MLflow tracking for the stages: one run per stage, grouped under one run per pipeline execution.

Where runs go (the store, the server probe, the experiment): :mod:`pipeline.store`.

Grouping: one parent run ``pipeline <env id> [<dvc exp>] <time>`` per pipeline execution, each
stage's run nested under it. Stages call ``stage_run(cfg, stage, pipeline_parent_id(cfg))``: the
latest parent of this DVC experiment (or of the workspace) is reused unless it already holds this
stage or a later one, which means a new execution has begun (``dvc repro`` reruns only what
changed, so an execution may start at any stage). Every run is tagged ``stage``, ``env_id``,
``git_commit``, ``dvc_exp_name`` and ``config_hash``; the parent also carries the whole config as
params, so the MLflow UI compares the pipeline runs of a sweep by the params that differ.

This module, :mod:`pipeline.store` and :mod:`pipeline.models` (the agent as an MLflow model, the
registry) are the only ones that import mlflow. They use ``MlflowClient`` with explicit run ids
rather than mlflow's global active run, so nothing depends on (or leaks) fluent state.
"""

from __future__ import annotations

import math
import os
import time
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

from pipeline.store import (
    QUICK_HTTP,
    artifact_root,
    check_tracking,
    get_or_create_experiment,
    git_output,
    resolve_tracking_uri,
    store_lock,
    warn_once,
)

if TYPE_CHECKING:
    from dreamer.config import Config

PARENT_TAG = "mlflow.parentRunId"
STAGES = ("warmup", "train", "evaluate", "plot")  # dvc.yaml's order, for grouping runs
_MAX_METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch call
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


# --- runs -----------------------------------------------------------------------------------------
def git_commit() -> str:
    """``git rev-parse HEAD`` of the working directory's checkout, or ``"unknown"``.

    In a temporary ``dvc exp`` clone that is the experiment's baseline commit.
    """
    return git_output("rev-parse", "HEAD", cwd=Path.cwd()) or "unknown"


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
        saved = {k: os.environ.get(k) for k in QUICK_HTTP}
        os.environ.update(QUICK_HTTP)
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

    def tag_of(self, run_id: str, key: str) -> str | None:
        """Tag ``key`` of another run in this store (an upstream stage's), or None."""
        if not run_id:
            return None
        try:
            return self.client.get_run(run_id).data.tags.get(key)
        except MlflowException:
            return None


def _quote(value: str) -> str:
    """A string literal for an MLflow filter."""
    return f'"{value}"' if "'" in value else f"'{value}'"


def pipeline_parent_id(cfg: Config) -> str | None:
    """The latest pipeline (parent) run of this DVC experiment, or of the workspace; None if none.

    Pass it to :func:`stage_run`, which starts a new pipeline run instead when that one already
    holds a run of this stage or of a later one (this is then a new execution), so every stage
    can simply call ``stage_run(cfg, stage, pipeline_parent_id(cfg))``.
    """
    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri)
    check_tracking(uri)
    with store_lock(uri):
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
            warn_once(
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
    with store_lock(uri):
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
