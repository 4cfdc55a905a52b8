"""Helpers of the tests that run whole processes: loopback ports, repository copies, commands."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from dreamer.faults import KILLED_MARKER

REPO = Path(__file__).resolve().parents[1]
STAGES = ("warmup", "train", "evaluate", "plot")
DVC = [sys.executable, "-m", "dvc"]
# The test session's inductor kernel cache (ignored by git, kept between local runs). Compiling the
# debug agent costs ~160 s on 2 cores from a cold cache and a few seconds from a warm one: the
# compiled agent of tests/test_compiled.py fills this folder, and the e2e pipeline, trained on the
# same params (COMPILED_PARAMS below), starts its repository copy from it. So a
# CI run compiles once, not twice; run alone, the e2e test compiles from scratch (slower, same).
KERNEL_CACHE = REPO / ".cache" / "torch-tests"

TINY_PARAMS = {
    "seed": 3,
    "compile": False,  # the e2e test runs the pipeline compiled
    "env": {"id": "Pendulum-v1"},
    "warmup": {"steps": 200},
    "model": {"size": "debug"},
    "behavior": {"horizon": 5},
    "training": {
        "env_steps": 600,
        "batch_size": 4,
        "batch_length": 16,
        "train_ratio": 32.0,
        "lr": 1.0e-3,
        "lr_warmup": 0,
        "log_every": 100,
        "checkpoint_every": 200,
    },
    "evaluate": {"episodes": 2},
    "mlflow": {"experiment": "stages-test"},
}
# Compiled (the e2e pipeline, tests/test_compiled.py): one set of graphs, so their kernels are
# compiled once (KERNEL_CACHE above). bfloat16 as `auto` picks on a CPU with native
# bf16, so the compiled bf16 path is tested on every machine.
COMPILED_PARAMS = {**TINY_PARAMS, "compile": True, "precision": "bfloat16"}


def write_params(folder: Path, **overrides) -> Path:
    """``params.yaml`` in ``folder``: TINY_PARAMS with dotted-key overrides."""
    params = json.loads(json.dumps(TINY_PARAMS))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLflow, DVC, git or fault settings, with a git identity
    and this interpreter first on ``PATH`` (``dvc.yaml``'s commands call ``python``)."""
    prefixes = ("MLFLOW_", "DVC_", "GIT_", "DREAMER_FAULT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
        **extra,
    )
    return env


def copy_worktree(dest: Path) -> Path:
    """Copy this working tree's tracked and untracked-but-not-ignored files into ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def set_params(path: Path, updates: dict) -> None:
    """Deep-merge ``updates`` into the params file (keeping every key dvc.yaml lists)."""
    params = yaml.safe_load(path.read_text())

    def merge(node: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                merge(node[key], value)
            else:
                node[key] = value

    merge(params, updates)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run(args: list[str], cwd: Path, env: dict, timeout: float = 600) -> str:
    """Run a command; fail the test with its output if it fails. Returns stdout + stderr."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def ran(output: str) -> set[str]:
    """The stages a ``dvc repro`` / ``dvc exp run`` output says it ran."""
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


def start_queue_worker(root: Path, env: dict, jobs: int = 1) -> None:
    """``dvc queue start -j JOBS``: it starts detached workers and returns (a worker keeps any
    pipe it inherits open, so its output goes nowhere)."""
    subprocess.run(
        [*DVC, "queue", "start", "-j", str(jobs)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=120,
    )


def wait_for_experiment(root: Path, env: dict, name: str, timeout: float = 600) -> str:
    """Poll ``dvc queue status`` until the queued experiment ``name`` has ended; assert it
    succeeded and return its ``dvc queue logs``."""
    deadline = time.monotonic() + timeout
    while True:
        table = run([*DVC, "queue", "status"], root, env)
        status = next((line.split()[-1] for line in table.splitlines() if f" {name} " in line), "")
        if status in ("Success", "Failed"):
            break
        assert time.monotonic() < deadline, f"{name} did not end within {timeout:g} s:\n{table}"
        time.sleep(2)
    logs = run([*DVC, "queue", "logs", name], root, env)
    assert status == "Success", f"{name} failed:\n{logs[-3000:]}"
    return logs


def newest_checkpoint(root: Path) -> Path | None:
    """``models/checkpoint/ckpt-NNNNNN`` with the highest number under ``root``, or None."""
    found = sorted((root / "models" / "checkpoint").glob("ckpt-*"))
    return found[-1] if found else None


def repro_killed_at(root: Path, env: dict, fault: str, timeout: float = 600) -> str:
    """``dvc repro`` whose stage SIGKILLs itself at ``fault`` (a ``DREAMER_FAULT`` point: the
    kill lands there, not wherever a timer happens to); returns the output. DVC reports the
    stage as failed."""
    done = subprocess.run(
        [*DVC, "repro"],
        cwd=root,
        env={**env, "DREAMER_FAULT": fault},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and f"{KILLED_MARKER} {fault}" in output, (
        f"no kill at {fault}:\n{output[-3000:]}"
    )
    return output
