"""A run's validation predictions and its calibration, in the run folder.

Training writes them (`write_calibration`); `python -m cifar calibrate RUN` fits the calibration
again from the saved validation predictions, or back-fills a run trained before they existed, from
its saved weights: the validation split is seeded (`split_train_validation(50000, validation_size,
seed)`), so the same images come back.

    val_predictions.npy    (5000, 10) float32 raw probabilities, validation split order,
                           made as the test predictions are (test-time flip included)
    val_labels.npy         (5000,) uint8 their labels
    calibration.json       see `cifar.calibration`
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cifar import atomic, tta
from cifar.calibration import calibration_record
from cifar.sources.data import validation_rows
from cifar.store import run_folder

PREDICT_BATCH = 1000


def write_calibration(folder: Path, val_probabilities, val_labels, test_probabilities, test_labels) -> dict:
    """Write the validation predictions, their labels and calibration.json into `folder`, together
    (a failed write replaces none of them)."""
    record = calibration_record(val_probabilities, val_labels, test_probabilities, test_labels)
    with atomic.written_together() as files:
        files.write_npy(folder / run_folder.VAL_PREDICTIONS, np.asarray(val_probabilities, np.float32))
        files.write_npy(folder / run_folder.VAL_LABELS, np.asarray(val_labels, np.uint8))
        files.write_json(folder / run_folder.CALIBRATION, record)
    return record


def check_replace_calibration(run, overwrite: bool) -> None:
    """A RunError if the run cannot be calibrated here; FileExistsError saying what its calibration
    is, unless `overwrite` (`atomic.check_replace`)."""
    from cifar.store.runs import RunError

    if run.validation is None:  # then they are predicted again from the weights: can they be?
        if run.model == "ensemble":
            raise RunError(f"{run.run_id} is an ensemble without validation predictions: make it again")
        if not run.hyperparameters.get("validation_size"):
            raise RunError(
                f"{run.run_id} held no validation images out (validation_size 0): nothing to fit T on"
            )
        if run.config.get("limit"):
            raise RunError(
                f"{run.run_id} was trained on the first {run.config['limit']} images, not on CIFAR-10"
            )
    held = f"T = {run.temperature:.3f} from {run.calibration.get('n_validation', '?')} validation images"
    what = f"{run.run_id}'s {run_folder.CALIBRATION} ({held})"
    atomic.check_replace(run.path / run_folder.CALIBRATION, overwrite, what)


def flip_averaged(tta_flip: bool, predict: Callable, images, flipped_images=None) -> np.ndarray:
    """`predict(images)`; with `tta_flip`, the mean over the images and their horizontal flips."""
    probabilities = predict(images)
    if tta_flip:
        probabilities = (probabilities + predict(flipped_images)) / 2
    return np.asarray(probabilities, np.float32)


def backfill(run_id: str, log: Callable[[str], None] = print, overwrite: bool = False) -> dict:
    """Write a finished run's calibration (replacing one only with `overwrite`) from its saved
    validation predictions, or, for a run without them, from predictions recomputed from its weights."""
    from cifar.sources.assets import load_cifar10
    from cifar.store.runs import RunError, load_run

    run = load_run(run_id)
    check_replace_calibration(run, overwrite)
    if run.validation is not None:  # what training (or the ensemble) predicted: no model needed
        return write_calibration(run.path, *run.validation, run.test_predictions, run.test_labels)
    data = load_cifar10(log=log)
    if not np.array_equal(run.test_labels, data.y_test):
        raise RunError(f"{run_id}'s test labels are not this CIFAR-10's: cannot calibrate it here")
    rows = validation_rows(run.hyperparameters, len(data.x_train))
    predict_validation = _transfer_validation if run.model == "transfer" else _baseline_validation
    probabilities = predict_validation(run, data.x_train[rows], log)
    labels = data.y_train[rows]
    check_replace_calibration(load_run(run_id), overwrite)  # again: one may have come meanwhile
    return write_calibration(run.path, probabilities, labels, run.test_predictions, run.test_labels)


def _baseline_validation(run, images: np.ndarray, log) -> np.ndarray:
    from cifar.modeling.restore import load_model

    _, model = load_model(run)
    predict = lambda x: model.predict(x, batch_size=PREDICT_BATCH, verbose=0)  # noqa: E731
    hyper = run.hyperparameters
    return tta.averaged(predict, images, bool(hyper.get("tta_flip")), bool(hyper.get("tta_translate")))


def _transfer_validation(run, images: np.ndarray, log) -> np.ndarray:
    """The head on the frozen base's features of the validation images (extracted and cached
    in the Keras home under the split name "validation", resumable like any feature set)."""
    from cifar.config import load_config
    from cifar.modeling.features import extract_features
    from cifar.modeling.restore import load_head
    from cifar.sources.assets import load_inception_weights
    from cifar.store.runs import RunError

    config = load_config(run.hyperparameters)
    head = load_head(run)
    weights = load_inception_weights(run.backbone_source, log=log)
    expected = (run.config.get("assets") or {}).get("backbone_sha256")
    if expected and expected != weights.sha256:
        raise RunError(f"{run.run_id} was trained on other backbone weights ({expected[:12]})")

    def predict(pixels_flipped: bool):  # the images' features, flipped or not
        features = extract_features(images, config, weights, "validation", pixels_flipped, progress=_bar(log))
        return head.predict(features, batch_size=4096, verbose=0)

    return flip_averaged(config.tta_flip, predict, False, True)


def _bar(log):
    step = {"next": 0}

    def report(done: int, total: int) -> None:
        if done >= step["next"] or done == total:
            log(f"validation features: {done}/{total}")
            step["next"] = done + 1000

    return report
