"""Training: one function per model family, each writing a complete run folder.

`train(config)` is what the CLI and the dashboard's background jobs call.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from cifar.assets import Cifar10, load_cifar10
from cifar.config import CLASS_NAMES, NUM_CLASSES, BaselineConfig, TransferConfig
from cifar.data import as_tensor, augmented_dataset, gathered_batches, split_train_validation
from cifar.distribute import fit_multi_worker, is_multi_worker
from cifar.runs import RunWriter, new_run_id

Progress = Callable[[dict], None]
STEPS_PER_EXECUTION = 32
# The head's steps take about a millisecond: run a few hundred per compiled call.
HEAD_STEPS_PER_EXECUTION = 256
PREDICT_BATCH = 4096  # the head's evaluation and prediction batches (results do not depend on it)


def describe_device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)} x{len(gpus)}"
    return f"CPU: {platform.processor() or platform.machine()}, {_cpu_count()} cores"


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def environment() -> dict:
    from importlib.metadata import version

    import keras
    import tensorflow as tf

    return {
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit-learn": version("scikit-learn"),  # importing sklearn to ask would cost ~1 s per job
        "platform": platform.platform(),
        "device": describe_device(),
    }


# ----------------------------------------------------------------------------- Keras callbacks


def _callbacks(writer: RunWriter, config, progress: Progress | None):
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
            # With steps_per_execution, Keras reports every few hundred batches only.
            if self.steps and batch + 1 - self.reported >= max(1, self.steps // 10):
                self.reported = batch + 1
                done = (self.epoch + (batch + 1) / self.steps) / config.epochs
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

    callbacks = [EpochRecorder(), keras.callbacks.TensorBoard(str(writer.path / "tensorboard"))]
    if config.early_stopping_patience and config.validation_size:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=config.early_stopping_patience, restore_best_weights=True)
        )
    return callbacks


def _epoch_message(epoch: int, epochs: int, row: dict) -> str:
    parts = [f"epoch {epoch}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    return ", ".join(parts)


def _compile(model, config, n_train: int, steps_per_execution: int = STEPS_PER_EXECUTION) -> None:
    import keras

    from cifar.models import make_optimizer

    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch=-(-n_train // config.batch_size)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        # Several steps per compiled call: small models (the head) are otherwise dominated by
        # Python overhead per batch.
        steps_per_execution=steps_per_execution,
    )


def _fit(model, x, y, config, writer, progress, strategy, validation, stream=None):
    """`model.fit` (on `stream` when given), or the multi-worker loop under a TF_CONFIG cluster."""
    callbacks = _callbacks(writer, config, progress)
    if is_multi_worker(strategy):
        return fit_multi_worker(
            model,
            x,
            y,
            strategy=strategy,
            batch_size=config.batch_size,
            epochs=config.epochs,
            seed=config.seed,
            label_smoothing=config.label_smoothing,
            validation=validation,
            callbacks=callbacks[:1],  # the epoch recorder; TensorBoard needs Keras' own loop
        )
    inputs = (
        {"x": stream, "shuffle": False}  # the stream shuffles itself
        if stream is not None
        else {"x": x, "y": y, "batch_size": config.batch_size, "shuffle": True}
    )
    return model.fit(
        **inputs,
        epochs=config.epochs,
        validation_data=validation,
        callbacks=callbacks,
        verbose=2,
    )


def save_weights_only(model, build, path: Path) -> None:
    """The model's weights without its optimizer state (Keras saves both; Adam triples the file)."""
    fresh = build()
    fresh.set_weights(model.get_weights())
    fresh.save_weights(str(path))


