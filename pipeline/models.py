"""The trained agent in MLflow: logged as weights and config, registered, loaded by this code.

Why not ``mlflow.pytorch``: it pickles the module, and loading a pickle runs whatever code the
file names, so anyone who can write a run's artifacts on a shared server would run code on every
machine that loads the model. Here the logged model holds only ``agent.pt``, the file
:func:`dreamer.checkpoint.save_agent` writes (tensors, numbers, strings; read with
``torch.load(weights_only=True)``), and the network is rebuilt by the classes in this repository::

    from pipeline.models import load_agent
    agent, extra = load_agent("models:/dreamerv3-Pendulum-v1@best")

The registry: the evaluate stage registers each evaluated agent as a version of
``dreamerv3-<env id>`` (``/`` and ``:`` become ``-``), tagged with its evaluation return, the
episodes it was scored on, the git commit and the DVC experiment. The alias ``@best`` moves to the
new version only when it scores higher than the current best *on the same episodes*: when the
evaluation settings differ, the current best is evaluated again on this run's episodes first.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from dreamer.errors import CheckpointError, UserError
from pipeline.store import (
    TrackingError,
    check_tracking,
    process_tracking_uri,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    from dreamer.agent import Agent
    from dreamer.config import Config
    from pipeline.tracking import StageRun

AGENT_FILE = "agent.pt"
FLAVOR = "dreamerv3_agent"  # MLmodel's flavor: says which file and which loader
BEST = "best"
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?/?")


def registered_name(env_id: str) -> str:
    """``dreamerv3-<env id>``; MLflow refuses ``/`` and ``:`` in a model's name."""
    return "dreamerv3-" + re.sub(r"[/:]", "-", env_id)


