"""Reading the files of a run folder and of the job slot, whatever bytes they hold.

Every file is read through here: at most a bounded number of bytes, JSON parsed and checked by a
schema (the types the code relies on), arrays checked for shape, type and values. A file that
does not pass raises `FileError` naming it; `history.csv` is never an error (an unreadable one is
an empty table), nor are status and slot records (an unreadable one is no record).
"""

from __future__ import annotations

import csv
import io
import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from cifar import tta
from cifar.config import NUM_CLASSES, TEMPERATURE_RANGE, ConfigError, load_config

MAX_JSON_BYTES = 1_000_000  # config.json of a real run: ~2 kB
MAX_HISTORY_BYTES = 10_000_000  # one short line per epoch
MAX_ARRAY_BYTES = 200_000_000  # the largest array of a run: robustness, 75 x 10,000 x 10 float32 (30 MB)
MAX_TEST_IMAGES = 10_000  # the CIFAR-10 test set
LOWEST_T, HIGHEST_T = TEMPERATURE_RANGE  # what a calibration fit may end at (`cifar.config`)
FEWEST_ROBUSTNESS_IMAGES = 10  # `python -m cifar robustness --images` takes 10 .. 10,000
RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # a run folder's name (`cifar.store.runs.check_run_id`)
MOST_VIEWS = len(tta.views(flip=True, translate=True))  # test-time views of one prediction
Model = Literal["baseline", "transfer", "ensemble"]
MODELS = get_args(Model)
JobState = Literal["starting", "running", "finished", "failed", "cancelled"]


class FileError(ValueError):
    """A file of a run folder is missing, too large, or does not hold what it should."""


# ----------------------------------------------------------------------------- schemas

