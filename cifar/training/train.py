"""Training: one function per model family, each writing a complete run folder.

`train(config)` is what the CLI and the dashboard's background jobs call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cifar import tta
from cifar.config import CLASS_NAMES, NUM_CLASSES, BaselineConfig, TransferConfig
from cifar.modeling.distribute import environment, is_multi_worker, scope
from cifar.modeling.validation import flip_averaged, write_calibration
from cifar.sources.assets import Cifar10, check_limit, load_cifar10
from cifar.sources.data import (
    aligned_empty,
    alternating_flip_dataset,
    as_tensor,
    augmented_dataset,
    gathered_batches,
    split_train_validation,
    steps_per_epoch,
    validation_rows,
)
from cifar.store import run_folder
from cifar.store.runs import RunError, RunWriter, command_line, new_run_id
from cifar.training.callbacks import Progress
from cifar.training.fitting import (
    HEAD_STEPS_PER_EXECUTION,
    Fitted,
    baseline_steps_per_call,
    compile_model,
    fit,
    save_weights_only,
)


class TrainingDiverged(RunError):
    """The trained model predicts NaN or infinity: the run is failed, not published."""


_log = logging.getLogger(__name__)
PREDICT_BATCH = 4096  # the head's evaluation and prediction batches (results do not depend on it)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


@dataclass(frozen=True)
class Trained:
    """What a family's trainer hands to `train`, which writes it into the run folder."""

    metrics: dict
    test_probabilities: np.ndarray
    val_probabilities: np.ndarray  # made as the test's (test-time flip included); may be empty
    assets: dict = field(default_factory=dict)


def run_metrics(
    data: Cifar10,
    split: tuple[np.ndarray, np.ndarray],
    predict_train: Callable[[np.ndarray], np.ndarray],
    test_probabilities: np.ndarray,
    fitted: Fitted,
    model,
    *,
    n_train: int | None = None,
    extraction_seconds: float | None = None,
) -> dict:
    """metrics.json's figures for either family. `split` is (fitting rows, validation rows) of the
    training set, `predict_train(rows)` their probabilities; `n_train` counts flipped rows too."""
    fit_idx, val_idx = split
    history = fitted.history
    timing = {"seconds": fitted.seconds}
    if extraction_seconds is not None:
        timing["extraction_seconds"] = extraction_seconds
    return {
        "train_accuracy": _accuracy(predict_train(fit_idx), data.y_train[fit_idx]),
        "val_accuracy": _accuracy(predict_train(val_idx), data.y_train[val_idx]) if len(val_idx) else None,
        "test_accuracy": _accuracy(test_probabilities, data.y_test),
        "train_accuracy_last_epoch": float(history.history["accuracy"][-1]),
        **timing,
        "epochs_run": len(history.history["loss"]),
        "n_train": len(fit_idx) if n_train is None else n_train,
        "n_validation": len(val_idx),
        "parameters": model.count_params(),
    }


# ----------------------------------------------------------------------------- the two families


def train_baseline(
    config: BaselineConfig, data: Cifar10, writer: RunWriter, progress=None, strategy=None
) -> Trained:
    """The from-scratch CNN on pixels (augmented on the fly with `augment`)."""
    import keras

    from cifar.modeling.airbench import WHITEN_IMAGES, Lookahead
    from cifar.modeling.models import build_baseline, normalized

    keras.utils.set_random_seed(config.seed)
    split = fit_idx, val_idx = split_train_validation(len(data.x_train), config.validation_size, config.seed)
    x_fit, y_fit = data.x_train[fit_idx], _one_hot(data.y_train[fit_idx])
    steps = steps_per_epoch(len(fit_idx), config.batch_size)
    if is_multi_worker(strategy) and (config.lookahead or config.alternating_flip):
        raise RunError("lookahead and alternating_flip are not supported under a TF_CONFIG cluster")
    training, stream_steps = (x_fit, y_fit), None
    if config.augment and not is_multi_worker(strategy):  # the multi-worker loop takes arrays
        if config.alternating_flip:
            training = alternating_flip_dataset(x_fit, y_fit, config.batch_size, config.seed, config.epochs)
            stream_steps = steps
        else:
            training = augmented_dataset(x_fit, y_fit, config.batch_size, config.seed)
    with scope(strategy):
        model = build_baseline(config)
        if config.stem == "whiten":
            model.get_layer("whiten").set_kernel_from(normalized(x_fit[:WHITEN_IMAGES]))
        compile_model(model, config, len(fit_idx), baseline_steps_per_call(config, steps, bool(stream_steps)))
    validation = (data.x_train[val_idx], _one_hot(data.y_train[val_idx])) if len(val_idx) else None
    extra = [Lookahead(config.epochs * steps)] if config.lookahead else []
    fitted = fit(model, config, training, validation, writer, progress, strategy, stream_steps, extra)

    writer.status("running", phase="evaluating", message="predicting the test set")
    predict = lambda x: model.predict(x, batch_size=1000, verbose=0)  # noqa: E731
    test = tta.averaged(predict, data.x_test, config.tta_flip, config.tta_translate)
    val = (
        tta.averaged(predict, data.x_train[val_idx], config.tta_flip, config.tta_translate)
        if len(val_idx)
        else np.zeros((0, NUM_CLASSES), np.float32)
    )
    metrics = run_metrics(data, split, lambda rows: predict(data.x_train[rows]), test, fitted, model)
    writer.status("running", phase="saving", message="saving the weights")
    save_weights_only(model, lambda: build_baseline(config), writer.path / run_folder.BASELINE_WEIGHTS)
    return Trained(metrics, test, val)


