"""Checkpoints: atomic files loaded with ``torch.load(weights_only=True)``, and the folder of
whole training checkpoints that a killed run resumes from.

A checkpoint's state is one dict built from a single registry (``Trainer.training_state()``), so
nothing is listed twice. A file is written to a temporary name in the same folder, then
``os.replace``: a crash leaves either the old file or the new one, never half of one.

A training checkpoint is a file *and* the replay buffer's chunks, which must match each other.
:class:`CheckpointDir` writes each one into a new folder and renames it into place::

    models/checkpoint/
        ckpt-000007/            an older whole checkpoint (kept: the last two are)
            state.pt            trainer, agent, optimiser, RNGs, counters, curves
            replay/             meta.json + chunk_*.npz (unchanged chunks hard-linked to the last)
        ckpt-000008/            the newest
        .ckpt-000009.PID.tmp/   a write in progress (or of a killed process: removed next time)

so at every instant the newest ``ckpt-*`` folder is a whole checkpoint: a kill before the rename
leaves the previous one newest, a kill after it leaves the new one.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .agent import Agent
from .atomic import alive, atomic_path, fsync_dir, link_or_copy
from .config import config_from_dict, override
from .envs import EnvSpec
from .errors import CheckpointError, ConfigError, ReplayError
from .faults import fault_point
from .replay import ReplayBuffer

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (tensors, numbers, strings, lists, dicts) atomically to ``path``."""
    with atomic_path(path, sync=True) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; CheckpointError names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: corrupt or unreadable checkpoint ({reason[:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a dreamer checkpoint (format version mismatch)")
    return payload


# --- the folder of training checkpoints ---------------------------------------------------------
_ENTRY = re.compile(r"ckpt-(\d{6,})")
_TEMP = re.compile(r"\.ckpt-\d+\.(\d+)\.tmp")


def number_of(entry: Path) -> int:
    """The number of checkpoint folder ``ckpt-NNNNNN``."""
    return int(_ENTRY.fullmatch(entry.name)[1])


class CheckpointDir:
    """A folder of whole checkpoints ``ckpt-NNNNNN/``, the newest ``keep`` kept.

    Args:
        root: the folder (``models/checkpoint``, a ``persist: true`` DVC out).
        keep: how many checkpoints stay after a save (the one before the newest is the fallback
            when the newest is damaged by something other than a kill: remove the newest).
    """

    def __init__(self, root: str | Path, keep: int = 2):
        self.root, self.keep = Path(root), keep

    def entries(self) -> list[Path]:
        """The whole checkpoints, newest first (a folder appears only once renamed into place)."""
        if not self.root.is_dir():
            return []
        found = [(int(m[1]), p) for p in self.root.iterdir() if (m := _ENTRY.fullmatch(p.name))]
        return [path for _, path in sorted(found, reverse=True)]

    def latest(self) -> Path | None:
        entries = self.entries()
        return entries[0] if entries else None

    def next_number(self) -> int:
        latest = self.latest()
        return number_of(latest) + 1 if latest else 1

    def save(self, state: dict, replay: ReplayBuffer, number: int | None = None) -> Path:
        """Write ``state`` and ``replay`` as checkpoint ``number`` (default: after the newest);
        returns its folder.

        The replay's chunks unchanged since its last save are hard-linked from that folder, so a
        save costs the new steps only. Files and folders are fsynced before and after the rename.
        """
        final = self.root / f"ckpt-{number or self.next_number():06d}"
        with self._new_entry(final) as tmp:
            replay.save(tmp / "replay")
            fault_point("checkpoint.replay")  # killed here: a temp folder, the old newest intact
            save_checkpoint(tmp / "state.pt", state)
            fsync_dir(tmp / "replay")
            fault_point("checkpoint.state")
        replay.moved_to(final / "replay")
        fault_point("checkpoint.renamed")  # killed here: the new one is newest, the old not pruned
        self._prune()
        return final

    def adopt(self, entry: Path) -> Path:
        """Hard-link the whole checkpoint ``entry`` (of another folder) in as one of this folder's,
        same number; returns the new folder."""
        final = self.root / entry.name
        if final.exists():
            return final
        with self._new_entry(final) as tmp:
            for source in sorted(entry.rglob("*")):
                target = tmp / source.relative_to(entry)
                if source.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    link_or_copy(source, target)
            for folder in [p for p in tmp.rglob("*") if p.is_dir()]:
                fsync_dir(folder)
        self._prune()
        return final

    def load_state(self, folder: Path) -> dict:
        """The ``state.pt`` of checkpoint ``folder`` (one of :meth:`entries`)."""
        with self._damaged(folder):
            return load_checkpoint(folder / "state.pt")

    def load_replay(self, folder: Path, spec) -> ReplayBuffer:
        """The replay buffer of checkpoint ``folder``, recorded for ``spec``."""
        with self._damaged(folder):
            return ReplayBuffer.load(folder / "replay", spec)

    @contextmanager
    def _damaged(self, folder: Path) -> Iterator[None]:
        """A damaged checkpoint (a kill never makes one: see the module docstring) fails with one
        line naming the file and what to remove to use the one before it."""
        try:
            yield
        except (CheckpointError, ReplayError) as exc:
            older = [p for p in self.entries() if p.name < folder.name][:1]
            hint = (
                f"remove {folder} to resume from {older[0].name}"
                if older
                else f"remove {self.root} to start fresh"
            )
            raise CheckpointError(f"{str(exc).splitlines()[0]}; {hint}") from None

    @contextmanager
    def _new_entry(self, final: Path) -> Iterator[Path]:
        """A temporary folder that becomes ``final`` by one rename when the block succeeds."""
        self.root.mkdir(parents=True, exist_ok=True)
        for path in self.root.iterdir():  # temporary folders of killed writers (pid gone)
            if (m := _TEMP.fullmatch(path.name)) and not alive(int(m[1])):
                shutil.rmtree(path, ignore_errors=True)
        tmp = self.root / f".{final.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            yield tmp
            fsync_dir(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.root)

    def _prune(self) -> None:
        """Remove all but the newest ``keep``: each renamed to a temporary name first, so that a
        kill mid-removal leaves no half-deleted ``ckpt-*`` (the next save removes the rest)."""
        for old in self.entries()[self.keep :]:
            doomed = self.root / f".{old.name}.{os.getpid()}.tmp"
            os.rename(old, doomed)
            shutil.rmtree(doomed)
        for legacy in ("state.pt", "replay"):  # the single-folder layout of earlier versions
            path = self.root / legacy
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


# --- the trained agent, as handed from train to evaluate ------------------------------------------
def save_agent(path: str | Path, agent: Agent, extra: dict | None = None) -> None:
    """Write the agent's weights with what is needed to rebuild it (spec and config)."""
    save_checkpoint(
        path,
        {
            "kind": "agent",
            "modules": agent.state_dict(),
            "spec": agent.spec.to_dict(),
            "config": agent.cfg.to_dict(),
            "gradient_steps": agent.gradient_steps,
            "extra": extra or {},
        },
    )


def load_agent(
    path: str | Path, device: str | None = None, env_id: str | None = None
) -> tuple[Agent, dict]:
    """Rebuild an :class:`~dreamer.agent.Agent` from :func:`save_agent`'s file.

    Returns ``(agent, extra)``. Raises CheckpointError naming the file when it is not an agent,
    or when ``env_id`` is given and the agent was trained on another env.
    """
    payload = load_checkpoint(path)
    if payload.get("kind") != "agent":
        raise CheckpointError(f"{path}: not an agent file (kind {payload.get('kind')!r})")
    try:
        cfg = config_from_dict(payload["config"])
    except (KeyError, ConfigError) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise CheckpointError(f"{path}: agent file does not match this code ({reason})") from None
    if device is not None:
        cfg = override(cfg, device=device)
    try:  # a ConfigError from here is the params' device (no CUDA): it names the key, not the file
        agent = Agent(EnvSpec.from_dict(payload["spec"]), cfg)
        agent.load_state_dict(payload["modules"])
    except (KeyError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise CheckpointError(f"{path}: agent file does not match this code ({reason})") from None
    if env_id is not None and agent.spec.env_id != env_id:
        raise CheckpointError(f"{path}: trained on {agent.spec.env_id}, params say {env_id}")
    agent.gradient_steps = int(payload["gradient_steps"])
    return agent, payload["extra"]
