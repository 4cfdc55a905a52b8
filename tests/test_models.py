"""The agent as an MLflow model (pipeline/models.py): logged as weights and config, loaded without
unpickling anything, registered with ``@best`` moving only on a better score on the same episodes.
The client's refusal to send a login over plain http:// to another machine is here too."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace

import pytest
import torch

from dreamer.agent import Agent
from dreamer.checkpoint import save_agent
from dreamer.config import override
from dreamer.errors import CheckpointError, UserError

from .conftest import make_spec, tiny

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from pipeline import models, store, tracking  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
NAME = "dreamerv3-Pendulum-v1"


def pendulum_spec():
    return replace(make_spec(vector=3, action_dim=1), env_id="Pendulum-v1")


@pytest.fixture
def local_store(tmp_path, monkeypatch):
    """An embedded store in a temporary project; returns its URI."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    return store.resolve_tracking_uri()


@pytest.fixture
def cfg():
    return tiny(**{"env.id": "Pendulum-v1", "mlflow.experiment": "models-test"})


@pytest.fixture
def agent_file(tmp_path, cfg):
    agent = Agent(pendulum_spec(), cfg)
    agent.gradient_steps = 7
    path = tmp_path / "agent.pt"
    save_agent(path, agent, extra={"env_steps": 321})
    return path


class Payload:
    """What a tampered artifact would hold: unpickling it writes ``path`` (any code could run)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_the_logged_agent_loads_back_and_a_tampered_pickle_is_never_unpickled(
    local_store, cfg, agent_file, tmp_path
):
    with tracking.stage_run(cfg, "train") as run:
        uri = models.log_agent(run, agent_file)
    client = MlflowClient(local_store)
    logged = client.get_logged_model(uri.removeprefix("models:/"))
    assert {a.path for a in client.list_logged_model_artifacts(logged.model_id)} == {
        "agent.pt",
        "MLmodel",
    }
    agent, extra = models.load_agent(uri, local_store, env_id="Pendulum-v1")
    assert extra == {"env_steps": 321} and agent.gradient_steps == 7
    with pytest.raises(CheckpointError, match="Pendulum-v1, params say CartPole-v1"):
        models.load_agent(uri, local_store, env_id="CartPole-v1")

    # Someone with write access to the artifact store swaps agent.pt for a pickle that runs code.
    marker = tmp_path / "code-ran"
    stored = tmp_path / "mlartifacts"
    target = next(stored.rglob("agent.pt"))
    torch.save({"format_version": 1, "kind": "agent", "evil": Payload(marker)}, target)
    with pytest.raises(CheckpointError, match=rf"^{uri}: corrupt or unreadable checkpoint"):
        models.load_agent(uri, local_store)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # the file is live: a plain torch.load runs it ...
        torch.load(target, weights_only=True)
    torch.load(target, weights_only=False)
    assert marker.exists()  # ... as mlflow.pytorch.load_model, the loader documented before, did


def test_a_malformed_or_unknown_model_uri_is_one_line(local_store, cfg):
    with pytest.raises(UserError, match="not a model URI"):
        models.load_agent("runs:/abc/agent", local_store)
    with tracking.stage_run(cfg, "evaluate"):
        pass  # the store exists
    with pytest.raises(UserError, match=f"models:/{NAME}@best: not found in"):
        models.load_agent(f"models:/{NAME}@best", local_store)


def test_best_moves_only_on_a_better_score_on_the_same_episodes(local_store, cfg, agent_file):
    rescored = []
    scores = {}

    def rescore(uri):
        rescored.append(uri)
        if scores.get(uri) == "damaged":
            raise CheckpointError(f"{uri}: corrupt or unreadable checkpoint")
        return scores[uri]

    def register(config, score):
        with tracking.stage_run(config, "evaluate") as run:
            uri = models.log_agent(run, agent_file)
            return models.register_agent(run, config, uri, score, 600, rescore)

    client = MlflowClient(local_store)
    first = register(cfg, -500.0)
    assert (first.version, first.best, first.previous) == ("1", "1", None)
    assert "@best moved to 1" in first.line(-500.0)
    worse = register(cfg, -600.0)
    assert (worse.best, worse.previous, worse.previous_score) == ("1", "1", -500.0)
    assert "@best stays at 1 (version 1: -500.0 on the same episodes)" in worse.line(-600.0)
    better = register(cfg, -400.0)
    assert better.best == "3" and rescored == []  # same episodes: the tags decide
    assert str(client.get_model_version_by_alias(NAME, "best").version) == "3"
    version = client.get_model_version(NAME, "3")
    assert float(version.tags["eval_return_mean"]) == -400.0
    assert version.tags["eval_episodes_key"] == models.episodes_key(cfg)
    assert {"git_commit", "dvc_exp_name"} <= set(version.tags) and version.tags[
        "env_steps"
    ] == "600"

    # Other episodes: the best is evaluated again on this run's episodes before comparing.
    other = override(cfg, **{"evaluate.episodes": 3})
    assert models.episodes_key(other) != models.episodes_key(cfg)
    scores[f"models:/{NAME}/3"] = -300.0
    kept = register(other, -350.0)
    assert rescored == [f"models:/{NAME}/3"] and kept.best == "3" and kept.previous_score == -300.0
    scores[f"models:/{NAME}/3"] = -380.0
    moved = register(other, -350.0)
    assert moved.best == "5" and str(client.get_model_version_by_alias(NAME, "best").version) == "5"

    # A best that no longer loads is replaced, with a warning: by the highest score on these
    # episodes, here version 3's (-400), not the new -900.
    scores[f"models:/{NAME}/5"] = "damaged"
    replaced = register(cfg, -900.0)
    assert replaced.previous_score == -float("inf") and replaced.best == "3"


def test_two_evaluations_at_once_leave_best_on_the_higher_score(
    local_store, cfg, agent_file, monkeypatch
):
    """Two queue workers: B read @best before A moved it, so B compares with the old best and
    moves the alias over A's higher score; B's closing check puts it back on A's version."""
    client = MlflowClient(local_store)

    def register(score):
        with tracking.stage_run(cfg, "evaluate") as run:
            uri = models.log_agent(run, agent_file)
            return models.register_agent(run, cfg, uri, score, 0, rescore=lambda uri: 0.0)

    register(-500.0)  # version 1, @best
    stale = client.get_model_version_by_alias(NAME, "best")
    assert register(-400.0).best == "2"  # A
    reads = iter([stale])  # B's first read is the one it made before A's write
    real = models._best
    monkeypatch.setattr(models, "_best", lambda c, n: next(reads, None) or real(c, n))
    b = register(-450.0)
    assert (b.version, b.previous, b.best) == ("3", "1", "2")
    assert str(client.get_model_version_by_alias(NAME, "best").version) == "2"
    assert "@best now at 2" in b.line(-450.0)  # B read version 1 as the best; A had moved it