def train_transfer(
    config: TransferConfig,
    data: Cifar10,
    writer: RunWriter,
    progress=None,
    strategy=None,
    *,
    extract_missing: bool = True,
) -> Trained:
    """The head on the frozen base's cached features (see `cifar.modeling.features` for why this is exact)."""
    import keras

    from cifar.modeling.features import ensure_features
    from cifar.modeling.models import build_head
    from cifar.sources.assets import load_inception_weights

    weights = load_inception_weights(config.weights, log=_log.info)
    started = time.perf_counter()
    report = _extraction_status(writer)
    features = ensure_features(config, data, weights, extract_missing=extract_missing, progress=report)
    extraction_seconds = time.perf_counter() - started

    keras.utils.set_random_seed(config.seed)
    split = fit_idx, val_idx = split_train_validation(len(data.x_train), config.validation_size, config.seed)
    table, labels, fit_rows = _training_table(features, data.y_train, fit_idx, config.flip_features)
    x_table = as_tensor(table)
    with scope(strategy):
        head = build_head(config)
        if config.standardize:
            head.get_layer("head_standardize").adapt(gathered_batches(x_table, fit_rows, PREDICT_BATCH))
        compile_model(head, config, len(fit_rows), steps_per_execution=HEAD_STEPS_PER_EXECUTION)
    training, validation = _head_data(config, table, x_table, labels, (fit_rows, val_idx), strategy)
    fitted = fit(head, config, training, validation, writer, progress, strategy)

    def predict(x, rows=None):  # rows of a feature table, batch by batch
        rows = np.arange(len(x)) if rows is None else rows
        return head.predict(gathered_batches(x, rows, PREDICT_BATCH), verbose=0)

    plain, flipped = features["test", False], features.get(("test", True))
    test = flip_averaged(config.tta_flip, lambda table: predict(as_tensor(table)), plain, flipped)
    val = _validation_probabilities(config, features, predict, x_table, val_idx, len(data.x_train))
    metrics = run_metrics(
        data, split, lambda rows: predict(x_table, rows), test, fitted, head, n_train=len(fit_rows),
        extraction_seconds=extraction_seconds,
    )  # fmt: skip
    writer.status("running", phase="saving", message="saving the weights")
    save_weights_only(head, lambda: build_head(config), writer.path / run_folder.TRANSFER_WEIGHTS)
    assets = {"backbone_weights": weights.source, "backbone_sha256": weights.sha256}
    return Trained({**metrics, "backbone_weights": weights.source}, test, val, assets)


def _validation_probabilities(config: TransferConfig, features: dict, predict, x_table, val_idx, n_train):
    """The head's validation predictions, made as the test predictions are: with `tta_flip`, the
    mean with the flipped images (rows of the training table with `flip_features`, else the
    validation images' own flipped features)."""
    if not len(val_idx):  # (Keras cannot predict nothing)
        return np.zeros((0, NUM_CLASSES), np.float32)
    plain = predict(x_table, val_idx)
    if not config.tta_flip:
        return np.asarray(plain, np.float32)
    if config.flip_features:
        flipped = predict(x_table, val_idx + n_train)
    else:
        flipped = predict(as_tensor(features["validation", True]))
    return np.asarray((plain + flipped) / 2, np.float32)


