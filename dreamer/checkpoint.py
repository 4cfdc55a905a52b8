"""Atomic checkpoint files, loaded with ``torch.load(weights_only=True)``.

A checkpoint is one dict built from a single registry (``Trainer.training_state()``), so nothing is
listed twice. Writes go to a temporary file in the same folder, then ``os.replace``: a crash leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .agent import Agent
from .atomic import atomic_path
from .config import config_from_dict, override
from .envs import EnvSpec
from .errors import CheckpointError, ConfigError

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