def test_the_registry_loads_the_best_version_it_names(local_store, cfg, agent_file, tmp_path):
    other = tmp_path / "other.pt"
    agent = Agent(pendulum_spec(), cfg)
    agent.gradient_steps = 99
    save_agent(other, agent, extra={"env_steps": 654})
    for path, score in ((agent_file, -500.0), (other, -100.0), (agent_file, -700.0)):
        with tracking.stage_run(cfg, "evaluate") as run:
            models.register_agent(
                run, cfg, models.log_agent(run, path), score, 0, rescore=lambda uri: 0.0
            )
    best, extra = models.load_agent(f"models:/{NAME}@best", local_store)
    assert best.gradient_steps == 99 and extra["env_steps"] == 654
    first, _ = models.load_agent(f"models:/{NAME}/1", local_store)
    assert first.gradient_steps == 7


def test_a_queued_experiments_stage_registers_in_the_project_store(
    local_store, cfg, agent_file, tmp_path, monkeypatch
):
    """A queued (or --temp) experiment's stages run in DVC's temporary clone. MLflow's registry
    looks the logged model up through ``MlflowClient()``, i.e. the process-wide tracking URI,
    whose default is ``./mlflow.db`` of the working directory: it must be the project's store."""
    clone = tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc123"  # where dvc exp run works
    clone.mkdir(parents=True)
    monkeypatch.chdir(clone)
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)
    with tracking.stage_run(cfg, "evaluate") as run:
        uri = models.log_agent(run, agent_file)
        done = models.register_agent(run, cfg, uri, -500.0, 600, rescore=lambda uri: 0.0)
    assert (done.version, done.best) == ("1", "1")
    assert not (clone / "mlflow.db").exists()
    # and the process is left as it was: mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI,
    # which would send every later store lookup of this process to this store
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.tracking._tracking_service.utils._tracking_uri is None
    agent, _ = models.load_agent(f"models:/{NAME}@best", local_store)
    assert agent.gradient_steps == 7


@pytest.mark.parametrize(
    "uri, login, allow, refused",
    [
        ("http://192.0.2.7:5000", True, False, True),  # another machine, clear text: refused
        ("http://mlflow.example:5000", True, False, True),  # a name is not known to be local
        ("http://192.0.2.7:5000", True, True, False),  # MLFLOW_ALLOW_PLAIN_HTTP=1 accepts it
        ("http://192.0.2.7:5000", False, False, False),  # nothing secret to send
        ("https://192.0.2.7:5000", True, False, False),  # TLS
        ("http://127.0.0.1:5000", True, False, False),  # loopback
        ("http://localhost:5000", True, False, False),
        ("http://[::1]:5000", True, False, False),
    ],
)
def test_the_client_refuses_to_send_a_login_over_plain_http_to_another_machine(
    monkeypatch, uri, login, allow, refused
):
    for key in ("USERNAME", "PASSWORD", "TOKEN"):
        monkeypatch.delenv(f"MLFLOW_TRACKING_{key}", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_PLAIN_HTTP", raising=False)
    if login:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    if allow:
        monkeypatch.setenv("MLFLOW_ALLOW_PLAIN_HTTP", "1")
    if refused:
        with pytest.raises(store.TrackingError, match="over plain http:// .*https://"):
            store.check_tracking(uri, timeout=0.2)
    else:
        store.refuse_plain_http_login(uri)  # no refusal; the probe itself is tested elsewhere
