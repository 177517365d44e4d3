"""The run folder, declared once: every file a run may hold, what it holds, who writes it, its
schema, and whether a run is complete without it.

Readers and writers take the file names from here; `cifar.store.runs` publishes a run only with every
required file, the dashboard re-reads a run when any declared file changes (`signature`), and
tests check that `cifar.store.runs`' docstring and docs/run-folders.md list exactly these files. A new
per-run result is one more `_declare` line here, its writer and its reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cifar.store.run_files import (
    CalibrationFile,
    EnsembleFile,
    MetricsFile,
    ProjectionFile,
    RobustnessFile,
    RunConfigFile,
    StatusFile,
)


@dataclass(frozen=True)
class RunFile:
    name: str
    holds: str
    written_by: str  # the command (or module) that writes it
    schema: type | None = None  # a JSON file's `cifar.store.run_files` schema
    required: bool = False  # a run is published only with it


FILES: list[RunFile] = []


def _declare(
    name: str, holds: str, written_by: str, schema: type | None = None, required: bool = False
) -> str:
    FILES.append(RunFile(name, holds, written_by, schema, required))
    return name


CONFIG = _declare(
    "config.json",
    "full config, class names, asset checksums, versions, device",
    "train, ensemble",
    RunConfigFile,
    required=True,
)
HISTORY = _declare(
    "history.csv",
    "per epoch: loss, accuracy, val_loss, val_accuracy, seconds",
    "train, ensemble",
    required=True,
)
STATUS = _declare("status.json", "a job's live progress (its partial folder)", "train", StatusFile)
METRICS = _declare(
    "metrics.json",
    "train / validation / test accuracy, time, device, cost",
    "train, ensemble, cost",
    MetricsFile,
    required=True,
)
TEST_PREDICTIONS = _declare(
    "test_predictions.npy",
    "(10000, 10) float32 raw probabilities, test set order",
    "train, ensemble",
    required=True,
)
TEST_LABELS = _declare(
    "test_labels.npy",
    "(10000,) uint8 true labels (so pages need no dataset)",
    "train, ensemble",
    required=True,
)
VAL_PREDICTIONS = _declare(
    "val_predictions.npy", "(5000, 10) raw probabilities of the validation split", "train, calibrate"
)
VAL_LABELS = _declare("val_labels.npy", "(5000,) uint8 the validation split's labels", "train, calibrate")
CALIBRATION = _declare(
    "calibration.json",
    "the fitted temperature, ECE / NLL before and after",
    "train, calibrate",
    CalibrationFile,
)
BASELINE_WEIGHTS = _declare("model.weights.h5", "a baseline's weights", "train")
TRANSFER_WEIGHTS = _declare(
    "head.weights.h5", "a transfer run's head (its frozen base: the asset cache)", "train"
)
ENSEMBLE = _declare("ensemble.json", "an ensemble's members and their weights", "ensemble", EnsembleFile)
ROBUSTNESS = _declare(
    "robustness.json", "the test subset, clean and corrupted accuracy per set", "robustness", RobustnessFile
)
ROBUSTNESS_PREDICTIONS = _declare(
    "robustness_predictions.npy", "raw probabilities per corruption set", "robustness"
)
ROBUSTNESS_CLEAN = _declare("robustness_clean.npy", "raw probabilities of the clean subset", "robustness")
PROJECTION = _declare("projection.npy", "the test set's 2-D map", "project")
PROJECTION_RECORD = _declare("projection.json", "how the map was made", "project", ProjectionFile)
TRAIN_LOG = _declare("train.log", "the training's own log", "train")
TENSORBOARD = _declare("tensorboard", "curves and HParams (not in git)", "train, tensorboard")

REQUIRED = tuple(file.name for file in FILES if file.required)
NOT_RESULTS = (STATUS, TRAIN_LOG, TENSORBOARD)  # a page shows none of them: no cache waits on them
WEIGHTS = {"baseline": BASELINE_WEIGHTS, "transfer": TRANSFER_WEIGHTS}  # a trained family's weights file


def signature(folder: Path) -> tuple[int, ...]:
    """The modification times of the declared files in `folder` (0 where absent): it changes
    whenever a writer replaces one of them, so a cache keyed on it never serves an old result."""
    times = []
    for file in FILES:
        if file.name in NOT_RESULTS:
            continue
        try:
            times.append((folder / file.name).stat().st_mtime_ns)
        except OSError:
            times.append(0)
    return tuple(times)
