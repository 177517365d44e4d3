"""Run folders: the contract between training (CLI, jobs) and the dashboard.

A run is written into `artifacts/runs/.<id>.partial/` and renamed to `artifacts/runs/<id>/` only
when every file is in place, so a reader never sees half a run; a killed writer leaves only the
partial folder, which the jobs view reports as failed.

Every file a run may hold, what it holds and who writes it, is declared once in
`cifar.store.run_folder.FILES` (docs/run-folders.md shows the same table).

`load_run` reads every file through `cifar.store.run_files`, which checks it (schema, shapes, values):
a folder that does not pass is a RunError naming the run and the file, and `list_runs` skips it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cifar import atomic, stats
from cifar.config import CLASS_NAMES, REFERENCE_FIGURES, artifacts_dir
from cifar.store import run_files, run_folder
from cifar.store.run_files import MODELS

FAMILIES = ("baseline", "transfer")  # the trained families (an ensemble combines their runs)

RUN_ID_PATTERN = re.compile(run_files.RUN_ID)
PARTIAL_SUFFIX = ".partial"


class RunError(ValueError):
    """A run id is invalid, missing, or its folder is unreadable."""


def runs_root() -> Path:
    return artifacts_dir() / "runs"


def check_run_id(run_id: str) -> str:
    """Run ids are plain folder names: no separators, no `..`, nothing that escapes artifacts/."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
        raise RunError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' or '-' (at most 100)")
    return run_id


def run_path(run_id: str) -> Path:
    return runs_root() / check_run_id(run_id)


def partial_path(run_id: str) -> Path:
    return runs_root() / f".{check_run_id(run_id)}{PARTIAL_SUFFIX}"


def command_line() -> str:
    """How this process was started, without machine-specific paths (config.json's "command")."""
    if sys.argv and sys.argv[0].endswith(("cifar/__main__.py", "cifar")):
        return " ".join(["python -m cifar", *sys.argv[1:]])
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""


def new_run_id(model: str) -> str:
    return f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


# ----------------------------------------------------------------------------- writing


class RunWriter:
    """Builds a run in its partial folder; `publish()` renames it into place in one step."""

    def __init__(self, run_id: str, overwrite: bool = False):
        self.run_id = check_run_id(run_id)
        self.final = run_path(run_id)
        self.path = partial_path(run_id)
        if self.final.exists() and not overwrite:
            raise RunError(f"run {run_id!r} exists already; choose another --run-id")
        self.overwrite = overwrite

    def open(self, pid: int | None = None) -> RunWriter:
        if self.path.exists():
            shutil.rmtree(self.path)  # leftovers of a killed attempt
        self.path.mkdir(parents=True)
        self.status("running", pid=pid or os.getpid(), started=time.time())
        return self

    def status(self, state: str, **fields: Any) -> None:
        current = read_status(self.path)
        current.update(fields, state=state, updated=time.time())
        atomic.write_json(self.path / run_folder.STATUS, current)

    def fail(self, error: BaseException) -> None:
        """Record `error` as the job's end, if the disk still takes a status (a full one may not:
        the error itself is what the caller raises)."""
        with contextlib.suppress(OSError):
            self.status("failed", message=f"{type(error).__name__}: {error}")

    def write_json(self, name: str, data: Any) -> None:
        atomic.write_json(self.path / name, data)

    def write_npy(self, name: str, array: np.ndarray) -> None:
        atomic.write_npy(self.path / name, array)

    def write_history(self, history: pd.DataFrame) -> None:
        with atomic.atomic_write(self.path / run_folder.HISTORY) as tmp:
            history.to_csv(tmp, index_label="epoch")

    def discard(self) -> Path:
        """Drop the partial folder (a non-chief worker's copy of a distributed run)."""
        shutil.rmtree(self.path, ignore_errors=True)
        return self.path

    def publish(self) -> Path:
        missing = [name for name in run_folder.REQUIRED if not (self.path / name).exists()]
        if missing:
            raise RunError(f"run {self.run_id} cannot be published: missing {missing}")
        self.status("finished", finished=time.time())
        if self.overwrite:
            atomic.replace(self.path, self.final)  # the old run stays until the new one is in place
        else:
            os.replace(self.path, self.final)
        return self.final


def read_status(folder: Path) -> dict[str, Any]:
    """A partial folder's status.json; {} if missing or unreadable (`run_files.StatusFile`)."""
    return run_files.read_record(folder / run_folder.STATUS, run_files.StatusFile)


# ----------------------------------------------------------------------------- reading