Finite = Annotated[float, Field(allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
ClassName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
ClassNames = Annotated[list[ClassName], Field(min_length=NUM_CLASSES, max_length=NUM_CLASSES)]


class _File(BaseModel):
    """Strict types (no "0.5" for 0.5, no true for 1), finite numbers; other fields pass through."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class _Assets(_File):
    backbone_weights: Literal["keras", "google2015"] | None = None
    backbone_sha256: str | None = None


class _Hyperparameters(_File):
    model: Model  # the rest: `cifar.config.load_config`


class RunConfigFile(_File):
    """config.json: the hyperparameters (typed by `cifar.config.load_config`), class names."""

    config: _Hyperparameters
    class_names: ClassNames | None = None
    assets: _Assets | None = None
    run_id: str | None = None
    limit: Annotated[int, Field(ge=1)] | None = None

    @field_validator("class_names")
    @classmethod
    def _unique(cls, names):
        if names is not None and len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        return names


class MetricsFile(_File):
    """metrics.json: the results a page shows."""

    model: Model | None = None
    train_accuracy: Share | None = None
    val_accuracy: Share | None = None
    test_accuracy: Share | None = None
    seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    epochs_run: Annotated[int, Field(ge=0)] | None = None
    device: str | None = None
    finished: Finite = 0.0
    # What the run costs (`cifar.analysis.cost`); all or none of the measured fields are there.
    parameters: Annotated[int, Field(ge=0)] | None = None
    trainable_parameters: Annotated[int, Field(ge=0)] | None = None
    flops_per_image: Annotated[int, Field(ge=0)] | None = None
    views: Annotated[int, Field(ge=1, le=MOST_VIEWS)] | None = None
    model_bytes: Annotated[int, Field(ge=0)] | None = None
    latency_ms: dict[Literal["1", "256"], Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = None
    latency_device: str | None = None
    total_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    total_seconds_note: str | None = None

    @model_validator(mode="after")
    def _cost_complete(self):
        measured = [self.flops_per_image, self.views, self.latency_ms, self.model_bytes]
        if any(value is not None for value in measured) and any(value is None for value in measured):
            raise ValueError("flops_per_image, views, latency_ms and model_bytes come together")
        return self


class _CalibrationMeasures(_File):
    ece_before: Share
    ece_after: Share
    nll_before: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    nll_after: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    ece_before_interval: tuple[Share, Share] | None = None  # 95 %, the test split's (`cifar.calibration`)
    ece_after_interval: tuple[Share, Share] | None = None


class CalibrationFile(_File):
    """calibration.json (`cifar.calibration`): the run's temperature and what it changes."""

    temperature: Annotated[float, Field(ge=LOWEST_T, le=HIGHEST_T, allow_inf_nan=False)]
    converged: bool
    message: str | None = None
    validation: _CalibrationMeasures | None = None
    test: _CalibrationMeasures | None = None


class _RobustnessSet(_File):
    corruption: str
    severity: Annotated[int, Field(ge=1, le=5)]
    accuracy: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class RobustnessFile(_File):
    """robustness.json (`cifar.analysis.robustness`): accuracy per corruption set on a test subset."""

    images: Annotated[int, Field(ge=1)]
    seed: int
    test_time_flip: bool
    clean_accuracy: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    mean_corruption_accuracy: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    sets: Annotated[list[_RobustnessSet], Field(min_length=1)]
    test_indices: Annotated[
        list[Annotated[int, Field(ge=0, lt=MAX_TEST_IMAGES)]],
        Field(min_length=FEWEST_ROBUSTNESS_IMAGES, max_length=MAX_TEST_IMAGES),
    ]  # within the run's own test set: `check_test_indices`
    predictions_sha256: str | None = None
    finished: float | None = None
    seconds: float | None = None

    @model_validator(mode="after")
    def _one_subset(self):
        if any(b <= a for a, b in zip(self.test_indices, self.test_indices[1:], strict=False)):
            raise ValueError("test_indices must rise (each test image once, sorted)")
        if self.images != len(self.test_indices):
            raise ValueError(f"images is {self.images} but test_indices holds {len(self.test_indices)}")
        return self


class ProjectionFile(_File):
    """projection.json (`cifar.analysis.feature_space`): how a run's test-set map was made."""

    method: str
    space: str
    dimensions: Annotated[int, Field(ge=1)]
    images: Annotated[int, Field(ge=1)]
    seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class EnsembleFile(_File):
    """ensemble.json (`cifar.inference.ensemble`): members and their pooling weights."""

    members: Annotated[
        list[Annotated[str, StringConstraints(pattern=RUN_ID)]], Field(min_length=2, max_length=8)
    ]  # trained runs, not ensembles (`cifar.inference.ensemble.member_runs`)
    weights: Annotated[
        list[Annotated[float, Field(ge=0, allow_inf_nan=False)]], Field(min_length=2, max_length=8)
    ]

    # Each member's metrics["finished"] when the ensemble was made: a member trained again since
    # (--overwrite) no longer matches its weight. Absent in files from before it was recorded.
    member_finished: Annotated[list[float], Field(max_length=8)] | None = None

    @model_validator(mode="after")
    def _one_weight_per_member(self):
        if len(self.weights) != len(self.members):
            raise ValueError("one weight per member")
        if len(set(self.members)) != len(self.members):
            raise ValueError("a member is named twice")
        return self


class StatusFile(_File):
    """status.json of a partial run folder: a job's progress."""

    state: JobState | None = None
    progress: Share | None = None
    message: str | None = None
    phase: str | None = None
    pid: Annotated[int, Field(gt=0)] | None = None
    started: Finite | None = None
    updated: Finite | None = None


class SlotRecord(_File):
    """artifacts/jobs/slot.json: which job holds the slot."""

    run_id: str | None = None
    pid: Annotated[int, Field(gt=0)] | None = None
    group: Annotated[int, Field(gt=0)] | None = None
    started: Finite | None = None


Schema = TypeVar("Schema", bound=_File)


# ----------------------------------------------------------------------------- reading


def read_bytes(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file (never a FIFO or device); FileError otherwise."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise FileError(f"{path.name}: not a regular file")
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise FileError(f"{path.name}: {error.strerror or error}") from None
    if len(data) > limit:
        raise FileError(f"{path.name}: larger than {limit:,} bytes")
    return data


def read_json(path: Path, schema: type[Schema]) -> dict[str, Any]:
    """The JSON object in `path`, checked by `schema`; fields absent (or null) in the file are absent."""
    try:
        checked = schema.model_validate_json(read_bytes(path, MAX_JSON_BYTES))
        return checked.model_dump(exclude_unset=True, exclude_none=True)
    except ValidationError as error:
        raise FileError(f"{path.name}: {_first_problem(error)}") from None


def read_record(path: Path, schema: type[Schema]) -> dict[str, Any]:
    """`read_json`, but {} for a missing or unreadable file (status and slot records)."""
    try:
        return read_json(path, schema)
    except FileError:
        return {}


def _first_problem(error: ValidationError) -> str:
    problem = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in problem["loc"])
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where + ': ' if where else ''}{problem['msg'][:200]}{more}"


def read_run_config(path: Path) -> dict[str, Any]:
    """config.json, its hyperparameters typed as `cifar.config` types them (only those saved)."""
    data = read_json(path, RunConfigFile)
    try:
        typed = load_config(data["config"]).model_dump()
    except ConfigError as error:
        if not error.kinds or not set(error.kinds) <= RETIRED_KINDS:
            raise FileError(f"{path.name}: config: {str(error)[:300]}") from None
        # A run from an older version (a choice, field or range since retired): its results still
        # show; only its model cannot be rebuilt (`Run.config_problem`).
        data["config_problem"] = str(error)[:300]
        typed = {k: v for k, v in data["config"].items() if isinstance(v, str | int | float | bool)}
    data["config"] = {key: typed[key] for key in data["config"] if key in typed}
    return data


# What an older version may have saved that today's config refuses; a wrong type is damage.
RETIRED_KINDS = {"literal_error", "extra_forbidden", "greater_than", "greater_than_equal", "less_than",
                 "less_than_equal"}  # fmt: skip


def read_predictions(folder: Path, names: tuple[str, str], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, n_classes) float32, labels (N,) int64) from the two files `names` in
    `folder`, as `check_predictions` wants them; FileError otherwise."""
    probs, labels = read_npy(folder / names[0]), read_npy(folder / names[1])
    if probs.size > MAX_TEST_IMAGES * n_classes or labels.size > MAX_TEST_IMAGES:
        raise FileError(f"{', '.join(names)}: more than {MAX_TEST_IMAGES:,} images")
    if probs.dtype.kind == "f":
        with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, refused below
            probs = np.array(probs, dtype=np.float32)
    labels = np.array(labels)
    try:
        check_predictions(probs, labels, n_classes)
    except ValueError as error:
        raise FileError(f"{', '.join(names)}: {error}") from None
    return probs, labels.astype(np.int64)


def check_predictions(probabilities: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
    """ValueError unless `probabilities` is (N >= 1, n_classes) finite floats and `labels` N
    integers in 0..n_classes-1."""
    probabilities, labels = np.asanyarray(probabilities), np.asanyarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[1] != n_classes or len(probabilities) == 0:
        raise ValueError(f"probabilities must be (N >= 1, {n_classes}), got shape {probabilities.shape}")
    if probabilities.dtype.kind != "f":
        raise ValueError(f"probabilities must be floats, got {probabilities.dtype}")
    if labels.shape != (len(probabilities),) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be {len(probabilities)} integers, got {labels.dtype} {labels.shape}")
    if not np.isfinite(probabilities).all():
        raise ValueError("probabilities must be finite")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")


def read_npy(path: Path, limit: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """The array in a regular file (never a FIFO or device: opening one could wait forever) of
    at most `limit` bytes; its header read, its data memory-mapped (nothing is loaded before the
    checks)."""
    try:
        info = os.stat(path)
    except OSError:
        raise FileError(f"{path.name}: missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise FileError(f"{path.name}: not a regular file")
    if info.st_size > limit:
        raise FileError(f"{path.name}: larger than {limit:,} bytes")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError, TypeError, OverflowError) as error:
        raise FileError(f"{path.name}: unreadable ({str(error)[:200]})") from None


def read_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of exactly `shape`, every value finite (robustness predictions, the feature
    map's coordinates), read through the checks every run file gets; FileError otherwise."""
    array = read_npy(path)
    if array.shape != shape or array.dtype != np.float32:
        raise FileError(f"{path.name}: expected float32 {shape}, got {array.dtype} {array.shape}")
    array = np.array(array)  # (read now, from the memory map)
    if not np.isfinite(array).all():
        raise FileError(f"{path.name}: values must be finite")
    return array


def check_test_indices(indices: list[int], n_test: int) -> None:
    """FileError unless every index names one of the run's `n_test` test images."""
    if indices and max(indices) >= n_test:
        raise FileError(f"test_indices: {max(indices)} is past the {n_test} test images")


def read_history(path: Path) -> pd.DataFrame:
    """history.csv as numbers (anything else: NaN); an empty table if missing or unreadable."""
    try:
        table = pd.read_csv(io.BytesIO(read_bytes(path, MAX_HISTORY_BYTES))).reset_index(drop=True)
        numbers = table.apply(pd.to_numeric, errors="coerce").astype(float)
    except (FileError, ValueError, TypeError, csv.Error, OverflowError):
        return pd.DataFrame()
    numbers.columns = [str(column) for column in numbers.columns]
    return numbers.replace([np.inf, -np.inf], np.nan)
