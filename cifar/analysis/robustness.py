"""How a run holds up under CIFAR-10-C's corruptions (`cifar.sources.corruptions`), stored in its folder.

    robustness.json              images, seed, test_indices (a class-stratified subset of the
                                 test set, sorted), clean_accuracy (the same images uncorrupted),
                                 sets: [{"corruption", "severity", "accuracy"}] in array order,
                                 test_time_flip (false: one view, see below), finished, seconds
    robustness_predictions.npy   (sets, images, 10) float32 raw probabilities, in `sets` order
                                 (its sha256 is in the json: `predictions_sha256`)
    robustness_clean.npy         (images, 10) float32 raw probabilities of the clean images, made
                                 as the sets' are (an ensemble pools its members' from these)

Every run is evaluated on one view of each image (no test-time flip, whatever the run uses),
so the families are compared alike and a transfer run's corrupted features are extracted once,
not twice. Transfer runs go through the feature cache (`cifar.modeling.features`; a set is named by its
corruption and severity), so a killed evaluation resumes where it stopped; an ensemble pools its
members' stored predictions with its weights. The predictions file is written before the json,
and a reader takes the pair only when they agree (`read_robustness`): a half-written result
never looks complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from cifar import atomic, stats
from cifar.sources.assets import sha256_bytes
from cifar.sources.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from cifar.store import run_files, run_folder
from cifar.store.runs import Run, RunError, load_run

CPU_IMAGES, GPU_IMAGES = 1000, 10000
REFERENCE_RUN = "baseline-reference"  # Hendrycks' mCE divides by a reference model's errors


def corruption_sets() -> list[tuple[str, int]]:
    """Every (corruption, severity), corruption by corruption, severity 1..5."""
    return [(name, severity) for name in CORRUPTIONS for severity in SEVERITIES]


def stratified_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `n` test images, as many of each class as can be (all if n >= len)."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    chosen, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    return np.sort(chosen)


def check_images(n: int | None) -> int | None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 10 <= n <= 10000):
        raise ValueError(f"--images must be a whole number from 10 to 10000, got {n!r}")
    return n


def evaluate_robustness(
    run_id: str,
    images: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> dict:
    """Evaluate a finished run on every corruption set; write and return its robustness.json
    (replacing one only with `overwrite`)."""
    check_images(images)
    run = load_run(run_id)
    check_replace_results(run, overwrite)
    started = time.perf_counter()
    if run.model == "ensemble":
        record, clean, predictions = _pooled_members(run)
    else:
        record, clean, predictions = _evaluate_model(run, images, seed, log)
    record = {**record, "finished": time.time(), "seconds": time.perf_counter() - started}
    check_replace_results(load_run(run_id), overwrite)  # again: one may have come meanwhile
    return write_results(run.path, record, clean, predictions)


def check_replace_results(run: Run, overwrite: bool) -> None:
    """FileExistsError saying what the run's robustness results are, unless `overwrite` (a result
    of fewer images or another seed never silently replaces a committed one)."""
    result = read_robustness(run)
    held = f"{result[0]['images']} test images, seed {result[0]['seed']}" if result else "unreadable"
    atomic.check_replace(
        run.path / run_folder.ROBUSTNESS, overwrite, f"{run.run_id}'s {run_folder.ROBUSTNESS} ({held})"
    )


def write_results(folder, record: dict, clean: np.ndarray, predictions: np.ndarray) -> dict:
    """The three files of a run's robustness results, together (the json, with the predictions'
    sha256, renamed last); a failed write replaces none of them."""
    predictions = np.asarray(predictions, np.float32)
    record = {**record, "predictions_sha256": sha256_bytes(predictions.tobytes())}
    with atomic.written_together() as files:
        files.write_npy(folder / run_folder.ROBUSTNESS_CLEAN, np.asarray(clean, np.float32))
        files.write_npy(folder / run_folder.ROBUSTNESS_PREDICTIONS, predictions)
        files.write_json(folder / run_folder.ROBUSTNESS, record)
    return record


def _evaluate_model(run: Run, images: int | None, seed: int, log) -> tuple[dict, np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm

    from cifar.modeling.features import gpu_available
    from cifar.sources.assets import load_cifar10

    data = load_cifar10(log=log)
    if not np.array_equal(run.test_labels, data.y_test):
        raise RunError(f"{run.run_id} was not tested on the CIFAR-10 test set: no corruptions of it")
    indices = stratified_subset(data.y_test, images or (GPU_IMAGES if gpu_available() else CPU_IMAGES), seed)
    clean, labels = data.x_test[indices], data.y_test[indices]
    predict = _single_view_predictor(run, log)
    clean_predictions = predict(clean, "clean")
    predictions = []
    for name, severity in tqdm(corruption_sets(), desc=f"robustness {run.run_id}", unit="set", mininterval=5):
        corrupted = corrupt(clean, name, severity, seed)
        predictions.append(predict(corrupted, f"{name}-{severity}"))
    predictions = np.stack(predictions)
    record = _record(indices, labels, seed, _accuracy(clean_predictions, labels), predictions)
    return record, clean_predictions, predictions


def _single_view_predictor(run: Run, log) -> Callable[[np.ndarray, str], np.ndarray]:
    """(uint8 images, set name) -> raw probabilities of the run's model, one view per image."""
    from cifar.modeling.restore import load_head, load_model

    if run.model == "baseline":
        network = load_model(run)[1]
        return lambda pixels, _name: network.predict(pixels, batch_size=500, verbose=0)
    from cifar.config import load_config
    from cifar.modeling.features import extract_features
    from cifar.sources.assets import load_inception_weights

    config, head = load_config(run.hyperparameters), load_head(run)
    weights = load_inception_weights(run.backbone_source, log=log)

    def predict(pixels: np.ndarray, name: str) -> np.ndarray:
        features = extract_features(pixels, config, weights, split=f"robustness-{name}")
        return head.predict(features, batch_size=1000, verbose=0)

    return predict