@dataclass
class Run:
    """A complete run folder; `load_run` reads and checks it (`cifar.store.run_files`)."""

    run_id: str
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def model(self) -> str:
        return self.config.get("config", {}).get("model", self.metrics.get("model", "?"))

    @property
    def backbone_source(self) -> str:
        """Which InceptionV3 weights the run was trained on (as recorded), else as configured."""
        return (self.config.get("assets") or {}).get("backbone_weights") or self.hyperparameters.get(
            "weights", "auto"
        )

    @property
    def has_weights(self) -> bool:
        """Whether the folder holds the trained weights the Predictor needs (and a config that
        today's model builders still understand)."""
        name = run_folder.ENSEMBLE if self.model == "ensemble" else run_folder.WEIGHTS.get(self.model)
        return name is not None and not self.config_problem and (self.path / name).is_file()

    @property
    def config_problem(self) -> str:
        """Why today's code cannot rebuild this run's model from its config ("" if it can)."""
        return self.config.get("config_problem", "")

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.config.get("config") or {}

    @property
    def class_names(self) -> list[str]:
        return list(self.config.get("class_names") or CLASS_NAMES)

    @cached_property
    def history(self) -> pd.DataFrame:
        """Per epoch, as numbers; empty if history.csv is unreadable (a run is still worth showing)."""
        return run_files.read_history(self.path / run_folder.HISTORY)

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            return run_files.read_predictions(
                self.path, (run_folder.TEST_PREDICTIONS, run_folder.TEST_LABELS), len(self.class_names)
            )
        except run_files.FileError as error:
            raise RunError(f"run {self.run_id!r}: {error}") from None

    @property
    def test_predictions(self) -> np.ndarray:
        """(N, 10) float32 probabilities, finite."""
        return self._arrays[0]

    @property
    def test_labels(self) -> np.ndarray:
        """(N,) int64 labels in 0..9."""
        return self._arrays[1]

    @cached_property
    def calibration(self) -> dict[str, Any]:
        """calibration.json (`cifar.calibration`), {} for a run without one."""
        path = self.path / run_folder.CALIBRATION
        if not path.exists():
            return {}
        try:
            return run_files.read_json(path, run_files.CalibrationFile)
        except run_files.FileError as error:
            raise RunError(f"run {self.run_id!r}: {error}") from None

    @property
    def temperature(self) -> float:
        """The run's fitted temperature; 1 (raw probabilities) for a run without calibration."""
        return float(self.calibration.get("temperature", 1.0))

    @cached_property
    def calibrated_test_predictions(self) -> np.ndarray:
        """softmax(log(p) / T) of the saved test predictions: what the pages show."""
        from cifar.calibration import temperature_scaled

        return temperature_scaled(self.test_predictions, self.temperature)

    @cached_property
    def test_accuracy_estimate(self) -> stats.Estimate:
        """Test accuracy recounted from the saved predictions, with its 95 % Wilson interval."""
        return stats.accuracy(self.test_labels, self.test_predictions)

    @property
    def test_ece_estimate(self) -> stats.Estimate | None:
        """ECE of the calibrated test predictions with its interval, from calibration.json; None for
        a run without one (or calibrated before intervals were recorded: `calibrate --overwrite`)."""
        test = self.calibration.get("test") or {}
        if test.get("ece_after_interval") is None:
            return None
        low, high = test["ece_after_interval"]
        return stats.Estimate(test["ece_after"], low, high, "BCa bootstrap")

    @cached_property
    def ensemble(self) -> dict[str, Any]:
        """An ensemble's ensemble.json (`cifar.inference.ensemble`), read once: everything asked of this run
        sees the same members and weights, even if the ensemble is made again meanwhile."""
        try:
            return run_files.read_json(self.path / run_folder.ENSEMBLE, run_files.EnsembleFile)
        except run_files.FileError as error:
            raise RunError(f"run {self.run_id!r}: {error}") from None

    @cached_property
    def validation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(val_predictions, val_labels), raw, validation split order; None if the run has none."""
        names = (run_folder.VAL_PREDICTIONS, run_folder.VAL_LABELS)
        if not all((self.path / name).exists() for name in names):
            return None
        try:
            return run_files.read_predictions(self.path, names, len(self.class_names))
        except run_files.FileError as error:
            raise RunError(f"run {self.run_id!r}: {error}") from None


def load_run(run_id: str) -> Run:
    """A complete run by id, every file read and checked; RunError (naming the file) if not."""
    path = run_path(run_id)
    if not path.is_dir():
        raise RunError(f"no run {run_id!r} in {runs_root()}")
    missing = [name for name in run_folder.REQUIRED if not (path / name).is_file()]
    if missing:
        raise RunError(f"run {run_id!r} is incomplete: missing {missing}")
    try:
        config = run_files.read_run_config(path / run_folder.CONFIG)
        metrics = run_files.read_json(path / run_folder.METRICS, run_files.MetricsFile)
    except run_files.FileError as error:
        raise RunError(f"run {run_id!r}: {error}") from None
    run = Run(run_id, path, config, metrics)
    run._arrays, run.calibration  # noqa: B018 (checked now: no page meets a bad file later)
    return run


def list_runs(with_problems: list[str] | None = None) -> list[Run]:
    """Every complete run, newest first; unreadable folders are reported in `with_problems`."""
    root = runs_root()
    runs = []
    if not root.is_dir():
        return runs
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not path.is_dir():
            continue
        try:
            runs.append(load_run(path.name))
        except RunError as error:
            if with_problems is not None:
                with_problems.append(str(error))
    runs.sort(key=_finished_time, reverse=True)
    return runs


def _finished_time(run: Run) -> float:
    return float(run.metrics.get("finished", 0))  # a finite number (`run_files.MetricsFile`)


# ----------------------------------------------------------------------------- choosing runs

REFERENCE_RUN_IDS = {"baseline": "baseline-reference", "transfer": "transfer-reference"}
BEST_RUN_IDS = {"baseline": "baseline-best", "transfer": "transfer-best", "ensemble": "ensemble-best"}


def test_accuracy(run: Run) -> float:
    """The run's test accuracy; -1 when metrics.json has none (sorts it last)."""
    value = run.metrics.get("test_accuracy")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else -1.0


