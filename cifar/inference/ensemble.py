"""Ensembles as runs: finished runs' probabilities pooled with weights fitted on the validation split.

The pooled probabilities are `softmax(sum_i w_i * log(p_i))` over the members' raw probabilities
`p_i` (log-linear pooling, a product of experts). The weights `w_i >= 0` minimise the negative
log-likelihood of the validation split's labels, never the test set's; their scale acts as a
temperature, and `calibration.json` (fitted on the same validation predictions) is close to T = 1.
An ensemble's run folder holds what any run holds (config, metrics, test and validation
predictions, calibration) and `ensemble.json`:

    {"members": ["baseline-best", "transfer-best"], "weights": [0.62, 0.81],
     "pooling": "log-linear", "fitted_on": "validation"}

`python -m cifar ensemble --run-id ID RUN RUN [...]` makes one; the Predictor loads its members once.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import log_softmax

from cifar.calibration import log_probabilities
from cifar.modeling.validation import write_calibration
from cifar.store import run_folder
from cifar.store.runs import Run, RunError, RunWriter, load_run

MAX_WEIGHT = 10.0
MAX_MEMBERS = 8


def pooled(member_probabilities: list[np.ndarray], weights) -> np.ndarray:
    """softmax(sum_i w_i log p_i), row by row, float32."""
    logits = sum(w * log_probabilities(p) for w, p in zip(weights, member_probabilities, strict=True))
    return np.exp(log_softmax(logits, axis=-1)).astype(np.float32)


def fit_weights(member_probabilities: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """The non-negative weights minimising the NLL of `labels` (the validation split's)."""
    logs = np.stack([log_probabilities(p) for p in member_probabilities])  # (members, N, classes)
    rows = np.arange(len(labels))

    def nll(weights):
        log_pooled = log_softmax(np.tensordot(weights, logs, axes=1), axis=-1)
        return -log_pooled[rows, labels].mean()

    start = np.full(len(logs), 1.0 / len(logs))
    result = minimize(nll, start, method="L-BFGS-B", bounds=[(0.0, MAX_WEIGHT)] * len(logs))
    return np.asarray(result.x if np.isfinite(result.fun) else start, np.float64)


def check_members(members: list[Run]) -> None:
    """RunError naming the member unless every member can join the others: distinct runs with
    validation predictions, the same class list, test labels and validation labels."""
    ids = [run.run_id for run in members]
    if not 2 <= len(members) <= MAX_MEMBERS or len(set(ids)) != len(ids):
        raise RunError(f"an ensemble needs 2 to {MAX_MEMBERS} different runs, got {ids}")
    first = members[0]
    for run in members:
        if run.model == "ensemble":
            raise RunError(f"{run.run_id} is an ensemble itself: name its members instead")
        if run.validation is None:
            raise RunError(
                f"{run.run_id} has no validation predictions: run `python -m cifar calibrate {run.run_id}`"
            )
        if run.class_names != first.class_names:
            raise RunError(f"{run.run_id} has another class list than {first.run_id}")
        if not np.array_equal(run.test_labels, first.test_labels):
            raise RunError(f"{run.run_id} was tested on other test labels than {first.run_id}")
        if not np.array_equal(run.validation[1], first.validation[1]):
            raise RunError(f"{run.run_id} was validated on another split than {first.run_id}")


def make_ensemble(run_id: str, member_ids: list[str], overwrite: bool = False, command: str = "") -> Path:
    """Fit the weights on the members' validation predictions; publish the ensemble's run folder."""
    if run_id in member_ids:
        raise RunError(f"{run_id} cannot be a member of itself: choose another --run-id")
    members = [load_run(member) for member in member_ids]
    check_members(members)
    started = time.perf_counter()
    val_labels, test_labels = members[0].validation[1], members[0].test_labels
    weights = fit_weights([run.validation[0] for run in members], val_labels)
    val = pooled([run.validation[0] for run in members], weights)
    test = pooled([run.test_predictions for run in members], weights)
    writer = RunWriter(run_id, overwrite=overwrite).open()
    try:
        writer.write_json(run_folder.CONFIG, _config(run_id, members, command))
        writer.write_json(run_folder.ENSEMBLE, _ensemble_record(members, weights))
        writer.write_history(pd.DataFrame())
        writer.write_npy(run_folder.TEST_PREDICTIONS, test)
        writer.write_npy(run_folder.TEST_LABELS, test_labels.astype(np.uint8))
        write_calibration(writer.path, val, val_labels, test, test_labels)
        writer.write_json(run_folder.METRICS, _metrics(members, val, val_labels, test, test_labels, started))
        return writer.publish()
    except BaseException as error:
        writer.fail(error)
        raise


def _config(run_id: str, members: list[Run], command: str) -> dict:
    return {
        "run_id": run_id,
        "config": {"model": "ensemble", "members": [run.run_id for run in members]},
        "class_names": members[0].class_names,
        "assets": {},
        "limit": None,
        "command": command,
    }


def _ensemble_record(members: list[Run], weights: np.ndarray) -> dict:
    return {
        "members": [run.run_id for run in members],
        "weights": [float(w) for w in weights],
        "pooling": "log-linear",
        "fitted_on": "validation",
        "member_finished": [float(run.metrics["finished"]) for run in members],
    }


def check_unchanged(ensemble: Run, members: list[Run]) -> None:
    """RunError naming a member trained again since the ensemble was made (its weight was fitted
    on the old one's predictions). `members` are those the same read of ensemble.json named
    (`Run.ensemble`): an ensemble made again meanwhile blames no member."""
    record = ensemble.ensemble
    for run, finished in zip(members, record.get("member_finished") or [], strict=False):
        if float(run.metrics["finished"]) != finished:
            raise RunError(
                f"{run.run_id} was trained again after {ensemble.run_id} was made: make the ensemble again "
                f"(python -m cifar ensemble --run-id {ensemble.run_id} --overwrite ...)"
            )


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def _metrics(members: list[Run], val, val_labels, test, test_labels, started: float) -> dict:
    return {
        "model": "ensemble",
        "val_accuracy": _accuracy(val, val_labels),
        "test_accuracy": _accuracy(test, test_labels),
        "member_test_accuracy": {run.run_id: _accuracy(run.test_predictions, test_labels) for run in members},
        "seconds": time.perf_counter() - started,
        "epochs_run": 0,
        "n_validation": len(val_labels),
        "device": "none (combines saved predictions)",
        "finished": time.time(),
    }


def ensemble_weights(run: Run) -> tuple[list[str], list[float]]:
    """(members, weights) of an ensemble run, from its ensemble.json (`Run.ensemble`, read once);
    RunError if it names the ensemble itself."""
    record = run.ensemble
    if run.run_id in record["members"]:
        raise RunError(f"run {run.run_id!r}: {run_folder.ENSEMBLE} names the ensemble itself as a member")
    return record["members"], record["weights"]


def member_runs(run: Run) -> list[Run]:
    """An ensemble's members, loaded; RunError naming one that is an ensemble itself (members are
    trained runs: an ensemble inside one could pool its own results, or loop)."""
    members = [load_run(member) for member in ensemble_weights(run)[0]]
    for member in members:
        if member.model == "ensemble":
            raise RunError(f"run {run.run_id!r}: member {member.run_id} is an ensemble, not a trained run")
    return members