def episodes_key(cfg: Config) -> str:
    """What makes two evaluations' episodes the same: the env settings, the seed the episodes'
    env seeds derive from, their number and the action mode. Scores compare only under one key."""
    what = {
        "env": cfg.env.model_dump(),
        "seed": cfg.seed,
        "episodes": cfg.evaluate.episodes,
        "deterministic": cfg.evaluate.deterministic,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


# --- logging --------------------------------------------------------------------------------------
def log_agent(run: StageRun, agent_file: str | Path) -> str:
    """Log ``agent_file`` as an MLflow model of ``run`` (its "Logged models"): ``agent.pt`` and an
    ``MLmodel`` naming this module's loader; no pickle.

    Returns:
        The model's URI ``models:/m-…`` (for :func:`register_agent` and :func:`load_agent`).
    """
    from dreamer.faults import fault_point

    fault_point("tracking.log_model")  # killed here: training done, the run's model missing
    client = run.client
    model = client.create_logged_model(
        run.experiment_id, name="agent", source_run_id=run.run_id, model_type="dreamerv3"
    )
    try:
        with tempfile.TemporaryDirectory() as folder:
            shutil.copyfile(agent_file, Path(folder) / AGENT_FILE)
            description = mlflow.models.Model(run_id=run.run_id, model_id=model.model_id)
            description.add_flavor(
                FLAVOR, agent_file=AGENT_FILE, loader="pipeline.models.load_agent"
            )
            description.save(Path(folder) / "MLmodel")
            client.log_model_artifacts(model.model_id, folder)
    except BaseException:
        client.finalize_logged_model(model.model_id, "FAILED")
        raise
    client.finalize_logged_model(model.model_id, "READY")
    return f"models:/{model.model_id}"


# --- the registry ---------------------------------------------------------------------------------
class RegistryError(TrackingError):
    """The model registry refused a registration (one readable line)."""


@dataclass(frozen=True)
class Registration:
    """What :func:`register_agent` did: the new version and where ``@best`` points now."""

    name: str
    version: str
    best: str  # the version @best points to afterwards
    previous: str | None  # the version it pointed to before (None: no best yet)
    previous_score: float | None  # that version's return on this version's episodes

    def line(self, score: float) -> str:
        """One line for the stage's output."""
        was = (
            ""
            if self.previous is None
            else f" (version {self.previous}: {self.previous_score:.1f} on the same episodes)"
        )
        moved = (  # "now at": another registration or the closing check (_settle) put it there
            "moved to"
            if self.best == self.version
            else "stays at"
            if self.best == self.previous
            else "now at"
        )
        return (
            f"registered {self.name} version {self.version} (return {score:.1f}); "
            f"@{BEST} {moved} {self.best}{was}"
        )


def register_agent(
    run: StageRun,
    cfg: Config,
    model_uri: str,
    score: float,
    env_steps: int,
    rescore: Callable[[str], float],
) -> Registration:
    """Register ``model_uri`` as a new version of ``dreamerv3-<env id>`` and move ``@best`` to it
    if it scores higher than the current best on the same episodes.

    Args:
        run: the evaluate stage's run (the version links to it).
        cfg: the config the agent was evaluated under (env id, episodes).
        model_uri: ``models:/m-…`` from :func:`log_agent`.
        score: this agent's mean evaluation return.
        env_steps: the env steps it was trained for (a tag).
        rescore: the evaluation of another registered agent (its ``models:/`` URI) on this
            run's episodes; called for the current best when it was scored on other episodes.
    Raises:
        RegistryError: the store refused (a team server's permissions), in one line.
    """
    try:
        return _register(run, cfg, model_uri, score, env_steps, rescore)
    except MlflowException as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise RegistryError(
            f"{registered_name(cfg.env.id)}: the registry refused ({exc.error_code}: {first})"
        ) from None


def _register(run, cfg, model_uri, score, env_steps, rescore) -> Registration:
    from pipeline.tracking import dvc_exp_name, git_commit

    client, name, key = run.client, registered_name(cfg.env.id), episodes_key(cfg)
    try:
        client.create_registered_model(name, tags={"env_id": cfg.env.id})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version_tags = {
        "git_commit": git_commit(),
        "dvc_exp_name": dvc_exp_name(),
        "env_steps": str(env_steps),
        "eval_return_mean": repr(score),
        "eval_episodes_key": key,
        "eval_episodes": f"{cfg.evaluate.episodes} episodes, seed {cfg.seed}",
    }
    with process_tracking_uri(client.tracking_uri):  # mlflow finds the logged model through it
        version = client.create_model_version(
            name,
            source=model_uri,
            run_id=run.run_id,
            tags=version_tags,
            model_id=model_uri.removeprefix("models:/"),
        ).version
    previous, previous_score = _best(client, name), None
    if previous is not None:
        if previous.tags.get("eval_episodes_key") == key:
            previous_score = float(previous.tags["eval_return_mean"])
        else:
            previous_score = _rescored(rescore, f"models:/{name}/{previous.version}")
    if previous is None or score > previous_score:
        client.set_registered_model_alias(name, BEST, version)
    best = _settle(client, name, key)
    return Registration(
        name,
        str(version),
        str(best),
        None if previous is None else str(previous.version),
        previous_score,
    )


def _settle(client: MlflowClient, name: str, key: str) -> str:
    """Point ``@best`` at the highest-scoring version scored on ``key``'s episodes, if it points at
    a lower-scoring one of them; returns where it points.

    Two evaluations finishing at once (two queue workers) may both compare with the same best
    and both move the alias; the later write could leave a lower score there. Each registration
    ends with this check, so the alias comes to rest on the best of those versions: the window
    narrows to the moment between one registration's check and the other's write (MLflow has no
    compare-and-set on an alias).
    """
    current = _best(client, name)
    if current is None or current.tags.get("eval_episodes_key") != key:
        return str(current.version) if current is not None else ""
    scored = [
        v
        for v in client.search_model_versions(f"name = '{name}'")
        if v.tags.get("eval_episodes_key") == key and "eval_return_mean" in v.tags
    ]
    top = max(scored, key=lambda v: (float(v.tags["eval_return_mean"]), -int(v.version)))
    if float(top.tags["eval_return_mean"]) > float(current.tags["eval_return_mean"]):
        client.set_registered_model_alias(name, BEST, top.version)
        return str(top.version)
    return str(current.version)


def _best(client: MlflowClient, name: str):
    """The version ``@best`` points to, or None."""
    try:
        return client.get_model_version_by_alias(name, BEST)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _rescored(rescore: Callable[[str], float], uri: str) -> float:
    """``rescore(uri)``; a best that does not load any more (damaged, foreign) scores -inf."""
    try:
        return float(rescore(uri))
    except CheckpointError as exc:
        from pipeline.store import warn_once

        warn_once(f"{uri} cannot be evaluated ({exc}); another version becomes @{BEST}")
        return -math.inf


# --- loading --------------------------------------------------------------------------------------
def load_agent(
    model_uri: str, tracking_uri: str = "", device: str = "cpu", env_id: str | None = None
) -> tuple[Agent, dict]:
    """Rebuild an agent logged by :func:`log_agent`, without unpickling anything.

    Args:
        model_uri: ``models:/m-…``, ``models:/<name>/<version>`` or ``models:/<name>@<alias>``.
        tracking_uri: the store (default: :func:`~pipeline.store.resolve_tracking_uri`).
        device: where the agent's tensors go.
        env_id: refuse an agent trained on another env.
    Returns:
        ``(agent, extra)`` as :func:`dreamer.checkpoint.load_agent`: only ``agent.pt`` is
        downloaded and read, with ``torch.load(weights_only=True)``.
    Raises:
        UserError: the URI is malformed or names nothing in the store.
        CheckpointError: ``agent.pt`` is not an agent file (a tampered pickle is refused here).
    """
    from dreamer.checkpoint import load_agent as load_agent_file

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking(uri)
    client = MlflowClient(uri, registry_uri=uri)
    location = _artifact_location(client, model_uri)
    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location.rstrip('/')}/{AGENT_FILE}", dst_path=folder, tracking_uri=uri
        )
        try:
            return load_agent_file(local, device=device, env_id=env_id)
        except CheckpointError as exc:  # name the model, not the temporary download
            raise CheckpointError(f"{model_uri}: {str(exc).removeprefix(local + ': ')}") from None


def _artifact_location(client: MlflowClient, model_uri: str) -> str:
    """The artifact folder of the logged model that ``model_uri`` names."""
    match = _URI.fullmatch(model_uri.strip())
    if match is None:
        raise UserError(
            f"{model_uri!r}: not a model URI (models:/m-…, models:/<name>/<version> or "
            "models:/<name>@<alias>)"
        )
    name, alias, version = match["name"], match["alias"], match["version"]
    try:
        if alias or version:
            found = (
                client.get_model_version_by_alias(name, alias)
                if alias
                else client.get_model_version(name, version)
            )
            model_id = found.model_id or found.source.removeprefix("models:/")  # sqlite: source
        else:
            model_id = name
        return client.get_logged_model(model_id).artifact_location
    except MlflowException as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise UserError(f"{model_uri}: not found in {client.tracking_uri} ({first})") from None