def best_run(runs: Iterable[Run], model: str) -> Run | None:
    candidates = [run for run in runs if run.model == model]
    return max(candidates, key=test_accuracy, default=None)


def headline_runs(runs: list[Run]) -> dict[str, Run | None]:
    """Per model: the reference run when present, else the run with the best test accuracy."""
    by_id = {run.run_id: run for run in runs}
    return {model: by_id.get(REFERENCE_RUN_IDS[model]) or best_run(runs, model) for model in FAMILIES}


def headline_table(runs: list[Run]) -> pd.DataFrame:
    """What Overview leads with, a row per family (and the ensemble, once there is one): its most
    accurate run, the write-up's recipe rerun (its reference run) and the write-up's figures."""
    by_id = {run.run_id: run for run in runs}
    models = [*FAMILIES, *(["ensemble"] if best_run(runs, "ensemble") else [])]
    rows = []
    for model in models:
        best, reference = best_run(runs, model), by_id.get(REFERENCE_RUN_IDS.get(model, ""))
        write_up = REFERENCE_FIGURES.get(model, {})
        rows.append(
            {
                "model": model,
                "run": best.run_id if best else None,
                "train_accuracy": best.metrics.get("train_accuracy") if best else None,
                "test_accuracy": best.metrics.get("test_accuracy") if best else None,
                "reference_run": reference.run_id if reference else None,
                "reference_test_accuracy": reference.metrics.get("test_accuracy") if reference else None,
                "write_up_train_accuracy": write_up.get("train_accuracy"),
                "write_up_test_accuracy": write_up.get("test_accuracy"),
            }
        )
    return pd.DataFrame(rows)


def best_runs(runs: list[Run]) -> dict[str, Run | None]:
    """Per model: the most accurate run that can classify (its weights are in the folder), else
    the most accurate run (which then says why it cannot): what a user wants to try a photo on."""
    return {
        model: best_run([run for run in runs if run.has_weights], model) or best_run(runs, model)
        for model in MODELS
    }


def default_selection(runs: list[Run], limit: int = 6) -> list[str]:
    """Runs a page starts with: the headline and `-best` runs and the newest run (`runs` is
    newest first, so a run a job just finished is on show), else the newest few."""
    by_id = {run.run_id: run for run in runs}
    chosen = [run.run_id for run in headline_runs(runs).values() if run is not None]
    chosen += [rid for rid in BEST_RUN_IDS.values() if rid in by_id and rid not in chosen]
    if runs and runs[0].run_id not in chosen:
        chosen.append(runs[0].run_id)
    if len(chosen) < 2:
        chosen += [run.run_id for run in runs if run.run_id not in chosen]
    return chosen[:limit]


def describe_run(run: Run) -> str:
    """`<id> (<model>, <test accuracy> test)`: how a run picker lists it."""
    accuracy = test_accuracy(run)
    shown = f"{accuracy:.1%} test" if accuracy >= 0 else "no test accuracy"
    return f"{run.run_id} ({run.model}, {shown})"
