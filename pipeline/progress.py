"""What a training stage shows and logs while it runs: a progress bar and MLflow metrics."""

from __future__ import annotations

from tqdm import tqdm

from dreamer.loop import EpisodeRecord, Hooks, Trainer

from .tracking import StageRun


class TrainMonitor:
    """Hooks for :meth:`dreamer.run.TrainingRun.run`: each episode and each loss row goes to the
    MLflow run and to the bar's postfix (recent return, updates/s)."""

    def __init__(self, run: StageRun, total: int, initial: int):
        self.mlflow_run = run
        self.bar = tqdm(
            total=total,
            initial=initial,
            unit="step",
            desc="train",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        self.returns: list[float] = []
        self.postfix: dict[str, str] = {}
        self.last = initial

    def hooks(self) -> Hooks:
        return Hooks(
            on_episode=self.on_episode, on_metrics=self.on_metrics, should_stop=self.on_step
        )

    def on_episode(self, record: EpisodeRecord) -> None:
        self.mlflow_run.log_metrics(
            {"train/return": record.score, "train/length": record.length}, step=record.env_step
        )
        self.returns = (self.returns + [record.score])[-10:]
        self.postfix["return"] = f"{sum(self.returns) / len(self.returns):.1f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_metrics(self, row: dict) -> None:
        self.mlflow_run.log_metrics(row, step=row["gradient_step"])
        self.postfix["updates/s"] = f"{row['updates_per_second']:.2f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_step(self, trainer: Trainer) -> bool:
        self.bar.update(trainer.counters.env_steps - self.last)
        self.last = trainer.counters.env_steps
        return False  # never stops the run

    def close(self) -> None:
        self.bar.close()