def _pooled_members(run: Run) -> tuple[dict, np.ndarray, np.ndarray]:
    """An ensemble's clean and corrupted predictions: its members' stored ones (one view each),
    pooled with its weights."""
    from cifar.inference.ensemble import ensemble_weights, member_runs, pooled

    weights = ensemble_weights(run)[1]
    member_ids = [member.run_id for member in member_runs(run)]  # trained runs, never an ensemble
    members = [(member, read_robustness(load_run(member))) for member in member_ids]
    missing = [member for member, result in members if result is None]
    if missing:
        raise RunError(f"{run.run_id}'s members {missing} have no robustness results: evaluate them first")
    records = [result[0] for _member, result in members]
    same = ("test_indices", "seed")
    if any(record[key] != records[0][key] for record in records for key in same):
        raise RunError(f"{run.run_id}'s members were evaluated on different test images or seeds")
    predictions = pooled([result[1] for _member, result in members], weights)
    shape = (len(records[0]["test_indices"]), len(run.class_names))
    clean = pooled([_clean_predictions(load_run(m), shape) for m in member_ids], weights)
    indices = np.asarray(records[0]["test_indices"])
    labels = run.test_labels[indices]
    record = _record(indices, labels, records[0]["seed"], _accuracy(clean, labels), predictions)
    return record, clean, predictions


def _clean_predictions(run: Run, shape: tuple[int, int]) -> np.ndarray:
    try:
        return run_files.read_array(run.path / run_folder.ROBUSTNESS_CLEAN, shape)
    except run_files.FileError as error:
        raise RunError(
            f"{run.run_id} has no readable {run_folder.ROBUSTNESS_CLEAN} ({error}): evaluate it again"
        ) from None