def _head_data(config: TransferConfig, table, x_table, labels, rows, strategy):
    """(training, validation) for `_fit`: rows of one feature table, gathered batch by batch (no
    400 MB copies); the multi-worker loop takes arrays instead."""
    fit_rows, val_rows = rows
    if is_multi_worker(strategy):
        validation = (table[val_rows], _one_hot(labels[val_rows])) if len(val_rows) else None
        return (table[fit_rows], _one_hot(labels[fit_rows])), validation
    y_table = as_tensor(_one_hot(labels))
    training = gathered_batches(x_table, fit_rows, config.batch_size, y_table, seed=config.seed)
    validation = gathered_batches(x_table, val_rows, PREDICT_BATCH, y_table) if len(val_rows) else None
    return training, validation


def _extraction_status(writer: RunWriter) -> Callable[[str, int, int], None]:
    """`ensure_features`' progress, as the run's status (and a bar in a terminal)."""
    from cifar.terminal import terminal_progress

    bar = terminal_progress("features")

    def report(label: str, done: int, total: int) -> None:
        message = f"extracting {label} features: {done}/{total} images"
        writer.status("running", phase="features", progress=done / total, message=message)
        bar(label, done, total)

    return report


def _training_table(features: dict, labels: np.ndarray, fit_idx: np.ndarray, flip_features: bool):
    """(table, labels, fitting rows) of the head's training features. With `flip_features` the
    flipped images are more rows of one table (taken out of `features`, so only the table stays)."""
    if not flip_features:
        return features["train", False], labels, fit_idx
    plain, flipped = features.pop(("train", False)), features.pop(("train", True))
    table = aligned_empty((len(plain) + len(flipped), plain.shape[1]))  # aligned: see `as_tensor`
    table[: len(plain)], table[len(plain) :] = plain, flipped
    return table, np.concatenate([labels, labels]), np.concatenate([fit_idx, fit_idx + len(labels)])


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
    from cifar.modeling.distribute import make_strategy, this_worker

    check_limit(limit)  # before the run folder exists: a bad limit leaves nothing behind
    strategy = make_strategy()  # first: MultiWorkerMirroredStrategy must precede other TF work
    worker = this_worker()
    run_id = run_id or new_run_id(config.model)
    if not worker.is_chief:
        run_id = f"{run_id}.worker{worker.index}"
    writer = RunWriter(run_id, overwrite=overwrite).open()
    handler = _log_to(writer.path / run_folder.TRAIN_LOG)
    try:
        data = (data if data is not None else load_cifar10(log=_log.info)).limited(limit)
        writer.status("running", phase="starting", message="loading data", progress=0.0)
        environment_info = environment()
        if isinstance(config, TransferConfig):
            trained = train_transfer(
                config, data, writer, progress, strategy, extract_missing=extract_missing
            )
        else:
            trained = train_baseline(config, data, writer, progress, strategy)
        if not np.isfinite(trained.test_probabilities).all():  # a run readers would refuse
            raise TrainingDiverged(
                f"training diverged: the test predictions are not finite (try a smaller learning_rate "
                f"than {config.learning_rate:g})"
            )
        writer.status("running", phase="saving", message="writing the run folder")
        _write_results(writer, config, data, trained, environment_info, limit=limit, workers=worker.count)
        if not worker.is_chief:
            return writer.discard()
        folder = writer.publish()
    except BaseException as error:
        writer.fail(error)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    from cifar.analysis.cost import measure_if_enabled

    measure_if_enabled(run_id, _log.info)  # the run is published: a failure or cancel here leaves it
    return folder


def _write_results(
    writer: RunWriter, config, data: Cifar10, trained: Trained, environment_info: dict, *, limit, workers: int
) -> None:
    """config.json, the test predictions and labels, metrics.json: the run folder's contract."""
    assets = {"cifar10_sha256": data.checksums() if not limit else None, **trained.assets}
    writer.write_json(
        run_folder.CONFIG,
        {
            "run_id": writer.run_id,
            "config": config.model_dump(),
            "class_names": list(CLASS_NAMES),
            "assets": assets,
            "environment": environment_info,
            "limit": limit,
            "command": command_line(),
            "workers": workers,
        },
    )
    metrics = {
        "model": config.model,
        **trained.metrics,
        "device": environment_info["device"],
        "finished": time.time(),
    }
    writer.write_npy(run_folder.TEST_PREDICTIONS, trained.test_probabilities)
    writer.write_npy(run_folder.TEST_LABELS, data.y_test.astype(np.uint8))
    if len(trained.val_probabilities):
        val_labels = data.y_train[validation_rows(config.model_dump(), len(data.y_train))]
        test = trained.test_probabilities
        write_calibration(writer.path, trained.val_probabilities, val_labels, test, data.y_test)
    writer.write_json(run_folder.METRICS, metrics)
    _log.info("metrics: %s", metrics)


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler
