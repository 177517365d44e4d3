"""Plain-data answers for the dashboard's pages (no Streamlit, no TensorFlow).

The pages ask questions such as "which runs stand for each model?", "which test images should
the gallery show?" or "how long would this transfer config extract features for?"; the answers
are built here from `cifar.runs` / `cifar.evaluate` so they can be tested without a browser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cifar.config import REFERENCE_FIGURES, field_table
from cifar.jobs import job_history
from cifar.runs import Run

MODELS = ("baseline", "transfer")
MODEL_TITLES = {"baseline": "Baseline CNN", "transfer": "InceptionV3 transfer"}
REFERENCE_RUN_IDS = {"baseline": "baseline-reference", "transfer": "transfer-reference"}
BEST_RUN_IDS = {"baseline": "baseline-best", "transfer": "transfer-best"}


# ----------------------------------------------------------------------------- choosing runs


def test_accuracy(run: Run) -> float:
    value = run.metrics.get("test_accuracy")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else -1.0


def best_run(runs: Iterable[Run], model: str) -> Run | None:
    candidates = [run for run in runs if run.model == model]
    return max(candidates, key=test_accuracy, default=None)


def headline_runs(runs: list[Run]) -> dict[str, Run | None]:
    """Per model: the reference run when present, else the run with the best test accuracy."""
    by_id = {run.run_id: run for run in runs}
    return {model: by_id.get(REFERENCE_RUN_IDS[model]) or best_run(runs, model) for model in MODELS}


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
    accuracy = test_accuracy(run)
    shown = f"{accuracy:.1%} test" if accuracy >= 0 else "no test accuracy"
    return f"{run.run_id} ({run.model}, {shown})"


def headline_table(runs: list[Run]) -> pd.DataFrame:
    """Per model: the headline run's accuracies beside the write-up's."""
    rows = []
    for model, run in headline_runs(runs).items():
        reference = REFERENCE_FIGURES[model]
        rows.append(
            {
                "model": model,
                "run": run.run_id if run else None,
                "train_accuracy": run.metrics.get("train_accuracy") if run else None,
                "test_accuracy": run.metrics.get("test_accuracy") if run else None,
                "write_up_train_accuracy": reference["train_accuracy"],
                "write_up_test_accuracy": reference["test_accuracy"],
            }
        )
    return pd.DataFrame(rows)


def next_steps(runs: list[Run], data_cached: bool, weights_cached: bool) -> list[tuple[str, str]]:
    """(what, command) pairs for what the user can do next."""
    steps = []
    if not (data_cached and weights_cached):
        steps.append(("Download and verify CIFAR-10 and the InceptionV3 weights", "python -m cifar fetch"))
    models = {run.model for run in runs}
    if "baseline" not in models:
        steps.append(("Train the baseline CNN", "python -m cifar train baseline --run-id baseline-reference"))
    if "transfer" not in models:
        steps.append(("Cache the frozen InceptionV3 features (long on a CPU)", "python -m cifar extract"))
        steps.append(
            ("Train the transfer model's head", "python -m cifar train transfer --run-id transfer-reference")
        )
    steps.append(("List every run with its hyperparameters", "python -m cifar runs"))
    steps.append(("Evaluate a run per class", "python -m cifar evaluate <run-id>"))
    steps.append(("Classify a photo from the command line", "python -m cifar predict <run-id> photo.jpg"))
    return steps


# ----------------------------------------------------------------------------- comparison


def accuracy_table(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": run.run_id,
                "model": run.model,
                "train_accuracy": run.metrics.get("train_accuracy"),
                "val_accuracy": run.metrics.get("val_accuracy"),
                "test_accuracy": run.metrics.get("test_accuracy"),
            }
            for run in runs
        ],
        columns=["run", "model", "train_accuracy", "val_accuracy", "test_accuracy"],
    )


RESULT_COLUMNS = ("train_accuracy", "val_accuracy", "test_accuracy", "seconds", "epochs_run")


def hyperparameter_columns(table: pd.DataFrame) -> list[str]:
    """Columns of `runs_table` that are hyperparameters (not ids or results)."""
    skip = {"run", "model", "device", *RESULT_COLUMNS}
    return [column for column in table.columns if column not in skip]


# ----------------------------------------------------------------------------- gallery


@dataclass(frozen=True)
class GalleryFilter:
    true_classes: tuple[str, ...] = ()  # empty: every class
    predicted_classes: tuple[str, ...] = ()  # by the chosen model (any model if none chosen)
    model: str | None = None  # a run id: only its mistakes; None: any run's mistakes
    only_one_wrong: bool = False  # exactly one of the runs is wrong
    sort: str = "loss"  # "loss" (largest first) or "index"


def gallery_table(runs: list[Run], n_images: int | None = None) -> pd.DataFrame:
    """One row per test image: true label and each run's prediction, confidence, loss, correct.

    Columns are `index`, `true`, then `<field>:<run id>` for every run; `n_images` limits the
    rows to the images that exist (runs trained with `--limit` predict the first N only).
    """
    from cifar.evaluate import per_image  # here: scikit-learn takes ~1 s to import; Overview needs none

    if not runs:
        return pd.DataFrame(columns=["index", "true"])
    labels = runs[0].test_labels
    n = min(len(run.test_labels) for run in runs)
    if n_images is not None:
        n = min(n, n_images)
    for run in runs[1:]:
        if not np.array_equal(run.test_labels[:n], labels[:n]):
            raise ValueError(f"{run.run_id} and {runs[0].run_id} were tested on different images")
    table = pd.DataFrame({"index": np.arange(n), "true": np.asarray(runs[0].class_names)[labels[:n]]})
    for run in runs:
        frame = per_image(run.test_predictions[:n], run.test_labels[:n], run.class_names)
        for column in ("predicted", "confidence", "loss", "correct"):
            table[f"{column}:{run.run_id}"] = frame[column].to_numpy()
    return table


def filter_gallery(table: pd.DataFrame, run_ids: list[str], spec: GalleryFilter) -> pd.DataFrame:
    """The misclassified images that match `spec`, in the order it asks for."""
    if table.empty or not run_ids:
        return table.iloc[0:0]
    wrong = ~table[[f"correct:{rid}" for rid in run_ids]].to_numpy(bool)
    keep = ~table[f"correct:{spec.model}"].to_numpy(bool) if spec.model else wrong.any(axis=1)
    if spec.only_one_wrong:
        keep &= wrong.sum(axis=1) == 1
    if spec.true_classes:
        keep &= table["true"].isin(spec.true_classes).to_numpy()
    if spec.predicted_classes:
        judged = [spec.model] if spec.model else run_ids
        predicted = np.column_stack(
            [table[f"predicted:{rid}"].isin(spec.predicted_classes).to_numpy() for rid in judged]
        )
        keep &= predicted.any(axis=1)
    result = table[keep]
    if spec.sort == "loss":
        losses = result[[f"loss:{rid}" for rid in ([spec.model] if spec.model else run_ids)]]
        order = np.argsort(-losses.max(axis=1).to_numpy(), kind="stable")
        result = result.iloc[order]
    return result


def upscale(image: np.ndarray, side: int = 96) -> np.ndarray:
    """Nearest-neighbour upscaling of a small image (every pixel becomes a block)."""
    factor = max(1, side // image.shape[0])
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


# ----------------------------------------------------------------------------- classify


def top_k_frame(predictions: dict[str, list[tuple[str, float]]]) -> pd.DataFrame:
    """Long table (model, class, probability, rank) from each model's top-k list."""
    rows = [
        {"model": name, "class": label, "probability": float(prob), "rank": rank + 1}
        for name, pairs in predictions.items()
        for rank, (label, prob) in enumerate(pairs)
    ]
    return pd.DataFrame(rows, columns=["model", "class", "probability", "rank"])


