"""TensorBoard for every run, committed ones included: `python -m cifar tensorboard`.

Training logs its curves through Keras' TensorBoard callback into the run's `tensorboard/`
folder, which git ignores (event files are binary and grow with every epoch). A fresh clone's
runs have only `history.csv`, so their curves are written from it, under the callback's own
names (`train/` and `validation/`, `epoch_accuracy`, `epoch_loss`), and every run gets the
HParams plugin's summary (its hyperparameters, and its train / validation / test accuracy and
test ECE as metrics) in `tensorboard/`, so TensorBoard's HParams table compares the runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cifar import atomic
from cifar.store import run_folder
from cifar.store.runs import Run

CURVES = {"train": ("accuracy", "loss"), "validation": ("val_accuracy", "val_loss")}
HPARAMS_FOLDER = "hparams"  # the session's summary, rewritten each time (results change: calibration)


def write_logs(run: Run) -> list[str]:
    """Write what `run`'s TensorBoard folder lacks; returns what was written."""
    logdir = run.path / run_folder.TENSORBOARD
    written = []
    if not any((logdir / split).is_dir() for split in CURVES) and not run.history.empty:
        _write_curves(run, logdir)
        written.append("curves from history.csv")
    _write_hparams(run, logdir)
    written.append("hparams")
    return written


def _write_curves(run: Run, logdir: Path) -> None:
    """Each split's curves written in a temporary folder, then renamed into place: a killed
    command leaves no partial curves that would count as written."""
    for split, (accuracy, loss) in CURVES.items():
        columns = [c for c in (accuracy, loss) if c in run.history]
        if not columns:
            continue
        scalars = [
            (f"epoch_{column.removeprefix('val_')}", float(row[column]), int(epoch))
            for epoch, row in run.history.iterrows()
            for column in columns
            if row[column] == row[column]  # not NaN
        ]
        _write_folder(logdir / split, scalars)


def _write_folder(folder: Path, scalars: list[tuple[str, float, int]], hparams: dict | None = None) -> None:
    """An event file of `scalars` (tag, value, step) [and an HParams summary] as `folder`."""
    import tensorflow as tf

    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    writer = tf.summary.create_file_writer(str(tmp))
    try:
        with writer.as_default():
            if hparams is not None:
                from tensorboard.plugins.hparams import api as hp

                hp.hparams(hparams, trial_id=folder.parent.parent.name)
            for tag, value, step in scalars:
                tf.summary.scalar(tag, value, step=step)
        writer.close()
        atomic.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_hparams(run: Run, logdir: Path) -> None:
    scalars = [(name, value, 0) for name, value in run_metrics(run).items()]
    _write_folder(logdir / HPARAMS_FOLDER, scalars, hyperparameters(run))


def hyperparameters(run: Run) -> dict[str, str | bool | int | float]:
    """The run's hyperparameters as HParams takes them (no None, no lists), with its model."""
    values = {"model": run.model}
    for name, value in run.hyperparameters.items():
        if isinstance(value, str | bool | int | float):
            values[name] = value
    return values


def run_metrics(run: Run) -> dict[str, float]:
    metrics = {name: run.metrics.get(name) for name in ("train_accuracy", "val_accuracy", "test_accuracy")}
    metrics["test_ece"] = (run.calibration.get("test") or {}).get("ece_after")
    return {name: float(value) for name, value in metrics.items() if value is not None}
