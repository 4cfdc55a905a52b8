"""One training run, assembled once: random warm-up, fresh start or resume, checkpoints, summary.

The ``warmup`` and ``train`` stages call this with files in between (:func:`save_warmup`,
:func:`load_warmup`, a checkpoint folder); :func:`dreamer.loop.train` calls it in memory. So the
replay sizing, the seeding, the resume rules and the checkpoint payload exist once::

    warmup = collect_warmup(cfg)                     # seeded random policy → replay
    run = TrainingRun(cfg, warmup, checkpoint=None)  # agent, envs, replay, trainer
    run.run(hooks)                                   # act / store / train until the budget
    run.summary()                                    # train/* and the last loss/* values

A checkpoint folder (``checkpoint.CheckpointDir``) holds whole checkpoints, each a ``state.pt``
(the trainer's state and the curves so far) and a ``replay/`` (the chunk files). The newest one
resumes a run with the same :data:`RESUME_SECTIONS` and the same library code
(:func:`code_hash`); a finished one is loaded and not trained again, so a stage whose outputs
failed (a metrics file, the MLflow upload) redoes only those.
"""

from __future__ import annotations

import hashlib
import json
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent import Agent
from .atomic import write_text
from .checkpoint import CheckpointDir, number_of
from .config import Config
from .env_pool import make_envs
from .envs import EnvSpec
from .errors import CheckpointError, DivergenceError
from .faults import fault_point
from .loop import Counters, Hooks, Trainer, collect_random
from .records import EpisodeRecord
from .replay import ReplayBuffer
from .seeding import seed_everything, train_env_seed

# The params sections a training run depends on: a checkpoint resumes only if these match.
RESUME_SECTIONS = (
    "seed",
    "precision",
    "compile",
    "env",
    "warmup",
    "model",
    "world_model",
    "behavior",
    "training",
)


# Keys of TrainingRun.summary() that measure the process, not the run (wall-clock, speed, memory,
# whether it was resumed): the only ones a resumed run may differ in from an uninterrupted one.
TIMING_KEYS = frozenset(
    {
        "train/wall_seconds",
        "train/mean_updates_per_second",
        "train/compile_seconds",
        "train/peak_rss_mib",
        "train/resumed",
    }
)


def code_hash() -> str:
    """Short hash of the library's source (``dreamer/*.py``): a checkpoint resumes only the code
    that wrote it, so a run's outputs always come from the code DVC records for them."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


# --- warm-up --------------------------------------------------------------------------------------
@dataclass
class Warmup:
    """What the random warm-up hands to training: its replay and where it stopped."""

    spec: EnvSpec
    replay: ReplayBuffer
    env_steps: int  # frames, action repeat included
    episodes: int
    records: list[EpisodeRecord] = field(default_factory=list)  # empty when read from a folder
    vector_bounds: dict = field(default_factory=dict)  # {key: (low, high)} of bounded vectors


@dataclass(frozen=True)
class WarmupMeta:
    """``meta.json`` of a warm-up folder: the one record written by :func:`save_warmup` and read
    by :func:`load_warmup`. ``extra`` is the caller's (the stages keep their MLflow run ids)."""

    env_id: str
    seed: int
    env_steps: int
    episodes: int
    replay_steps: int
    spec: EnvSpec
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {**self.__dict__, "spec": self.spec.to_dict()}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: Path) -> WarmupMeta:
        try:
            data = json.loads(path.read_text())
            return cls(**{**data, "spec": EnvSpec.from_dict(data["spec"])})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{path}: missing or corrupt warm-up metadata ({type(exc).__name__}: {exc})"
            ) from None


def collect_warmup(cfg: Config) -> Warmup:
    """Seed everything, then ``warmup.steps`` frames of a uniform random policy in ``num_envs``
    envs seeded ``seed … seed + N − 1``. The replay holds exactly what was collected (no torch
    work: ``threads`` is not read, so it is no dependency of the warm-up)."""
    seed_everything(cfg.seed)
    with make_envs(cfg.env, cfg.seed) as envs:  # checks the id and spaces before anything else
        # Agent steps (the last round of N envs may overshoot by N − 1); resets add one each.
        steps = cfg.warmup.steps // cfg.env.action_repeat + envs.num_envs
        replay = ReplayBuffer(envs.spec, capacity=2 * steps + 2)
        collector, records = collect_random(
            envs, replay, cfg.warmup.steps, cfg.seed, cfg.env.action_repeat
        )
        return Warmup(
            envs.spec, replay, collector.env_steps, len(records), records, envs.vector_bounds()
        )


def save_warmup(folder: Path, warmup: Warmup, cfg: Config, extra: dict | None = None) -> WarmupMeta:
    """Write ``folder/replay/`` and ``folder/meta.json`` (into a folder the caller swaps in)."""
    warmup.replay.save(folder / "replay")
    meta = WarmupMeta(
        cfg.env.id,
        cfg.seed,
        warmup.env_steps,
        warmup.episodes,
        warmup.replay.total_steps,
        warmup.spec,
        extra or {},
    )
    write_text(folder / "meta.json", meta.to_json())
    return meta


