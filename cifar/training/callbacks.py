"""Keras callbacks of a training run: progress into the run folder while it trains.

After every epoch `history.csv` and `status.json` are rewritten, so the Train page draws live
curves; TensorBoard logs go to the run's `tensorboard/` folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd

from cifar.store import run_folder
from cifar.store.runs import RunWriter

Progress = Callable[[dict], None]


def run_callbacks(writer: RunWriter, config, progress: Progress | None) -> list:
    """The epoch recorder, TensorBoard and (with a patience) early stopping, for `fit`."""
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        """history.csv and status.json after every epoch, so pages can draw live curves."""

        def __init__(self):
            super().__init__()
            self.rows: list[dict] = []
            self.steps = None

        def on_train_begin(self, logs=None):
            self.steps = self.params.get("steps")

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()
            self.epoch, self.reported = epoch, 0

        def on_train_batch_end(self, batch, logs=None):
            # With steps_per_execution, Keras reports every few hundred batches only, and a call's
            # last step index, which passes the epoch's end when the epoch has fewer steps: a
            # progress over 1 would make status.json unreadable (and the job lose its pid).
            steps_done = min(batch + 1, self.steps or 0)
            if self.steps and steps_done - self.reported >= max(1, self.steps // 10):
                self.reported = steps_done
                done = (self.epoch + steps_done / self.steps) / config.epochs
                writer.status("running", phase="training", progress=done, epoch=self.epoch + 1)

        def on_epoch_end(self, epoch, logs=None):
            row = {k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"}
            row["seconds"] = time.perf_counter() - self.started
            self.rows.append(row)
            writer.write_history(pd.DataFrame(self.rows))
            state = {"phase": "training", "epoch": epoch + 1, "progress": (epoch + 1) / config.epochs}
            writer.status("running", **state, message=_epoch_message(epoch + 1, config.epochs, row))
            if progress:
                progress({**state, **row})

    callbacks = [EpochRecorder(), keras.callbacks.TensorBoard(str(writer.path / run_folder.TENSORBOARD))]
    if config.early_stopping_patience and config.validation_size:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=config.early_stopping_patience, restore_best_weights=True)
        )
    return callbacks


def _epoch_message(epoch: int, epochs: int, row: dict) -> str:
    shown = [
        f"{key} {row[key]:.4f}" for key in ("loss", "accuracy", "val_loss", "val_accuracy") if key in row
    ]
    return ", ".join([f"epoch {epoch}/{epochs}", *shown])