def _record(indices, labels, seed: int, clean_accuracy: float, predictions: np.ndarray) -> dict:
    sets = [
        {"corruption": name, "severity": severity, "accuracy": _accuracy(probabilities, labels)}
        for (name, severity), probabilities in zip(corruption_sets(), predictions, strict=True)
    ]
    return {
        "images": len(indices),
        "seed": seed,
        "test_time_flip": False,
        "clean_accuracy": clean_accuracy,
        "mean_corruption_accuracy": float(np.mean([s["accuracy"] for s in sets])),
        "sets": sets,
        "test_indices": [int(i) for i in indices],
    }


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


# ----------------------------------------------------------------------------- reading


def read_robustness(run: Run) -> tuple[dict, np.ndarray] | None:
    """(robustness.json, predictions) of a run, None if it has none, or they do not pass the run
    files' checks (`cifar.store.run_files`: the test images are the run's own) or do not agree."""
    path = run.path / run_folder.ROBUSTNESS
    if not path.is_file():
        return None
    try:
        record = run_files.read_json(path, run_files.RobustnessFile)
        run_files.check_test_indices(record["test_indices"], len(run.test_labels))
        expected = (len(record["sets"]), len(record["test_indices"]), len(run.class_names))
        predictions = run_files.read_array(run.path / run_folder.ROBUSTNESS_PREDICTIONS, expected)
    except run_files.FileError:
        return None
    if record.get("predictions_sha256") not in (None, sha256_bytes(predictions.tobytes())):
        return None  # predictions of another evaluation, beside this json
    return record, predictions


def robustness_table(runs: list[Run]) -> pd.DataFrame:
    """One row per (run, corruption, severity) with its accuracy, for the runs that have results."""
    rows = []
    for run in runs:
        result = read_robustness(run)
        for entry in result[0]["sets"] if result else []:
            rows.append({"run": run.run_id, **entry})
    return pd.DataFrame(rows, columns=["run", "corruption", "severity", "accuracy"])


def accuracy_intervals(run: Run, record: dict, predictions: np.ndarray) -> dict[str, stats.Estimate]:
    """95 % intervals of a result's figures on its image subset: the clean accuracy (Wilson) and the
    mean accuracy over the corrupted sets (a bootstrap over the images of each image's share of the
    sets it survives); 1,000 images give about +/- 1.5 points where the accuracy is near 90 %."""
    labels = run.test_labels[np.asarray(record["test_indices"])]
    survived = (predictions.argmax(axis=-1) == labels).mean(axis=0)  # per image, over the sets
    return {
        "clean": stats.proportion(round(record["clean_accuracy"] * len(labels)), len(labels)),
        "corrupted": stats.bootstrap(np.mean, survived, vectorized=True),
    }


def corruption_errors(table: pd.DataFrame, clean: dict[str, float], reference: str = REFERENCE_RUN):
    """Per run: mean corruption accuracy, mCE and relative mCE against `reference` (Hendrycks and
    Dietterich 2019: CE_c = sum_s E_s,c / sum_s E_s,c(ref); relative: errors minus clean error),
    in %; the CE columns are NaN when the reference has no results."""
    errors = table.assign(error=1 - table["accuracy"])
    by_corruption = errors.groupby(["run", "corruption"])["error"].sum().unstack()
    rows = []
    for run, sums in by_corruption.iterrows():
        row = {"run": run, "clean accuracy": 100 * clean.get(run, np.nan)}
        row["mean corruption accuracy"] = 100 * table.loc[table["run"] == run, "accuracy"].mean()
        if reference in by_corruption.index:
            ref = by_corruption.loc[reference]
            row["mCE"] = 100 * (sums / ref).mean()
            shift = len(SEVERITIES) * (1 - clean.get(run, np.nan))
            ref_shift = len(SEVERITIES) * (1 - clean.get(reference, np.nan))
            row["relative mCE"] = 100 * ((sums - shift) / (ref - ref_shift)).mean()
        rows.append(row)
    columns = ["run", "clean accuracy", "mean corruption accuracy", "mCE", "relative mCE"]
    return pd.DataFrame(rows).reindex(columns=columns)
