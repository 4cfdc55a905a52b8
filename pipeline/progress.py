"""What a training stage shows and logs while it runs: a progress bar and MLflow metrics.

Logging must never stop training: a metric MLflow refuses (a locked database, a server down for a
minute) is kept and sent again with the next ones, at most every ``RETRY_S`` seconds, with one
warning when logging fails and one when it works again. What still cannot be sent when training
ends is named in one line; every value is also in ``metrics/train/*.csv``.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from dreamer.loop import Hooks, Trainer
from dreamer.records import EpisodeRecord

from .tracking import StageRun

RETRY_S = 30.0


class TrainMonitor:
    """Hooks for :meth:`dreamer.run.TrainingRun.run`: each episode and each loss row goes to the
    MLflow run (buffered while MLflow fails) and to the bar's postfix (recent return, updates/s)."""

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
        self.pending: list = []  # mlflow Metric entries not logged yet
        self.failure: str | None = None  # why the last try failed; None while logging works
        self.next_try = 0.0  # time.monotonic() of the next try while failing

    def hooks(self) -> Hooks:
        return Hooks(
            on_episode=self.on_episode, on_metrics=self.on_metrics, should_stop=self.on_step
        )

    def on_episode(self, record: EpisodeRecord) -> None:
        self._log({"train/return": record.return_, "train/length": record.length}, record.env_step)
        self.returns = (self.returns + [record.return_])[-10:]
        self.postfix["return"] = f"{sum(self.returns) / len(self.returns):.1f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_metrics(self, row: dict) -> None:
        self._log(row, row["gradient_step"])
        self.postfix["updates/s"] = f"{row['updates_per_second']:.2f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_step(self, trainer: Trainer) -> bool:
        self.bar.update(trainer.counters.env_steps - self.last)
        self.last = trainer.counters.env_steps
        return False  # never stops the run

    def _log(self, metrics: dict, step: int) -> None:
        self.pending += self.mlflow_run.metric_entries(metrics, step)
        if self.failure is None or time.monotonic() >= self.next_try:
            self.flush()

    def flush(self, quick: bool = True) -> bool:
        """Send the pending metrics; on failure keep them and warn once. True when all are sent."""
        if not self.pending:
            return True
        try:
            self.mlflow_run.log_entries(self.pending, quick=quick)
        except Exception as exc:  # whatever the store raises, training goes on
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            if self.failure is None:
                self._say(
                    f"warning: MLflow logging failed ({reason}); training goes on, the metrics "
                    f"are kept and sent again every {RETRY_S:g} s"
                )
            self.failure, self.next_try = reason, time.monotonic() + RETRY_S
            return False
        if self.failure is not None:
            self._say(f"mlflow: logging works again; {len(self.pending)} kept values sent")
            self.failure = None
        self.pending = []
        return True

    def close(self) -> None:
        """Last try for kept metrics (with mlflow's own retries), then name what is missing."""
        self.bar.close()
        if not self.flush(quick=False):
            print(
                f"warning: {len(self.pending)} metric values of MLflow run "
                f"{self.mlflow_run.run_id} could not be logged ({self.failure}); "
                "they are in metrics/train/*.csv",
                file=sys.stderr,
            )

    def _say(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)
