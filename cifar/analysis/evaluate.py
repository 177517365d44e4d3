"""Evaluation: inference happened once (the run's saved probabilities); these answer questions.

Every function returns plain data (numpy / pandas); plotting lives in `cifar.analysis.plots`. The gallery of
the Misclassified page is `misclassified(per_image_table(runs), ...)`, in `top_losses` order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from cifar import stats
from cifar.store.run_files import check_predictions
from cifar.store.runs import Run

EPSILON = 1e-7  # keeps log() finite for a probability of exactly 0


@dataclass(frozen=True)
class Report:
    accuracy: float
    per_class: pd.DataFrame  # index: class name; precision, recall, f1, support
    confusion: pd.DataFrame  # rows: true class, columns: predicted class, counts
    most_confused: pd.DataFrame  # true, predicted, count (off-diagonal, largest first)

    @property
    def confusion_normalized(self) -> pd.DataFrame:
        """Rows sum to 1: the share of each true class predicted as each class."""
        return self.confusion.div(self.confusion.sum(axis=1).replace(0, 1), axis=0)


def evaluate_predictions(probabilities: np.ndarray, labels: np.ndarray, class_names) -> Report:
    check_predictions(probabilities, labels, len(class_names))
    predicted = probabilities.argmax(axis=1)
    index = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=index, zero_division=0
    )
    per_class = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index(class_names, name="class"),
    )
    per_class = per_class.join(
        per_class_intervals(labels, predicted, len(class_names)).set_index(per_class.index)
    )
    counts = confusion_matrix(labels, predicted, labels=index)
    confusion = pd.DataFrame(
        counts,
        index=pd.Index(class_names, name="true"),
        columns=pd.Index(class_names, name="predicted"),
    )
    return Report(
        accuracy=float(accuracy_score(labels, predicted)),
        per_class=per_class,
        confusion=confusion,
        most_confused=most_confused(confusion),
    )


def _f1_per_class(labels: np.ndarray, predicted: np.ndarray, axis: int = -1) -> np.ndarray:
    """F1 of every class at once (class first), reduced along `axis`: many resamples at once.
    F1 = 2 TP / (images of the class + images predicted as it)."""
    labels, predicted = np.moveaxis(labels, axis, -1), np.moveaxis(predicted, axis, -1)
    n_classes = int(max(labels.max(), predicted.max())) + 1
    rows = labels.reshape(-1, labels.shape[-1])
    offsets = (np.arange(rows.shape[0]) * n_classes)[:, None]
    true, guess = (rows + offsets).ravel(), (predicted.reshape(rows.shape) + offsets).ravel()
    size = rows.shape[0] * n_classes
    right = np.bincount(true[true == guess], minlength=size)
    both = np.bincount(true, minlength=size) + np.bincount(guess, minlength=size)
    f1 = np.divide(2 * right, both, out=np.zeros(size), where=both > 0).reshape(rows.shape[0], n_classes)
    return np.moveaxis(f1.reshape(*labels.shape[:-1], n_classes), -1, 0)  # scipy wants the classes first


def per_class_intervals(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> pd.DataFrame:
    """95 % intervals per class: precision and recall (Wilson, from their counts), F1 (bootstrap
    over the test images). A class never predicted (or absent) has no precision (recall) interval."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    f1 = stats.bootstrap_each(_f1_per_class, labels, predicted) if len(labels) >= 2 else []
    rows = []
    for c in range(n_classes):
        right = int(((labels == c) & (predicted == c)).sum())
        row = {}
        for name, trials in (("precision", (predicted == c).sum()), ("recall", (labels == c).sum())):
            interval = stats.proportion(right, int(trials)) if trials else None
            row[f"{name}_low"] = interval.low if interval else None
            row[f"{name}_high"] = interval.high if interval else None
        row["f1_low"], row["f1_high"] = (f1[c].low, f1[c].high) if c < len(f1) else (None, None)
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_run(run: Run) -> Report:
    return evaluate_predictions(run.test_predictions, run.test_labels, run.class_names)


def most_confused(confusion: pd.DataFrame, min_count: int = 1) -> pd.DataFrame:
    """Off-diagonal cells of the confusion matrix, largest first (fastai's `most_confused`)."""
    pairs = confusion.stack().rename("count").reset_index()
    pairs = pairs[(pairs["true"] != pairs["predicted"]) & (pairs["count"] >= min_count)]
    return pairs.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)


def per_image(probabilities: np.ndarray, labels: np.ndarray, class_names) -> pd.DataFrame:
    """One row per test image: prediction, confidence, and cross-entropy loss."""
    check_predictions(probabilities, labels, len(class_names))
    predicted = probabilities.argmax(axis=1)
    true_probability = probabilities[np.arange(len(labels)), labels]
    names = np.asarray(class_names)
    return pd.DataFrame(
        {
            "index": np.arange(len(labels)),
            "true": names[labels],
            "predicted": names[predicted],
            "confidence": probabilities.max(axis=1),
            "loss": -np.log(np.clip(true_probability, EPSILON, 1.0)),
            "correct": predicted == labels,
        }
    )


