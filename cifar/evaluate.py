"""Evaluation: inference happened once (the run's saved probabilities); these answer questions.

Every function returns plain data (numpy / pandas); plotting lives in `cifar.plots`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from cifar.runs import Run

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
    predicted = probabilities.argmax(axis=1)
    index = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=index, zero_division=0
    )
    per_class = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index(class_names, name="class"),
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


def evaluate_run(run: Run) -> Report:
    return evaluate_predictions(run.test_predictions, run.test_labels, run.class_names)


def most_confused(confusion: pd.DataFrame, min_count: int = 1) -> pd.DataFrame:
    """Off-diagonal cells of the confusion matrix, largest first (fastai's `most_confused`)."""
    pairs = confusion.stack().rename("count").reset_index()
    pairs = pairs[(pairs["true"] != pairs["predicted"]) & (pairs["count"] >= min_count)]
    return pairs.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)


def per_image(probabilities: np.ndarray, labels: np.ndarray, class_names) -> pd.DataFrame:
    """One row per test image: prediction, confidence, and cross-entropy loss."""
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


def top_losses(probabilities: np.ndarray, labels: np.ndarray, class_names, k: int = 50) -> pd.DataFrame:
    """The `k` test images the model is most confidently wrong about (fastai's `top_losses`)."""
    return per_image(probabilities, labels, class_names).nlargest(k, "loss")


def misclassified(probabilities: np.ndarray, labels: np.ndarray, class_names) -> pd.DataFrame:
    table = per_image(probabilities, labels, class_names)
    return table[~table["correct"]].sort_values("loss", ascending=False)


def compare_runs(a: Run, b: Run) -> pd.DataFrame:
    """Per test image, both runs side by side (columns suffixed with each run's id)."""
    if not np.array_equal(a.test_labels, b.test_labels):
        raise ValueError(f"{a.run_id} and {b.run_id} were tested on different images")
    left = per_image(a.test_predictions, a.test_labels, a.class_names)
    right = per_image(b.test_predictions, b.test_labels, b.class_names)
    both = left.merge(right.drop(columns="true"), on="index", suffixes=(f"_{a.run_id}", f"_{b.run_id}"))
    return both


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
