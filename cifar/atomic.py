"""The one way files are written: to a temporary name beside the target, synced, then renamed.

A reader sees the old file or the new one, never half of one; a writer that fails or is killed
leaves no file that looks complete (on error the temporary file is removed; after a kill it is a
`.<name>.<token>.<pid>.part` file, which `cifar.feature_cache.prune_cache` recognises by its pid).
The run folder's final rename (`cifar.runs.RunWriter.publish`) is the one other rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

PART_SUFFIX = ".part"


@contextlib.contextmanager
def atomic_write(path: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to `path`.

    `suffix` is appended to the temporary name for writers that insist on an extension
    (Keras' `save_weights` wants `.weights.h5`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.{os.getpid()}{PART_SUFFIX}{suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path | str, data: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default))


def write_npy(path: Path | str, array: np.ndarray) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def writer_pid(part: Path) -> int | None:
    """The pid in a `.<name>.<token>.<pid>.part` file name, None if it holds none."""
    stem = part.name.split(PART_SUFFIX)[0]
    tail = stem.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else None
