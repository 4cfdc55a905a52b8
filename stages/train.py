"""Stage train: world model + behaviour learning interleaved with collection, resumable.

    python -m stages.train --warmup data/warmup --checkpoint models/checkpoint \
        --agent models/agent.pt --metrics metrics/train.json --curves metrics/train
Resumes from --checkpoint when it was written with the same params (a config hash decides);
otherwise starts from the warm-up replay.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from tqdm import tqdm

from dreamer.agent import Agent
from dreamer.checkpoint import CheckpointError, load_checkpoint, save_agent, save_checkpoint
from dreamer.compiled import use_cache_dir
from dreamer.config import Config
from dreamer.envs import EnvSpec, make_envs
from dreamer.loop import Hooks, Trainer, train_env_seed
from dreamer.replay import ReplayBuffer
from pipeline import cli, schemas, tables
from pipeline.tracking import pipeline_parent_id, project_root, stage_run

# The params sections a training run depends on: a checkpoint resumes only if these match.
RESUME_SECTIONS = ("seed", "precision", "compile", "env", "warmup", "model", "world_model",
                   "behavior", "training")


def read_warmup(folder: Path, cfg: Config) -> tuple[dict, EnvSpec, ReplayBuffer]:
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        spec = EnvSpec.from_dict(meta["spec"])
    except (OSError, ValueError, KeyError) as exc:
        raise FileNotFoundError(f"{meta_path}: missing or corrupt warm-up metadata ({exc})") \
            from None
    if meta["env_id"] != cfg.env.id or meta["seed"] != cfg.seed:
        raise CheckpointError(f"{meta_path}: warm-up was collected for {meta['env_id']} seed "
                              f"{meta['seed']}, params say {cfg.env.id} seed {cfg.seed}")
    return meta, spec, ReplayBuffer.load(folder / "replay", spec)


def try_resume(checkpoint: Path, trainer: Trainer, config_hash: str) -> dict | None:
    """Restore ``trainer`` from ``checkpoint/state.pt`` if it matches; returns its curves."""
    state_path = checkpoint / "state.pt"
    if not state_path.exists():
        return None
    state = load_checkpoint(state_path)
    if state.get("config_hash") != config_hash:
        print(f"train: {state_path} was written with other params; starting fresh",
              file=sys.stderr)
        return None
    # A finished run's checkpoint: DVC reruns this stage only because code or data changed.
    if state["trainer"]["counters"]["env_steps"] >= trainer.cfg.training.env_steps:
        print(f"train: {state_path} is a finished run; starting fresh", file=sys.stderr)
        return None
    replay = ReplayBuffer.load(checkpoint / "replay", trainer.replay.spec)
    replay.truncate(state["trainer"]["replay_steps"])  # the replay may be one save ahead
    trainer.replay.extend(replay.arrays())
    trainer.load_training_state(state["trainer"])
    return state["curves"]


def main(argv: list[str] | None = None) -> None:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--warmup", default="data/warmup")
    p.add_argument("--checkpoint", default="models/checkpoint")
    p.add_argument("--agent", default="models/agent.pt")
    p.add_argument("--metrics", default="metrics/train.json")
    p.add_argument("--curves", default="metrics/train")
    args = p.parse_args(argv)
    cfg = cli.setup(args.params)
    checkpoint, curves_dir = Path(args.checkpoint), Path(args.curves)
    meta, spec, warmup_replay = read_warmup(Path(args.warmup), cfg)
    envs = make_envs(cfg.env, train_env_seed(cfg))
    if envs.spec != spec:
        envs.close()
        raise CheckpointError(f"{args.warmup}/meta.json: env spec differs from {cfg.env.id}'s")

    agent = Agent(spec, cfg)
    replay = ReplayBuffer(spec, cfg.training.replay_capacity)
    config_hash = cfg.hash(RESUME_SECTIONS)
    trainer = Trainer(agent, envs, replay, cfg, start_env_steps=meta["env_steps"],
                      start_episodes=meta["episodes"])
    if cfg.compile:
        cache = use_cache_dir(project_root() / ".cache" / "torch")
        compile_seconds = trainer.compile()
        print(f"train: compiled the update and the policy step in {compile_seconds:.1f} s "
              f"(kernel cache {cache})", file=sys.stderr)
    else:
        compile_seconds = 0.0
    curves = try_resume(checkpoint, trainer, config_hash)
    resumed = curves is not None
    if not resumed:
        replay.extend(warmup_replay.arrays())
        curves = {"returns": [], "losses": []}
    del warmup_replay

    with stage_run(cfg, "train", pipeline_parent_id(cfg)) as run:
        run.set_tags({"resumed": resumed, "upstream.warmup_run_id": meta["mlflow_run_id"],
                      "matmul_dtype": str(agent.matmul_dtype).removeprefix("torch.")})
        if resumed:  # the curves of the killed part, so this run's history is complete
            run.log_metric_rows(curves["returns"], "env_step", prefix="train/", keys=["return"])
            run.log_metric_rows(curves["losses"], "gradient_step")
        bar = tqdm(total=cfg.training.env_steps, initial=trainer.counters.env_steps,
                   unit="step", desc="train", dynamic_ncols=True, mininterval=1.0)
        postfix = {}  # recent return and updates/s, shown after the bar

        def on_episode(record):
            curves["returns"].append(record.row())
            run.log_metrics({"train/return": record.score, "train/length": record.length},
                            step=record.env_step)
            recent = [r["return"] for r in curves["returns"][-10:]]
            postfix["return"] = f"{sum(recent) / len(recent):.1f}"
            bar.set_postfix(postfix, refresh=False)

        def on_metrics(row):
            curves["losses"].append(row)
            run.log_metrics(row, step=row["gradient_step"])
            postfix["updates/s"] = f"{row['updates_per_second']:.2f}"
            bar.set_postfix(postfix, refresh=False)

        def on_checkpoint(trainer):
            replay.save(checkpoint / "replay")
            save_checkpoint(checkpoint / "state.pt", {
                "config_hash": config_hash, "trainer": trainer.training_state(),
                "curves": curves})

        last = [trainer.counters.env_steps]

        def progress(trainer):
            bar.update(trainer.counters.env_steps - last[0])
            last[0] = trainer.counters.env_steps
            return False

        with envs:
            counters = trainer.run(Hooks(on_episode, on_metrics, on_checkpoint, progress))
        bar.close()

        returns = schemas.validate_train_returns(
            cli.frame(curves["returns"], tables.EPISODE_COLUMNS), str(curves_dir / "returns.csv"))
        losses = schemas.validate_train_losses(cli.frame(curves["losses"]), str(curves_dir / "losses.csv"))
        cli.write_csv(curves_dir / "returns.csv", returns)
        cli.write_csv(curves_dir / "losses.csv", losses)
        save_agent(args.agent, agent, extra={
            "env_steps": counters.env_steps, "mlflow_run_id": run.run_id,
            "mlflow_parent_run_id": run.parent_run_id})
        recent = returns["return"].tail(10)
        summary = {
            "env_steps": counters.env_steps,
            "gradient_steps": agent.gradient_steps,
            "episodes": counters.episodes,
            "wall_seconds": round(counters.wall_seconds, 2),
            "updates_per_second": round(agent.gradient_steps / max(counters.wall_seconds, 1e-9), 3),
            "return_last10_mean": float(recent.mean()) if len(recent) else None,
            "resumed": resumed,
            "compile_seconds": round(compile_seconds, 1),  # not in wall_seconds (training only)
            "matmul_dtype": str(agent.matmul_dtype).removeprefix("torch."),
            # this process's peak resident memory (replay, model, optimiser state, env)
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
        if len(losses):
            summary.update({k: float(v) for k, v in losses.iloc[-1].items() if k.startswith("loss/")})
        cli.write_json(args.metrics, summary)
        run.log_metrics({f"summary/{k}": v for k, v in summary.items()})
        run.log_artifact(curves_dir, "curves")
        run.log_artifact(args.agent, "model")
        run.set_tags({"model_uri": run.log_pytorch_model(agent.eval(), "agent")})
    print(f"train: {counters.env_steps} env steps, {agent.gradient_steps} updates, "
          f"{summary['wall_seconds']:.0f}s -> {args.agent}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
