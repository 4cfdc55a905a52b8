"""Where the train stage's seconds go: updates, replay, acting, env steps, checkpoints, MLflow.

    python benchmarks/train_phases.py                     # params.yaml, 3,000 env steps
    python benchmarks/train_phases.py --env-steps 6000    # the default run's whole budget

Runs the train stage (``stages.train``, what ``dvc repro`` runs) from the project's warm-up
replay (``data/warmup``: run ``dvc repro warmup`` first) with timers around its parts. Everything
it writes goes to a temporary folder (its params, the checkpoints, the agent, the curves and an
MLflow store; removed at the end unless ``--keep``), so the project's files and store are not
touched; the kernel cache is the
project's ``.cache/torch``, so the compile is warm unless that cache is empty. Only
``training.env_steps`` differs from the params file.

Prints the compile's seconds, then the training loop's (``Trainer.run``) part by part: seconds,
calls and milliseconds a call, and what the timers did not cover (the loop's own bookkeeping).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# part → the (module, class, method) calls it is made of; timed only inside Trainer.run
PARTS = {
    "update (Agent.train_step)": [("dreamer.agent", "Agent", "train_step")],
    "replay: sample, gather, context latents": [
        ("dreamer.replay", "ReplayBuffer", "sample_index"),
        ("dreamer.replay", "ReplayBuffer", "gather"),
        ("dreamer.replay", "ReplayBuffer", "read_latents"),
    ],
    "replay: latents written back, steps added": [
        ("dreamer.replay", "ReplayBuffer", "write_latents"),
        ("dreamer.replay", "ReplayBuffer", "add"),
    ],
    "acting (Agent.act)": [("dreamer.agent", "Agent", "act")],
    "env steps": [
        ("dreamer.env_pool", "LocalEnvs", "step"),
        ("dreamer.env_pool", "SubprocessEnvs", "step"),
    ],
    "checkpoints": [("dreamer.run", "TrainingRun", "_save")],
    "MLflow metrics and progress bar": [
        ("pipeline.progress", "TrainMonitor", "on_episode"),
        ("pipeline.progress", "TrainMonitor", "on_metrics"),
        ("pipeline.progress", "TrainMonitor", "on_step"),
    ],
}


class Timers:
    """Seconds and calls per part, counted only while the training loop runs (not the compile,
    whose first update and policy step are the compile's)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.in_loop = False

    def wrap(self, owner: type, method: str, part: str, outer: str = "") -> None:
        """Time ``owner.method`` as ``part``: inside the loop only, or with ``outer`` always
        (``"loop"``: it is the loop; ``"alone"``: the compile, whose inner calls are not
        counted)."""
        original = getattr(owner, method)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            counted = bool(outer) or self.in_loop
            if outer == "loop":
                self.in_loop = True
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if counted:
                    self.seconds[part] += time.perf_counter() - start
                    self.calls[part] += 1
                if outer == "loop":
                    self.in_loop = False

        setattr(owner, method, timed)


def install(timers: Timers) -> None:
    import importlib

    from dreamer.loop import Trainer

    for part, calls in PARTS.items():
        for module, cls, method in calls:
            timers.wrap(getattr(importlib.import_module(module), cls), method, part)
    timers.wrap(Trainer, "compile", "compile", outer="alone")
    timers.wrap(Trainer, "run", "training loop (Trainer.run)", outer="loop")


def write_params(source: Path, env_steps: int, folder: Path) -> Path:
    """``source`` with ``training.env_steps`` (and the env's preset's, if it sets one) changed."""
    from dreamer.config import load_config

    data = yaml.safe_load(source.read_text())
    data["training"]["env_steps"] = env_steps
    preset = data.get("presets") or {}
    for key in data["env"]["id"].split("/"):  # DeepMind Control's presets nest under dm_control
        preset = preset.get(key) or {}
    if "env_steps" in preset.get("training", {}):
        preset["training"]["env_steps"] = env_steps
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    budget = load_config(path).training.env_steps
    if budget != env_steps:
        sys.exit(f"{source}: could not set training.env_steps to {env_steps} (got {budget})")
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--env-steps", type=int, default=3000)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    warmup = ROOT / "data" / "warmup"
    if not (warmup / "meta.json").exists():
        sys.exit(f"{warmup}: no warm-up replay; run `dvc repro warmup` first")

    folder = Path(tempfile.mkdtemp(prefix="train_phases-"))
    (folder / ".cache").mkdir()
    (folder / ".cache" / "torch").symlink_to(ROOT / ".cache" / "torch")  # the project's kernels
    os.environ["DVC_ROOT"] = str(folder)  # the stage's project root: its store and mirror
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the embedded store in the folder
    params = write_params(Path(args.params), args.env_steps, folder)

    timers = Timers()
    install(timers)
    from stages.train import main as train

    train(
        [
            f"--params={params}",
            f"--warmup={warmup}",
            f"--checkpoint={folder / 'checkpoint'}",
            f"--agent={folder / 'agent.pt'}",
            f"--metrics={folder / 'train.json'}",
            f"--curves={folder / 'curves'}",
        ]
    )
    loop = timers.seconds.pop("training loop (Trainer.run)")
    timers.calls.pop("training loop (Trainer.run)")
    compile_seconds = timers.seconds.pop("compile", 0.0)
    timers.calls.pop("compile", None)
    print(
        f"\n{args.env_steps:,} env steps ({Path(args.params).name}; outputs in {folder}"
        f"{', kept' if args.keep else ', removed at the end'}): "
        f"compile {compile_seconds:.1f} s, training loop {loop:.1f} s"
    )
    for part in sorted(timers.seconds, key=timers.seconds.get, reverse=True):
        seconds, calls = timers.seconds[part], timers.calls[part]
        print(
            f"  {part:<42} {seconds:8.2f} s {100 * seconds / loop:5.1f}%  {calls:6d} calls "
            f"{1e3 * seconds / calls:9.3f} ms each"
        )
    rest = loop - sum(timers.seconds.values())
    print(
        f"  {'the loop itself (not in a part above)':<42} {rest:8.2f} s {100 * rest / loop:5.1f}%"
    )
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
