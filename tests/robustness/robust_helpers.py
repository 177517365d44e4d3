"""Helpers shared by the robustness tests and `bench/soak.py` (no pytest import here)."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tests.pages.factory import synthetic_npz

REPO = Path(__file__).resolve().parents[2]


def write_tiny_npz(path: Path, n_train: int = 100, n_test: int = 30, seed: int = 0) -> Path:
    """`synthetic_npz` with test labels cycling through the classes by 3 (`tiny_test_labels`)."""
    return synthetic_npz(path, n_train, n_test, seed, y_test=tiny_test_labels(n_test))


def tiny_test_labels(n_test: int = 30) -> np.ndarray:
    return ((np.arange(n_test) * 3) % 10).astype(np.uint8)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.02, what: str = ""):
    """Poll `predicate` until it returns something truthy; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")


def rss_bytes() -> int:
    """Resident set size of this process (VmRSS in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current environment (private folders included) with the repository importable."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def encode(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def varied_uploads(n: int, seed: int = 0) -> list[bytes | np.ndarray]:
    """`n` small images of assorted formats, modes and sizes, as an upload or a camera gives them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    kinds = [
        ("PNG", "RGB", {}),
        ("JPEG", "RGB", {"quality": 85}),
        ("WEBP", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("GIF", "P", {}),
        ("BMP", "RGB", {}),
        ("TIFF", "RGB", {}),
        ("JPEG", "L", {}),
        ("PNG", "I;16", {}),
    ]
    out: list[bytes | np.ndarray] = []
    for i in range(n):
        width, height = (int(v) for v in rng.integers(8, 160, 2))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        if i % 10 == 9:  # camera frames and arrays, not only files
            out.append(pixels)
            continue
        fmt, mode, options = kinds[i % len(kinds)]
        image = Image.fromarray(pixels)
        if mode == "I;16":
            image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
        elif mode != "RGB":
            image = image.convert(mode)
        out.append(encode(image, fmt, **options))
    return out


def write_run_folder(
    root: Path,
    run_id: str,
    labels: np.ndarray,
    model: str = "baseline",
    finished: float | None = None,
    seed: int = 0,
) -> Path:
    """A complete, valid run folder (what `cifar.train` publishes, minus the weights)."""
    from cifar.config import CLASS_NAMES, parse_config

    rng = np.random.default_rng(seed)
    folder = root / "runs" / run_id
    folder.mkdir(parents=True)
    config = parse_config(model, {"epochs": 2}).model_dump()
    (folder / "config.json").write_text(
        json.dumps({"run_id": run_id, "config": config, "class_names": list(CLASS_NAMES), "limit": None})
    )
    pd.DataFrame(
        {
            "accuracy": [0.2, 0.4],
            "loss": [2.1, 1.7],
            "val_accuracy": [0.2, 0.3],
            "val_loss": [2.2, 1.9],
            "seconds": [1.0, 1.0],
        }
    ).to_csv(folder / "history.csv", index_label="epoch")
    probabilities = rng.dirichlet(np.ones(10), len(labels)).astype(np.float32)
    metrics = {
        "model": model,
        "train_accuracy": 0.4,
        "val_accuracy": 0.3,
        "test_accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
        "seconds": 2.0,
        "epochs_run": 2,
        "device": "CPU: fixture",
        "finished": time.time() if finished is None else finished,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    np.save(folder / "test_predictions.npy", probabilities)
    np.save(folder / "test_labels.npy", labels.astype(np.uint8))
    return folder
