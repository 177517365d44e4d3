"""Fixture run folders and a synthetic CIFAR-10 written directly with numpy / json (no training)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cifar.config import CLASS_NAMES, parse_config

PAGES = {  # page name -> file, as streamlit_app.py registers them
    "overview": "pages/overview.py",
    "comparison": "pages/comparison.py",
    "per_class": "pages/per_class.py",
    "misclassified": "pages/misclassified.py",
    "classify": "pages/classify.py",
    "train": "pages/train.py",
}


def synthetic_npz(
    path: Path, n_train: int = 200, n_test: int = 100, seed: int = 0, y_test: np.ndarray | None = None
) -> Path:
    """Random uint8 images with balanced labels, in the layout `CIFAR10_NPZ` expects; the test
    labels are shuffled unless given."""
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    if y_test is None:
        y_test = rng.permutation(np.arange(n_test) % 10)
    np.savez(
        path,
        x_train=x_train,
        y_train=(np.arange(n_train) % 10).astype(np.uint8),
        x_test=x_test,
        y_test=np.asarray(y_test).astype(np.uint8),
    )
    return path


def labels_of(npz: Path) -> np.ndarray:
    with np.load(npz) as archive:
        return archive["y_test"].astype(np.uint8)


def predictions(labels: np.ndarray, accuracy: float, seed: int = 0) -> np.ndarray:
    """Probabilities whose argmax is right for about `accuracy` of the images."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    predicted = labels.astype(np.int64).copy()
    wrong = rng.random(n) > accuracy
    predicted[wrong] = (predicted[wrong] + rng.integers(1, 10, wrong.sum())) % 10
    logits = rng.normal(0, 1, (n, 10))
    logits[np.arange(n), predicted] += rng.uniform(1.5, 5, n)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs.astype(np.float32)


def write_run(
    root: Path,
    run_id: str,
    model: str,
    labels: np.ndarray,
    accuracy: float,
    train_accuracy: float | None = None,
    epochs: int = 3,
    seed: int = 0,
    **overrides,
) -> Path:
    """A complete run folder under `root/runs/` (what `cifar.train` would publish, minus weights)."""
    folder = root / "runs" / run_id
    folder.mkdir(parents=True)
    config = parse_config(model, {"epochs": epochs, **overrides}).model_dump()
    (folder / "config.json").write_text(
        json.dumps({"run_id": run_id, "config": config, "class_names": list(CLASS_NAMES), "limit": None})
    )
    probs = predictions(labels, accuracy, seed)
    test_accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    train_accuracy = train_accuracy if train_accuracy is not None else min(1.0, test_accuracy + 0.05)
    grow = np.linspace(0.3, 1.0, epochs)
    history = pd.DataFrame(
        {
            "accuracy": train_accuracy * grow,
            "loss": 2.3 - 1.5 * grow,
            "val_accuracy": test_accuracy * grow,
            "val_loss": 2.3 - 1.2 * grow,
            "seconds": np.full(epochs, 1.5),
        }
    )
    history.to_csv(folder / "history.csv", index_label="epoch")
    metrics = {
        "model": model,
        "train_accuracy": train_accuracy,
        "val_accuracy": test_accuracy,
        "test_accuracy": test_accuracy,
        "seconds": 4.5 * epochs,
        "epochs_run": epochs,
        "device": "CPU: fixture",
        "finished": time.time() + seed,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    np.save(folder / "test_predictions.npy", probs)
    np.save(folder / "test_labels.npy", labels.astype(np.uint8))
    return folder


def standard_runs(root: Path, labels: np.ndarray) -> list[str]:
    """The reference and best runs a fresh clone ships, as small fixtures."""
    write_run(root, "baseline-reference", "baseline", labels, 0.7, seed=1)
    write_run(root, "baseline-best", "baseline", labels, 0.8, seed=2, learning_rate=5e-4, augment=True)
    write_run(root, "transfer-reference", "transfer", labels, 0.85, seed=3, epochs=4)
    return ["baseline-reference", "baseline-best", "transfer-reference"]