def per_image_table(runs: list[Run], n_images: int | None = None) -> pd.DataFrame:
    """`per_image` of several runs side by side: `index`, `true`, then `<field>:<run id>` for
    predicted, confidence, loss and correct. `n_images` limits the rows to the images that exist
    (runs trained with `--limit` predict the first N only); runs tested on other images: ValueError.
    """
    if not runs:
        return pd.DataFrame(columns=["index", "true"])
    n = min(len(run.test_labels) for run in runs)
    n = n if n_images is None else min(n, n_images)
    labels = runs[0].test_labels[:n]
    for run in runs[1:]:
        if not np.array_equal(run.test_labels[:n], labels):
            raise ValueError(f"{run.run_id} and {runs[0].run_id} were tested on different images")
    table = pd.DataFrame({"index": np.arange(n), "true": np.asarray(runs[0].class_names)[labels]})
    for run in runs:
        frame = per_image(run.calibrated_test_predictions[:n], labels, run.class_names)
        for column in ("predicted", "confidence", "loss", "correct"):
            table[f"{column}:{run.run_id}"] = frame[column].to_numpy()
    return table


def top_losses(table: pd.DataFrame, run_ids: list[str], k: int | None = None) -> pd.DataFrame:
    """Rows of a `per_image_table`, largest loss (of any of `run_ids`) first; the first `k` if
    given (fastai's `top_losses`: the images the models are most confidently wrong about)."""
    losses = table[[f"loss:{rid}" for rid in run_ids]].max(axis=1).to_numpy()
    return table.iloc[np.argsort(-losses, kind="stable")[:k]]


@dataclass(frozen=True)
class MistakeFilter:
    """Which misclassified images to keep, and in which order."""

    true_classes: tuple[str, ...] = ()  # empty: every class
    predicted_classes: tuple[str, ...] = ()  # by `run` (by any run if `run` is None)
    run: str | None = None  # a run id: only its mistakes; None: any run's mistakes
    only_one_wrong: bool = False  # exactly one of the runs is wrong
    sort: str = "loss"  # "loss" (`top_losses` order) or "index" (test-set order)


def misclassified(table: pd.DataFrame, run_ids: list[str], spec: MistakeFilter | None = None) -> pd.DataFrame:
    """The rows of a `per_image_table` that some run gets wrong and that match `spec`."""
    spec = spec or MistakeFilter()
    if table.empty or not run_ids:
        return table.iloc[0:0]
    judged = [spec.run] if spec.run else run_ids
    wrong = ~table[[f"correct:{rid}" for rid in run_ids]].to_numpy(bool)
    keep = ~table[[f"correct:{rid}" for rid in judged]].to_numpy(bool).all(axis=1)
    if spec.only_one_wrong:
        keep &= wrong.sum(axis=1) == 1
    if spec.true_classes:
        keep &= table["true"].isin(spec.true_classes).to_numpy()
    if spec.predicted_classes:
        predicted = [table[f"predicted:{rid}"].isin(spec.predicted_classes).to_numpy() for rid in judged]
        keep &= np.column_stack(predicted).any(axis=1)
    result = table[keep]
    return top_losses(result, judged) if spec.sort == "loss" else result


def agreement(a: Run, b: Run) -> dict[str, float]:
    """How often two runs agree, and who is right when they do not."""
    pa = a.test_predictions.argmax(axis=1)
    pb = b.test_predictions.argmax(axis=1)
    y = a.test_labels
    n = len(y)
    return {
        "agree": float(np.mean(pa == pb)),
        "both_right": float(np.mean((pa == y) & (pb == y))),
        "only_a_right": float(np.mean((pa == y) & (pb != y))),
        "only_b_right": float(np.mean((pa != y) & (pb == y))),
        "both_wrong": float(np.mean((pa != y) & (pb != y))),
        "n": n,
    }


def disagreement_matrix(a: Run, b: Run) -> pd.DataFrame:
    """Per true class: how many images only `a` gets right and only `b` gets right."""
    pa = a.test_predictions.argmax(axis=1)
    pb = b.test_predictions.argmax(axis=1)
    y = a.test_labels
    names = np.asarray(a.class_names)
    frame = pd.DataFrame(
        {"class": names[y], "only_a": (pa == y) & (pb != y), "only_b": (pa != y) & (pb == y)}
    )
    table = frame.groupby("class", sort=False)[["only_a", "only_b"]].sum()
    return table.reindex(a.class_names).rename(
        columns={"only_a": f"only {a.run_id} right", "only_b": f"only {b.run_id} right"}
    )


def reliability(runs: list[Run], calibrated: bool = True) -> dict[str, pd.DataFrame]:
    """Each run's reliability table on the test set (`cifar.calibration`): of its calibrated
    probabilities (calibrated runs only), or of its raw ones (every run)."""
    from cifar.calibration import reliability_table

    return {
        run.run_id: reliability_table(
            run.calibrated_test_predictions if calibrated else run.test_predictions, run.test_labels
        )
        for run in runs
        if run.calibration or not calibrated
    }


def calibration_table(runs: list[Run]) -> pd.DataFrame:
    """One row per calibrated run: temperature, and ECE / NLL before and after, validation and test."""
    rows = []
    for run in runs:
        record = run.calibration
        if not record:
            continue
        row = {"run": run.run_id, "temperature": record["temperature"], "converged": record["converged"]}
        for split in ("validation", "test"):
            row.update({f"{split}_{name}": value for name, value in (record.get(split) or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)
