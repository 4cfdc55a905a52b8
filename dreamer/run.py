"""One training run, assembled once: random warm-up, fresh start or resume, checkpoints, summary.

The ``warmup`` and ``train`` stages call this with files in between (:func:`save_warmup`,
:func:`load_warmup`, a checkpoint folder); :func:`dreamer.loop.train` calls it in memory. So the
replay sizing, the seeding, the resume rules and the checkpoint payload exist once::

    warmup = collect_warmup(cfg)                     # seeded random policy → replay
    run = TrainingRun(cfg, warmup, checkpoint=None)  # agent, envs, replay, trainer
    run.run(hooks)                                   # act / store / train until the budget
    run.summary()                                    # train/* and the last loss/* values

A checkpoint folder holds ``state.pt`` (the trainer's state and the curves so far) and
``replay/`` (the chunk files); it resumes only a run with the same :data:`RESUME_SECTIONS`.
"""

from __future__ import annotations

import json
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent import Agent
from .atomic import write_text
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config
from .env_pool import make_envs
from .envs import EnvSpec
from .errors import CheckpointError
from .loop import Counters, EpisodeRecord, Hooks, Trainer, collect_random
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
    envs seeded ``seed … seed + N − 1``. The replay holds exactly what was collected."""
    seed_everything(cfg.seed, cfg.threads)
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

    Built from a warm-up; :meth:`restore` then continues a killed run from ``checkpoint`` when
    that folder was written with the same params. ``curves`` holds the episode rows and the loss
    rows so far (in the checkpoint too, so a resumed run's history is complete).
    """

    def __init__(self, cfg: Config, warmup: Warmup, checkpoint: Path | None = None):
        self.cfg, self.checkpoint = cfg, checkpoint
        self.config_hash = cfg.hash(RESUME_SECTIONS)
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
                cfg,
                start_env_steps=warmup.env_steps,
                start_episodes=warmup.episodes,
            )
            self.compile_seconds = self.trainer.compile()
        except BaseException:
            self.envs.close()
            raise
        self._warmup_replay: ReplayBuffer | None = warmup.replay
        self.curves: dict[str, list[dict]] = {"returns": [], "losses": []}
        self.resumed = False

    @property
    def counters(self) -> Counters:
        return self.trainer.counters

    def restore(self) -> str | None:
        """Resume from ``checkpoint`` if it holds an unfinished run with these params, else start
        from the warm-up replay. Returns one line saying which, or None for a first start."""
        message, state = None, None
        state_path = self.checkpoint / "state.pt" if self.checkpoint else None
        if state_path is not None and state_path.exists():
            state = load_checkpoint(state_path)
            if state.get("config_hash") != self.config_hash:
                message, state = f"{state_path} was written with other params; starting fresh", None
            elif state["trainer"]["counters"]["env_steps"] >= self.cfg.training.env_steps:
                # A finished run: DVC reruns the stage only because code or data changed.
                message, state = f"{state_path} is a finished run; starting fresh", None
        if state is None:
            self.replay.extend(self._warmup_replay.arrays())
        else:
            saved = ReplayBuffer.load(self.checkpoint / "replay", self.replay.spec)
            saved.truncate(state["trainer"]["replay_steps"])  # the replay may be one save ahead
            self.replay.extend(saved.arrays())
            self.trainer.load_training_state(state["trainer"])
            self.curves = state["curves"]
            self.resumed = True
            message = f"resuming from {self.checkpoint} at {self.counters.env_steps:,} env steps"
        self._warmup_replay = None  # free it: the training replay holds a copy
        return message

    def run(self, hooks: Hooks | None = None) -> Counters:
        """Train until ``training.env_steps``; records the curves and writes the checkpoint at
        the trainer's checkpoint points, then calls the caller's hooks."""
        if self._warmup_replay is not None:
            self.restore()
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
            if self.checkpoint is not None:
                self.replay.save(self.checkpoint / "replay")
                save_checkpoint(
                    self.checkpoint / "state.pt",
                    {
                        "config_hash": self.config_hash,
                        "trainer": trainer.training_state(),
                        "curves": self.curves,
                    },
                )
            if hooks.on_checkpoint:
                hooks.on_checkpoint(trainer)

        with self.envs:
            return self.trainer.run(Hooks(on_episode, on_metrics, on_checkpoint, hooks.should_stop))

    def summary(self) -> dict[str, Any]:
        """``train/*`` figures of the run and the last logged ``loss/*`` values."""
        c, agent = self.counters, self.agent
        recent = [row["return"] for row in self.curves["returns"][-10:]]
        summary = {
            "train/env_steps": c.env_steps,
            "train/gradient_steps": agent.gradient_steps,
            "train/episodes": c.episodes,
            "train/wall_seconds": round(c.wall_seconds, 2),
            "train/updates_per_second": round(agent.gradient_steps / max(c.wall_seconds, 1e-9), 3),
            "train/return_last10_mean": sum(recent) / len(recent) if recent else None,
            "train/resumed": self.resumed,
            "train/compile_seconds": round(self.compile_seconds, 1),  # not in wall_seconds
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
    run = TrainingRun(cfg, collect_warmup(cfg))
    return run.agent, run.run(hooks)