def _stacked(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """`np.concatenate` of two feature tables into one aligned buffer (see `as_tensor`)."""
    from cifar.features import aligned_empty

    out = aligned_empty((len(first) + len(second), first.shape[1]))
    out[: len(first)], out[len(first) :] = first, second
    return out


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


# ----------------------------------------------------------------------------- the two families


def train_baseline(
    config: BaselineConfig, data: Cifar10, writer: RunWriter, progress=None, strategy=None
) -> dict:
    import keras

    from cifar.models import build_baseline

    keras.utils.set_random_seed(config.seed)
    fit_idx, val_idx = split_train_validation(len(data.x_train), config.validation_size, config.seed)
    with _scope(strategy):
        model = build_baseline(config)
        _compile(model, config, len(fit_idx))
    x_fit = data.x_train[fit_idx]
    validation = (data.x_train[val_idx], _one_hot(data.y_train[val_idx])) if len(val_idx) else None
    stream = None
    if config.augment:
        stream = augmented_dataset(x_fit, _one_hot(data.y_train[fit_idx]), config.batch_size, config.seed)
    started = time.perf_counter()
    history = _fit(
        model,
        x_fit,
        _one_hot(data.y_train[fit_idx]),
        config,
        writer,
        progress,
        strategy,
        validation,
        stream=stream,
    )
    seconds = time.perf_counter() - started
    writer.status("running", phase="evaluating", message="predicting the test set")
    predict = lambda x: model.predict(x, batch_size=1000, verbose=0)  # noqa: E731
    test_probabilities = predict(data.x_test).astype(np.float32)
    if config.tta_flip:
        test_probabilities = (test_probabilities + predict(data.x_test[:, :, ::-1])) / 2
    metrics = {
        "train_accuracy": _accuracy(predict(x_fit), data.y_train[fit_idx]),
        "val_accuracy": _accuracy(predict(data.x_train[val_idx]), data.y_train[val_idx])
        if len(val_idx)
        else None,
        "test_accuracy": _accuracy(test_probabilities, data.y_test),
        "train_accuracy_last_epoch": float(history.history["accuracy"][-1]),
        "seconds": seconds,
        "epochs_run": len(history.history["loss"]),
        "n_train": len(fit_idx),
        "n_validation": len(val_idx),
        "parameters": model.count_params(),
    }
    save_weights_only(model, lambda: build_baseline(config), writer.path / "model.weights.h5")
    return {"metrics": metrics, "test_probabilities": test_probabilities}


def train_transfer(
    config: TransferConfig, data: Cifar10, writer: RunWriter, progress=None, strategy=None
) -> dict:
    """Train the head on cached base features (see `cifar.features` for why this is exact)."""
    import keras

    from cifar.assets import load_inception_weights
    from cifar.features import FeaturesMissing, extract_features, load_features, needed_splits
    from cifar.models import build_head

    weights = load_inception_weights(config.weights, log=logging.getLogger(__name__).info)
    features = {}
    extraction_started = time.perf_counter()
    for split, flip in needed_splits(config):
        images = data.x_train if split == "train" else data.x_test
        try:
            features[split, flip] = load_features(images, config, weights, split, flip)
        except FeaturesMissing:
            if not writer.extract_missing:
                raise
            label = f"{split}{' flipped' if flip else ''}"

            def report(done, total, label=label):
                writer.status(
                    "running",
                    phase="features",
                    progress=done / total,
                    message=f"extracting {label} features: {done}/{total} images",
                )

            features[split, flip] = extract_features(images, config, weights, split, flip, progress=report)
    extraction_seconds = time.perf_counter() - extraction_started

    keras.utils.set_random_seed(config.seed)
    n_train = len(data.x_train)
    fit_idx, val_idx = split_train_validation(n_train, config.validation_size, config.seed)
    # Every split is a set of rows of one table, gathered batch by batch: no 400 MB copies.
    table, labels, fit_rows = features["train", False], data.y_train, fit_idx
    if config.flip_features:  # the flipped fitting images are more rows of the table
        table = _stacked(features.pop(("train", False)), features.pop(("train", True)))
        labels = np.concatenate([labels, labels])
        fit_rows = np.concatenate([fit_idx, fit_idx + n_train])
    x_table, y_table = as_tensor(table), as_tensor(_one_hot(labels))
    with _scope(strategy):
        head = build_head(config)
        if config.standardize:
            head.get_layer("head_standardize").adapt(gathered_batches(x_table, fit_rows, PREDICT_BATCH))
        _compile(head, config, len(fit_rows), steps_per_execution=HEAD_STEPS_PER_EXECUTION)
    if is_multi_worker(strategy):
        fit_data = {"x": table[fit_rows], "y": _one_hot(labels[fit_rows])}
        validation = (table[val_idx], _one_hot(labels[val_idx])) if len(val_idx) else None
    else:
        stream = gathered_batches(x_table, fit_rows, config.batch_size, y_table, seed=config.seed)
        fit_data = {"x": None, "y": None, "stream": stream}
        validation = gathered_batches(x_table, val_idx, PREDICT_BATCH, y_table) if len(val_idx) else None
    started = time.perf_counter()
    history = _fit(
        head,
        config=config,
        writer=writer,
        progress=progress,
        strategy=strategy,
        validation=validation,
        **fit_data,
    )
    seconds = time.perf_counter() - started

    def predict(x, rows=None):
        rows = np.arange(len(x)) if rows is None else rows
        return head.predict(gathered_batches(x, rows, PREDICT_BATCH), verbose=0)

    test_probabilities = predict(as_tensor(features["test", False]))
    if config.tta_flip:
        test_probabilities = (test_probabilities + predict(as_tensor(features["test", True]))) / 2
    metrics = {
        "train_accuracy": _accuracy(predict(x_table, fit_idx), data.y_train[fit_idx]),
        "val_accuracy": _accuracy(predict(x_table, val_idx), data.y_train[val_idx]) if len(val_idx) else None,
        "test_accuracy": _accuracy(test_probabilities, data.y_test),
        "train_accuracy_last_epoch": float(history.history["accuracy"][-1]),
        "seconds": seconds,
        "extraction_seconds": extraction_seconds,
        "epochs_run": len(history.history["loss"]),
        "n_train": len(fit_rows),
        "n_validation": len(val_idx),
        "parameters": head.count_params(),
        "backbone_weights": weights.source,
    }
    save_weights_only(head, lambda: build_head(config), writer.path / "head.weights.h5")
    return {
        "metrics": metrics,
        "test_probabilities": test_probabilities.astype(np.float32),
        "assets": {"backbone_weights": weights.source, "backbone_sha256": weights.sha256},
    }


TRAINERS = {"baseline": train_baseline, "transfer": train_transfer}


def _scope(strategy):
    import contextlib

    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def limited(data: Cifar10, limit: int | None) -> Cifar10:
    """The first `limit` train and test images (quick runs, tests)."""
    if not limit:
        return data
    return Cifar10(data.x_train[:limit], data.y_train[:limit], data.x_test[:limit], data.y_test[:limit])


def train(
    config: BaselineConfig | TransferConfig,
    run_id: str | None = None,
    limit: int | None = None,
    data: Cifar10 | None = None,
    extract_missing: bool = True,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Path:
    """Train `config` and publish `artifacts/runs/<run_id>/`; returns the run folder.

    Under a TF_CONFIG cluster every worker trains its share and only the chief publishes.
    """
    from cifar.distribute import make_strategy, this_worker

    strategy = make_strategy()  # first: MultiWorkerMirroredStrategy must precede other TF work
    worker = this_worker()
    run_id = run_id or new_run_id(config.model)
    if not worker.is_chief:
        run_id = f"{run_id}.worker{worker.index}"
    writer = RunWriter(run_id, overwrite=overwrite).open()
    writer.extract_missing = extract_missing
    handler = _log_to(writer.path / "train.log")
    try:
        data = limited(
            data if data is not None else load_cifar10(log=logging.getLogger(__name__).info), limit
        )
        writer.status("running", phase="starting", message="loading data", progress=0.0)
        environment_info = environment()
        result = TRAINERS[config.model](config, data, writer, progress, strategy=strategy)
        assets = {"cifar10_sha256": data.checksums() if not limit else None, **result.get("assets", {})}
        writer.write_json(
            "config.json",
            {
                "run_id": writer.run_id,
                "config": config.model_dump(),
                "class_names": list(CLASS_NAMES),
                "assets": assets,
                "environment": environment_info,
                "limit": limit,
                "command": _command_line(),
                "workers": worker.count,
            },
        )
        metrics = {
            "model": config.model,
            **result["metrics"],
            "device": environment_info["device"],
            "finished": time.time(),
        }
        writer.write_npy("test_predictions.npy", result["test_probabilities"])
        writer.write_npy("test_labels.npy", data.y_test.astype(np.uint8))
        writer.write_json("metrics.json", metrics)
        logging.getLogger(__name__).info("metrics: %s", metrics)
        if not worker.is_chief:
            return writer.discard()
        return writer.publish()
    except BaseException as error:
        writer.status("failed", message=f"{type(error).__name__}: {error}")
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _command_line() -> str:
    """How this run was started, without machine-specific paths."""
    if sys.argv and sys.argv[0].endswith(("cifar/__main__.py", "cifar")):
        return " ".join(["python -m cifar", *sys.argv[1:]])
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler
