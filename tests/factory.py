"""What the tests make: a synthetic CIFAR-10, run folders written by `RunWriter` (no training),
encoded images, and a few helpers for job processes. No pytest here: the e2e test uses it too."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from cifar import atomic
from cifar.config import CLASS_NAMES, parse_config
from cifar.modeling.validation import write_calibration
from cifar.service import jobs
from cifar.sources.assets import Cifar10
from cifar.store import processes
from cifar.store.runs import RunWriter, load_run, partial_path
from dashboard import pages

REPO = Path(__file__).resolve().parent.parent
PAGES = {page.name: page.file for page in pages.PAGES}  # page name -> file, as the app registers them

# ----------------------------------------------------------------------------- the dataset


def tiny_cifar(n_train: int = 120, n_test: int = 40, seed: int = 0, y_test=None) -> Cifar10:
    """Random uint8 images with every class present: train labels cycle through 0..9, test labels
    by steps of 3 unless given."""
    rng = np.random.default_rng(seed)
    if y_test is None:
        y_test = np.arange(n_test) * 3 % 10
    return Cifar10(
        x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        y_train=(np.arange(n_train) % 10).astype(np.uint8),
        x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        y_test=np.asarray(y_test).astype(np.uint8),
    )


def npz_cifar() -> Cifar10:
    """The dataset of the `cifar_npz` fixture: 100 train images (a job's epoch takes a second) and
    100 test images (enough mistakes to fill a page of the Misclassified gallery)."""
    return tiny_cifar(100, 100)


def write_npz(path: Path, data: Cifar10 | None = None) -> Path:
    """`data` (by default `tiny_cifar()`) in the layout `CIFAR10_NPZ` expects."""
    data = tiny_cifar() if data is None else data
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    return path


def labels_of(npz: Path) -> np.ndarray:
    with np.load(npz) as archive:
        return archive["y_test"].astype(np.uint8)


# ----------------------------------------------------------------------------- run folders


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


@contextlib.contextmanager
def artifacts_at(root: Path):
    """`CIFAR_ARTIFACTS` pointing at `root` for the block (the e2e test writes for a server)."""
    before = os.environ.get("CIFAR_ARTIFACTS")
    os.environ["CIFAR_ARTIFACTS"] = str(root)
    try:
        yield
    finally:
        if before is None:
            del os.environ["CIFAR_ARTIFACTS"]
        else:
            os.environ["CIFAR_ARTIFACTS"] = before


def write_run(
    root: Path,
    run_id: str,
    model: str,
    labels: np.ndarray,
    accuracy: float,
    train_accuracy: float | None = None,
    epochs: int = 3,
    seed: int = 0,
    finished: float | None = None,
    val_labels: np.ndarray | None = None,
    training_seed: int = 0,
    **overrides,
) -> Path:
    """A run under `root/runs/`, written and published by `RunWriter` as `cifar.training.train` does
    (minus the weights). Train and validation accuracy differ from the test accuracy, so a page
    that shows one for another is caught. `seed` draws the predictions; `training_seed` is the
    config's."""
    config = parse_config(model, {"epochs": epochs, "seed": training_seed, **overrides}).model_dump()
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
    metrics = {
        "model": model,
        "train_accuracy": train_accuracy,
        "val_accuracy": max(0.0, test_accuracy - 0.03),
        "test_accuracy": test_accuracy,
        "seconds": 4.5 * epochs,
        "epochs_run": epochs,
        "device": "CPU: fixture",
        "finished": time.time() + seed if finished is None else finished,
    }
    with artifacts_at(root):
        writer = RunWriter(run_id).open()
        writer.write_json(
            "config.json",
            {"run_id": run_id, "config": config, "class_names": list(CLASS_NAMES), "limit": None},
        )
        writer.write_history(history)
        writer.write_npy("test_predictions.npy", probs)
        writer.write_npy("test_labels.npy", labels.astype(np.uint8))
        if val_labels is not None:  # validation predictions and calibration, as training writes them
            val = predictions(val_labels, accuracy, seed + 1000)
            write_calibration(writer.path, val, val_labels, probs, labels)
        writer.write_json("metrics.json", metrics)
        return writer.publish()


def write_ensemble(root: Path, labels: np.ndarray, second: str = "baseline") -> str:
    """Runs "a" (baseline) and "b" (`second`), calibrated, and their ensemble "ab"."""
    from cifar.inference.ensemble import make_ensemble

    val = np.arange(len(labels) // 2) % 10
    write_run(root, "a", "baseline", labels, 0.6, seed=1, val_labels=val)
    write_run(root, "b", second, labels, 0.7, seed=2, val_labels=val)
    with artifacts_at(root):
        make_ensemble("ab", ["a", "b"])
    return "ab"


def write_robustness(run_id: str, labels: np.ndarray, indices: np.ndarray, accuracy: float, seed: int = 0):
    """robustness.json and its predictions for a run (no model): every set at about `accuracy`,
    written as `cifar.analysis.robustness` writes them. Returns the (75, images, 10) predictions."""
    from cifar.analysis.robustness import _record, write_results

    run = load_run(run_id)
    sets = np.stack([predictions(labels[indices], accuracy, seed + k) for k in range(75)])
    clean = predictions(labels[indices], accuracy, seed + 1000)
    accuracy = float(np.mean(clean.argmax(1) == labels[indices]))
    write_results(run.path, _record(indices, labels[indices], 0, accuracy, sets), clean, sets)
    return sets


def write_frost_textures(seed: int = 3) -> list[np.ndarray]:
    """Stand-in frost textures where `python -m cifar fetch` puts the real ones (tests never download)."""
    from cifar.sources.assets import frost_textures_path

    rng = np.random.default_rng(seed)
    textures = [rng.integers(100, 256, (50, 70, 3), dtype=np.uint8) for _ in range(5)]
    with atomic.atomic_write(frost_textures_path()) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, *textures)
    return textures


def standard_runs(root: Path, labels: np.ndarray) -> list[str]:
    """The reference and best runs a fresh clone ships, as small fixtures."""
    write_run(root, "baseline-reference", "baseline", labels, 0.7, seed=1)
    write_run(root, "baseline-best", "baseline", labels, 0.8, seed=2, learning_rate=5e-4, augment=True)
    write_run(root, "transfer-reference", "transfer", labels, 0.85, seed=3, epochs=4)
    return ["baseline-reference", "baseline-best", "transfer-reference"]


def partial_run(run_id: str, **status) -> Path:
    """A job's unfinished run folder whose status.json says `status` (nothing else in it)."""
    folder = partial_path(run_id)
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps(status))
    return folder


# ----------------------------------------------------------------------------- uploads


def encode(image, fmt: str, **options) -> bytes:
    """A PIL image saved as `fmt`, as an upload brings it."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- processes and jobs


def wait_until(
    predicate: Callable[[], object], timeout: float = 60.0, interval: float = 0.05, what: str = ""
):
    """Poll `predicate` until it returns something truthy, and return that; AssertionError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def take_slot(run_id: str, pid: int | None = None) -> int:
    """Hold the job slot in this test process, as a job would; close the descriptor to let go."""
    fd = processes.open_slot()
    jobs.take_slot(run_id, fd, pid=pid or os.getpid())
    return fd


def holding(run_id: str) -> bool:
    """Has the fake job of `run_id` (conftest's `fake_jobs`) taken its slot over? It says so in its log."""
    log = jobs.log_path(run_id)
    return log.exists() and "holding the slot" in log.read_text()


def wait_for_job(run_id: str, condition, timeout: float = 120.0):
    """The job's status once `condition(status)` holds; on timeout, the error shows the job's log."""
    try:
        return wait_until(lambda: condition(jobs.job_status(run_id)) and jobs.job_status(run_id), timeout)
    except AssertionError:
        log = jobs.log_path(run_id)
        tail = log.read_text()[-3000:] if log.exists() else "(no log)"
        raise AssertionError(
            f"timed out waiting for job {run_id}: {jobs.job_status(run_id)}\n{tail}"
        ) from None


# ----------------------------------------------------------------------------- predictors


def recording_predictor(run, tta_flip: bool = False):
    """A `cifar.inference.predict.Predictor` of `run` (a Run, or anything with its run_id, model,
    class_names and temperature) whose network records what it is given and answers from the
    pixels' mean colour: its preprocessing, resolutions and calibration without TensorFlow."""
    import functools

    from scipy.special import softmax

    from cifar.inference.predict import Classifier, Predictor, run_resolutions

    seen: list[np.ndarray] = []

    def network(x):
        seen.append(np.array(x))
        mean = np.asarray(x, np.float64).mean(axis=(1, 2))
        return softmax(mean @ np.linspace(-3, 3, 30).reshape(3, 10), axis=1)

    predictor = Predictor.__new__(Predictor)
    Classifier.__init__(predictor, run, run_resolutions(run))
    predictor.tta_flip, predictor.full_side = tta_flip, 75 if run.model == "transfer" else None
    predictor.tta_translate = False
    from cifar.modeling.models import inception_scaling

    predictor._network, predictor._scale = network, inception_scaling()
    predictor._forward = lambda pixels: network(pixels.astype(np.float32) / 127.5 - 1)
    predictor._answers = functools.lru_cache(maxsize=8)(predictor._answer)
    return predictor, seen


def plain_id(value) -> str:
    """A parameter's test id in ASCII without backslashes: pytest cannot select a test whose id
    has one from its command line (mutmut runs single tests by id)."""
    return ascii(value).replace("\\", "(bs)")


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` and its sha256 (what must not change)."""
    import hashlib

    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