# ----------------------------------------------------------------------------- training


def form_fields(model: str) -> list[dict[str, Any]]:
    """`field_table` rows (inputs first, switches last), with a step for float fields."""
    rows = []
    for row in field_table(model):
        row = dict(row)
        if row["type"] == "float":
            default = float(row["default"])
            row["step"] = 10 ** math.floor(math.log10(default)) if default > 0 else 0.01
        rows.append(row)
    return sorted(rows, key=lambda row: row["type"] == "bool")  # switches last: the grid stays aligned


def changed_overrides(model: str, values: dict[str, Any]) -> dict[str, Any]:
    """Only the values that differ from the config's defaults (a short command line)."""
    defaults = {row["name"]: row["default"] for row in field_table(model)}
    return {k: v for k, v in values.items() if k in defaults and v != defaults[k]}


def format_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class FeaturePlan:
    """What a transfer config needs before its head trains."""

    missing: tuple[tuple[str, bool, int], ...]  # (split, flipped, images to extract)
    seconds: float

    @property
    def cached(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        if self.cached:
            return "Features are cached: retraining the head takes seconds to minutes."
        parts = [f"{n:,} {split}{' flipped' if flip else ''}" for split, flip, n in self.missing]
        return (
            f"Feature extraction first: {', '.join(parts)} images, about "
            f"{format_duration(self.seconds)} on this machine's CPU (much less on a GPU); "
            "later head retrains with the same base settings reuse the cache."
        )


def feature_plan(config, data, weights) -> FeaturePlan:
    from cifar.features import estimate_seconds, missing_features

    missing = tuple(missing_features(config, data, weights))
    seconds = sum(estimate_seconds(config, n) for _, _, n in missing)
    return FeaturePlan(missing, seconds)


def partial_history(run_id: str) -> pd.DataFrame | None:
    """The per-epoch history a running job has written so far (None before the first epoch)."""
    frame = job_history(run_id)
    return frame if frame is not None and not frame.empty else None


def home_relative(path: Path) -> str:
    """`path` with the user's home folder written as `~` (screenshots need not show it)."""
    try:
        return str(Path("~") / Path(path).relative_to(Path.home()))
    except ValueError:
        return str(path)
