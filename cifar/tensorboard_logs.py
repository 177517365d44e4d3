"""TensorBoard for every run, committed ones included: `python -m cifar tensorboard`.

Training logs its curves through Keras' TensorBoard callback into the run's `tensorboard/`
folder, which git ignores (event files are binary and grow with every epoch). A fresh clone's
runs have only `history.csv`, so their curves are written from it, under the callback's own
names (`train/` and `validation/`, `epoch_accuracy`, `epoch_loss`), and every run gets the
HParams plugin's summary (its hyperparameters, and its train / validation / test accuracy and
test ECE as metrics) in `tensorboard/`, so TensorBoard's HParams table compares the runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cifar.runs import Run

CURVES = {"train": ("accuracy", "loss"), "validation": ("val_accuracy", "val_loss")}
HPARAMS_FOLDER = "hparams"  # the session's summary, rewritten each time (results change: calibration)


def write_logs(run: Run) -> list[str]:
    """Write what `run`'s TensorBoard folder lacks; returns what was written."""
    logdir = run.path / "tensorboard"
    written = []
    if not any((logdir / split).is_dir() for split in CURVES) and not run.history.empty:
        _write_curves(run, logdir)
        written.append("curves from history.csv")
    _write_hparams(run, logdir)
    written.append("hparams")
    return written


def _write_curves(run: Run, logdir: Path) -> None:
    import tensorflow as tf

    for split, (accuracy, loss) in CURVES.items():
        columns = [c for c in (accuracy, loss) if c in run.history]
        if not columns:
            continue
        with tf.summary.create_file_writer(str(logdir / split)).as_default():
            for epoch, row in run.history.iterrows():
                for column in columns:
                    if row[column] == row[column]:  # not NaN
                        tag = "epoch_" + column.removeprefix("val_")
                        tf.summary.scalar(tag, float(row[column]), step=int(epoch))


def _write_hparams(run: Run, logdir: Path) -> None:
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    folder = logdir / HPARAMS_FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    with tf.summary.create_file_writer(str(folder)).as_default():
        hp.hparams(hyperparameters(run), trial_id=run.run_id)
        for name, value in run_metrics(run).items():
            tf.summary.scalar(name, value, step=0)


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
