"""Fault injection: SIGKILL the debug pipeline again and again, ``dvc repro`` after each kill, and
check that the run finishes with the uninterrupted run's outputs.

    python benchmarks/fault_injection.py --kills 24 --out benchmarks/results/fault_injection
    python benchmarks/fault_injection.py --points checkpoint.state:2 evaluate.write  # test suite

In a scratch git + DVC copy of this repository, on debug-size params (``DEBUG_PARAMS``):

1. a reference: ``dvc repro`` once, uninterrupted;
2. chains: from a clean copy, ``dvc repro`` killed (SIGKILL to its whole process group), again and
   again, then one last ``dvc repro`` that must finish. Each chain's first kill is the next fault
   point in turn (``dreamer.faults``: inside each step of a checkpoint write, after training
   before its outputs, inside the MLflow model upload, before the warm-up, the evaluation and the
   plot finish their outputs), so that kills land where a timer rarely does; the chain's later
   kills are timers (a uniformly random moment of the uninterrupted run's duration: warm-up,
   training, evaluation, plotting, the MLflow calls between them, DVC's own lock updates). A
   chain ends after ``--per-chain`` kills, or when an attempt finished before its kill;
3. every chain's final outputs against the reference: the agent's weights bit for bit, the warm-up
   replay's chunks byte for byte, ``metrics/eval.json`` exactly, the training curves and
   ``metrics/train.json`` exactly but for the columns and keys that time the process
   (``TIMING_COLUMNS``, ``TIMING_KEYS``: wall-clock, updates/s, compile time, peak memory, and
   whether the run was resumed).

Prints one line per kill (the stage it hit, the outcome) and a summary; with ``--out`` writes
``kills.csv`` and ``summary.json`` there. Exit status 1 if any chain failed to finish or differed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.study import code_commit, machine, write_summary  # noqa: E402
from dreamer.faults import KILLED_MARKER  # noqa: E402
from dreamer.records import TIMING_COLUMNS  # noqa: E402
from dreamer.run import TIMING_KEYS  # noqa: E402
from tests.helpers import TINY_PARAMS, copy_worktree, process_env, set_params  # noqa: E402

DVC = [sys.executable, "-m", "dvc"]
# The tests' debug pipeline (Pendulum, debug size, eager), a longer budget, no video.
DEBUG_PARAMS = {
    **TINY_PARAMS,
    "seed": 5,
    "precision": "float32",
    "training": {**TINY_PARAMS["training"], "env_steps": 1000},
    "evaluate": {"episodes": 2, "video": False},
    "mlflow": {"experiment": "fault-injection"},
}
# (fault point, the stage it is in): a kill inside each checkpoint write step, after training,
# inside the model upload, before the other stages' outputs
POINTS = [
    ("checkpoint.replay:1", "train"),
    ("checkpoint.state:2", "train"),
    ("checkpoint.renamed:3", "train"),
    ("checkpoint.linked:2", "train"),
    ("train.outputs", "train"),
    ("tracking.log_model", "train"),
    ("warmup.write", "warmup"),
    ("evaluate.write", "evaluate"),
    ("plot.log", "plot"),
]
STAGES = ("warmup", "train", "evaluate", "plot")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=24, help="kills in all (at least 20 for a study)")
    p.add_argument("--per-chain", type=int, default=4, help="kills before a chain's last repro")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    p.add_argument("--points-only", action="store_true", help="fault points only, no timers")
    p.add_argument("--points", nargs="+", help="exactly these fault points, in this order")
    p.add_argument("--out", help="folder for kills.csv and summary.json")
    p.add_argument("--workdir", help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--env-steps", type=int, default=1000, help="training.env_steps of the run")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="fault-injection-"))
    try:
        params = json.loads(json.dumps(DEBUG_PARAMS))
        params["training"]["env_steps"] = args.env_steps
        template = make_template(scratch / "template", params)
        reference = scratch / "reference"
        shutil.copytree(template, reference, symlinks=True)
        started = time.perf_counter()
        done = repro(reference)
        duration = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"the uninterrupted reference run failed:\n{done.stdout[-3000:]}")
        print(f"reference: dvc repro uninterrupted in {duration:.1f} s", flush=True)
        points = itertools.cycle(args.points or [point for point, _ in POINTS])
        kills, chains, in_chain, attempts = [], [], 0, 0
        chain = new_chain(template, scratch, chains)
        target_kills = len(args.points) if args.points else args.kills
        while sum(k["outcome"] == "killed" for k in kills) < target_kills:
            if len(kills) >= 3 * target_kills:
                raise SystemExit(f"only {len(kills)} attempts landed so few kills; giving up")
            kind, target = next_kill(points, attempts, args)
            kills.append(kill_once(chain, kind, target, duration, rng, len(kills) + 1))
            print(format_kill(kills[-1]), flush=True)
            attempts += 1
            in_chain += kills[-1]["outcome"] == "killed"
            if kills[-1]["outcome"] != "killed" or in_chain == args.per_chain:
                chains.append(finish_chain(chain, reference, kills))
                chain, in_chain, attempts = new_chain(template, scratch, chains), 0, 0
        if in_chain:
            chains.append(finish_chain(chain, reference, kills))
        summary = summarise(kills, chains, duration, args)
        print(json.dumps(summary["totals"], indent=1))
        if args.out:
            write_results(Path(args.out), kills, summary)
        return 0 if summary["totals"]["all_recovered_and_equal"] else 1
    finally:
        if not args.workdir:
            shutil.rmtree(scratch, ignore_errors=True)


def new_chain(template: Path, scratch: Path, chains: list) -> Path:
    chain = scratch / f"chain{len(chains)}"
    shutil.copytree(template, chain, symlinks=True)
    return chain


def finish_chain(chain: Path, reference: Path, kills: list[dict]) -> dict:
    """The chain's last ``dvc repro`` (no kill), and its outputs against the reference's."""
    final = repro(chain)
    differences = compare(chain, reference) if final.returncode == 0 else ["did not finish"]
    record = {
        "chain": chain.name,
        "kills": [
            k["kill"] for k in kills if k["chain"] == chain.name and k["outcome"] == "killed"
        ],
        "finished": final.returncode == 0,
        "equal_to_uninterrupted": not differences,
        "differences": differences,
    }
    print(
        f"{chain.name}: kills {record['kills']}; the last dvc repro "
        f"{'finished' if record['finished'] else 'FAILED: ' + final.stdout[-500:]}; outputs "
        f"{'equal to the uninterrupted run' if not differences else differences}",
        flush=True,
    )
    return record


def make_template(folder: Path, debug_params: dict) -> Path:
    """A git + DVC copy of this working tree with ``debug_params`` and no outputs."""
    copy_worktree(folder)
    set_params(folder / "params.yaml", debug_params)
    (folder / "dvc.lock").unlink(missing_ok=True)  # the repository's default run: not ours
    env = process_env()
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "fi"]):
        subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)
    return folder


def next_kill(points: Iterator[str], in_chain: int, args) -> tuple[str, str]:
    """The next kill: with ``--points``, those points in order; otherwise each chain starts with
    the next fault point in turn (every stage is still to run then, so it lands), then timers
    (or, with ``--points-only``, points again)."""
    if args.points or args.points_only or in_chain == 0:
        return "point", next(points)
    return "timer", ""


def kill_once(chain: Path, kind: str, target: str, duration: float, rng, number: int) -> dict:
    """One ``dvc repro`` in ``chain``, SIGKILLed at a random moment or at fault point
    ``target``; returns the kill's record."""
    log = chain.parent / f"{chain.name}-kill{number}.log"
    env = process_env()
    at = ""
    if kind == "point":
        env["DREAMER_FAULT"] = target
    with open(log, "w") as out:
        process = subprocess.Popen(
            [*DVC, "repro"],
            cwd=chain,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = time.perf_counter()
        if kind == "timer":
            delay = rng.uniform(0.0, duration)
            at = f"{delay:.1f} s"
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        try:
            returncode = process.wait(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            returncode = process.wait()
    elapsed = time.perf_counter() - started
    text = log.read_text(errors="replace")
    running = [s for s in STAGES if f"Running stage '{s}'" in text]
    stage = running[-1] if running else "dvc (before any stage)"
    if kind == "point":
        killed = KILLED_MARKER in text
        hit = dict(POINTS).get(target, "?") if killed else "-"
        outcome = "killed" if killed else f"point not reached (rc {returncode})"
    else:
        killed = returncode == -signal.SIGKILL
        hit = stage if killed else "-"
        outcome = "killed" if killed else f"finished before the timer (rc {returncode})"
        if killed and "Updating lock file" in text.rsplit("Running stage", 1)[-1]:
            hit += " (lock update)"
    return {
        "kill": number,
        "chain": chain.name,
        "kind": kind,
        "at": target or at,
        "stage": hit,
        "seconds": round(elapsed, 1),
        "outcome": outcome,
    }


def format_kill(k: dict) -> str:
    return (
        f"kill {k['kill']:2d} ({k['chain']}): {k['kind']:5s} {k['at']:22s} stage {k['stage']:26s}"
        f" {k['outcome']}"
    )


def repro(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DVC, "repro"], cwd=folder, env=process_env(), capture_output=True, text=True, timeout=1800
    )


def compare(folder: Path, reference: Path) -> list[str]:
    """What differs between a chain's outputs and the reference's (empty: equal)."""
    import pandas as pd
    import torch

    differences = []
    first, second = (
        torch.load(p / "models/agent.pt", weights_only=True) for p in (folder, reference)
    )
    for name, tensor in second["modules"].items():
        if not torch.equal(first["modules"][name], tensor):
            differences.append(f"models/agent.pt: {name}")
            break
    for chunk in sorted((reference / "data/warmup/replay").glob("chunk_*.npz")):
        mine = folder / chunk.relative_to(reference)
        if not mine.is_file() or mine.read_bytes() != chunk.read_bytes():
            differences.append(str(chunk.relative_to(reference)))
    for name in ("returns.csv", "losses.csv"):
        got, want = (pd.read_csv(p / "metrics/train" / name) for p in (folder, reference))
        drop = [c for c in TIMING_COLUMNS if c in want]
        if not got.drop(columns=drop).equals(want.drop(columns=drop)):
            differences.append(f"metrics/train/{name}")
    got, want = (json.loads((p / "metrics/train.json").read_text()) for p in (folder, reference))
    keys = sorted(
        k for k in want.keys() | got.keys() if k not in TIMING_KEYS and got.get(k) != want.get(k)
    )
    differences += [f"metrics/train.json: {k}" for k in keys]
    if (folder / "metrics/eval.json").read_text() != (reference / "metrics/eval.json").read_text():
        differences.append("metrics/eval.json")
    return differences


def summarise(kills: list[dict], chains: list[dict], duration: float, args) -> dict:
    by_stage: dict[str, int] = {}
    for k in kills:
        if k["outcome"] == "killed":
            by_stage[k["stage"]] = by_stage.get(k["stage"], 0) + 1
    totals = {
        "kills_attempted": len(kills),
        "kills_landed": sum(k["outcome"] == "killed" for k in kills),
        "kills_by_stage": by_stage,
        "chains": len(chains),
        "chains_finished": sum(c["finished"] for c in chains),
        "chains_equal_to_uninterrupted": sum(c["equal_to_uninterrupted"] for c in chains),
        "all_recovered_and_equal": all(
            c["finished"] and c["equal_to_uninterrupted"] for c in chains
        ),
        "uninterrupted_seconds": round(duration, 1),
    }
    command = "python benchmarks/fault_injection.py " + " ".join(
        [f"--kills {args.kills}", f"--per-chain {args.per_chain}", f"--seed {args.seed}"]
        + (["--points-only"] if args.points_only else [])
        + (["--points", *args.points] if args.points else [])
        + ([f"--env-steps {args.env_steps}"] if args.env_steps != 1000 else [])
    )
    return {
        "command": command,
        "code_commit": code_commit(),
        "machine": machine("float32"),  # the debug pipeline's precision
        "params": {
            **DEBUG_PARAMS,
            "training": {**DEBUG_PARAMS["training"], "env_steps": args.env_steps},
        },
        "timing_columns_not_compared": TIMING_COLUMNS,
        "timing_keys_not_compared": sorted(TIMING_KEYS),
        "totals": totals,
        "chains": chains,
    }


def write_results(folder: Path, kills: list[dict], summary: dict) -> None:
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(kills).to_csv(folder / "kills.csv", index=False)
    write_summary(folder, summary)


if __name__ == "__main__":
    sys.exit(main())