def load_warmup(folder: Path, cfg: Config) -> tuple[WarmupMeta, Warmup]:
    """Read a warm-up folder; a folder collected for another env id or seed is refused."""
    meta = WarmupMeta.read(folder / "meta.json")
    if meta.env_id != cfg.env.id or meta.seed != cfg.seed:
        raise CheckpointError(
            f"{folder / 'meta.json'}: warm-up was collected for {meta.env_id} "
            f"seed {meta.seed}, params say {cfg.env.id} seed {cfg.seed}"
        )
    replay = ReplayBuffer.load(folder / "replay", meta.spec)
    return meta, Warmup(meta.spec, replay, meta.env_steps, meta.episodes)


# --- training -------------------------------------------------------------------------------------
class TrainingRun:
    """Agent, training envs, replay and :class:`~dreamer.loop.Trainer` of one run.

    Built from a warm-up; :meth:`restore` then continues a killed run from the newest checkpoint
    in ``checkpoint`` when it was written with the same params and code, or takes up a finished
    one (:attr:`finished`: nothing left to train). ``curves`` holds the episode rows and the loss
    rows so far (in the checkpoint too, so a resumed run's history is complete).
    """

    def __init__(
        self, cfg: Config, warmup: Warmup, checkpoint: Path | None, mirror: Path | None = None
    ):
        self.cfg = cfg
        self.identity = {"config_hash": cfg.hash(RESUME_SECTIONS), "code_hash": code_hash()}
        self.checkpoints = CheckpointDir(checkpoint) if checkpoint is not None else None
        # A copy (hard links) of each checkpoint outside DVC's outs, one folder per params and
        # code: `dvc exp run` checks out the workspace first and deletes a killed stage's
        # untracked outs, and a queued run's temporary clone is deleted with its outs.
        key = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()
        self.mirror = CheckpointDir(mirror / key[:16]) if mirror and checkpoint else None
        seed_everything(cfg.seed, cfg.threads)
        self.envs = make_envs(cfg.env, train_env_seed(cfg.seed, cfg.env.num_envs))
        try:  # the envs may be subprocesses: closed here if the rest cannot be built
            if self.envs.spec != warmup.spec:
                raise CheckpointError(f"the warm-up replay's env spec differs from {cfg.env.id}'s")
            self.agent = Agent(warmup.spec, cfg)
            self.replay = ReplayBuffer(warmup.spec, cfg.training.replay_capacity)
            self.trainer = Trainer(
                self.agent,
                self.envs,
                self.replay,
                cfg.training,
                cfg.seed,
                cfg.env.action_repeat,
                start_env_steps=warmup.env_steps,
                start_episodes=warmup.episodes,
            )
        except BaseException:
            self.envs.close()
            raise
        self._warmup_replay: ReplayBuffer | None = warmup.replay
        self.curves: dict[str, list[dict]] = {"returns": [], "losses": []}
        self.resumed = False
        self.compile_seconds: float | None = None  # None: not compiled (yet)
        self.last_checkpoint: Path | None = None

    @property
    def counters(self) -> Counters:
        return self.trainer.counters

    @property
    def finished(self) -> bool:
        """Nothing left to train (a finished checkpoint was restored, or the run has ended)."""
        return self.counters.env_steps >= self.cfg.training.env_steps

    def restore(self) -> str | None:
        """Resume from the newest checkpoint if it was written with these params and this code,
        else start from the warm-up replay. Returns one line saying which, or None for a first
        start. A damaged newest checkpoint raises CheckpointError naming its file."""
        message, state = None, None
        for folders, folder in self._candidates():
            state = folders.load_state(folder)
            if state.get("config_hash") != self.identity["config_hash"]:
                why = "with other params"
            elif state.get("code_hash") != self.identity["code_hash"]:
                why = "by other code (dreamer/ changed)"
            else:
                break
            message = message or f"{folder / 'state.pt'} was written {why}; starting fresh"
            state = None
        if state is None:
            self.replay.extend(self._warmup_replay.arrays())
        else:
            saved = folders.load_replay(folder, self.replay.spec)
            trainer_state = state["trainer"]
            if saved.total_steps != trainer_state["replay_steps"]:
                raise CheckpointError(
                    f"{folder}: its replay holds {saved.total_steps} steps, its state "
                    f"{trainer_state['replay_steps']}; remove it to resume from the one before"
                )
            self.replay.extend(saved.arrays())
            self.trainer.load_training_state(trainer_state)
            self.curves = state["curves"]
            origin = ""
            if folders is self.mirror:  # the out was deleted (dvc exp run): put it back whole
                origin = f" (restored from its copy in {folders.root})"
                folder = self.checkpoints.adopt(folder)
            self.resumed, self.last_checkpoint = True, folder
            steps = f"{self.counters.env_steps:,} env steps"
            message = (
                f"{folder} holds the finished run ({steps}){origin}; writing its outputs only"
                if self.finished
                else f"resuming from {folder} at {steps}{origin}"
            )
        self._warmup_replay = None  # free it: the training replay holds a copy
        return message

    def _candidates(self) -> list[tuple[CheckpointDir, Path]]:
        """The newest checkpoint of the out folder and of the mirror, newest first (the out's
        first where both hold the same number)."""
        found = [(d, d.latest()) for d in (self.checkpoints, self.mirror) if d is not None]
        found = [(d, folder) for d, folder in found if folder is not None]
        return sorted(found, key=lambda item: -number_of(item[1]))

    def compile(self) -> float:
        """Compile the update and the policy step now (``compile: true``; once). Returns seconds."""
        if self.compile_seconds is None:
            self.compile_seconds = self.trainer.compile() if self.cfg.compile else 0.0
        return self.compile_seconds

    def run(self, hooks: Hooks | None = None) -> Counters:
        """Train until ``training.env_steps``; records the curves and writes the checkpoint at
        the trainer's checkpoint points, then calls the caller's hooks. A finished run returns
        at once. Raises DivergenceError (naming the last good checkpoint) when updates keep
        failing."""
        if self._warmup_replay is not None:
            self.restore()
        if self.finished:
            self.envs.close()
            return self.counters
        self.compile()
        hooks = hooks or Hooks()

        def on_episode(record: EpisodeRecord) -> None:
            self.curves["returns"].append(record.row())
            if hooks.on_episode:
                hooks.on_episode(record)

        def on_metrics(row: dict) -> None:
            self.curves["losses"].append(row)
            if hooks.on_metrics:
                hooks.on_metrics(row)

        def on_checkpoint(trainer: Trainer) -> None:
            if self.checkpoints is not None:
                bad = trainer.agent.nonfinite_parameter()
                if bad:  # never save a diverged model as a checkpoint
                    raise DivergenceError(
                        f"training diverged: {bad} is not finite after update "
                        f"{trainer.agent.gradient_steps}; not saved"
                    )
                state = {**self.identity, "trainer": trainer.training_state()}
                state["curves"] = self.curves
                self.last_checkpoint = self._save(state)
            if hooks.on_checkpoint:
                hooks.on_checkpoint(trainer)

        with self.envs:
            try:
                return self.trainer.run(
                    Hooks(on_episode, on_metrics, on_checkpoint, hooks.should_stop)
                )
            except DivergenceError as exc:
                kept = self.last_checkpoint
                where = f"the last good checkpoint is {kept}" if kept else "no checkpoint yet"
                raise DivergenceError(f"{exc}; {where}") from None

    def _save(self, state: dict) -> Path:
        """Write the checkpoint into the mirror first (it survives ``dvc exp run``'s checkout),
        then hard-link it into the out folder: a kill between leaves the newest in the mirror,
        which :meth:`restore` finds. Returns the out folder's copy."""
        if self.mirror is None:
            return self.checkpoints.save(state, self.replay)
        number = max(self.checkpoints.next_number(), self.mirror.next_number())
        saved = self.mirror.save(state, self.replay, number)
        linked = self.checkpoints.adopt(saved)
        fault_point("checkpoint.linked")  # killed here: the checkpoint whole in both folders
        return linked

    def summary(self) -> dict[str, Any]:
        """``train/*`` figures of the run and the last logged ``loss/*`` values."""
        c, agent = self.counters, self.agent
        recent = [row["return"] for row in self.curves["returns"][-10:]]
        summary = {
            "train/env_steps": c.env_steps,
            "train/gradient_steps": agent.gradient_steps,
            "train/episodes": c.episodes,
            "train/wall_seconds": round(c.wall_seconds, 2),
            # the whole run's rate; the losses curve's updates_per_second is each interval's
            "train/mean_updates_per_second": round(
                agent.gradient_steps / max(c.wall_seconds, 1e-9), 3
            ),
            "train/return_last10_mean": sum(recent) / len(recent) if recent else None,
            "train/resumed": self.resumed,
            "train/skipped_updates": c.skipped_updates,
            # not in wall_seconds; 0 when the process only took up a finished checkpoint
            "train/compile_seconds": round(self.compile_seconds or 0.0, 1),
            "train/matmul_dtype": str(agent.matmul_dtype).removeprefix("torch."),
            # this process's peak resident memory (replay, model, optimiser state, env)
            "train/peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
        if self.curves["losses"]:
            last = self.curves["losses"][-1]
            summary.update({k: float(v) for k, v in last.items() if k.startswith("loss/")})
        return summary


def train(cfg: Config, hooks: Hooks | None = None) -> tuple[Agent, Counters]:
    """The whole run in one call, in memory: the ``warmup`` and ``train`` stages without their
    files, for notebooks and scripts: ``agent, counters = train(load_config("params.yaml"))``."""
    run = TrainingRun(cfg, collect_warmup(cfg), checkpoint=None)
    return run.agent, run.run(hooks)
