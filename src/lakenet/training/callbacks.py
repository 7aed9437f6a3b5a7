"""Training callbacks: hooks the loop calls on rank 0; each hook does nothing unless overridden."""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Callback", "ConsoleProgress"]


class Callback:
    """Override the hooks you need. `state` is the loop's TrainState; `logs` holds the latest figures."""

    def on_train_start(self, state: Any, logs: dict[str, Any]) -> None:
        """Called once before the first step (after a resume, too)."""

    def on_step_end(self, state: Any, logs: dict[str, Any]) -> None:
        """Called after every optimizer step."""

    def on_epoch_end(self, state: Any, logs: dict[str, Any]) -> None:
        """Called after validation at the end of every epoch."""

    def on_checkpoint(self, state: Any, path: str) -> None:
        """Called after a complete checkpoint was written."""

    def on_train_end(self, state: Any, logs: dict[str, Any]) -> None:
        """Called once when training stops (done, early-stopped)."""


class ConsoleProgress(Callback):
    """A rich progress bar with loss, metric and rows/s on a terminal; one line per epoch otherwise."""

    def __init__(self, metric: str | None = None) -> None:
        self.metric = metric
        self._progress: Any = None
        self._task: Any = None
        self._t0 = time.perf_counter()

    def on_train_start(self, state: Any, logs: dict[str, Any]) -> None:
        self._t0 = time.perf_counter()
        self._epochs = logs.get("epochs")
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]} {task.fields[metric]} {task.fields[rate]} rows/s"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.start()
            total = logs["steps_per_epoch"] * logs["epochs"]
            self._task = self._progress.add_task(
                "train",
                total=total,
                completed=state.step,
                epoch=state.epoch + 1,
                loss="-",
                metric="",
                rate="-",
            )

    def on_step_end(self, state: Any, logs: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                advance=1,
                epoch=state.epoch + 1,
                loss=f"{logs['loss']:.4f}",
                rate=f"{logs.get('rows_per_s', 0):.0f}",
            )

    def on_epoch_end(self, state: Any, logs: dict[str, Any]) -> None:
        metric = self.metric if self.metric in logs else None
        text = f"{metric} {logs[metric]:.4f}" if metric else ""
        if self._progress is not None:
            self._progress.update(self._task, metric=text)
        else:
            # One short line an operator can read in a log: the losses, the watched metric, the speed.
            shown = ["train_loss", "val_loss", *([metric] if metric and metric != "val_loss" else [])]
            figures = "  ".join(f"{k} {logs[k]:.4f}" for k in shown if isinstance(logs.get(k), float))
            epochs = getattr(self, "_epochs", None)
            where = f"{int(logs['epoch'])}/{epochs}" if epochs else f"{int(logs['epoch'])}"
            rate = logs.get("rows_per_s")
            speed = f"  {rate:,.0f} rows/s" if isinstance(rate, float) else ""
            print(f"epoch {where}  {figures}{speed}", file=sys.stderr, flush=True)

    def on_train_end(self, state: Any, logs: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
