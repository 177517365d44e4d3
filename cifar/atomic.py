"""The one way files are written: to a temporary name beside the target, synced, then renamed;
and the one rule for which existing paths a command may replace.

A reader sees the old file or the new one, never half of one; a writer that fails or is killed
leaves no file that looks complete (on error the temporary file is removed; after a kill it is a
`.<name>.<token>.<pid>.part` file, which `remove_stale_parts` and `cifar.modeling.feature_cache.prune_cache`
recognise by its pid). Files that belong together (a result and its predictions) are written as
a group: none replaces its target unless every one was written (`written_together`). A write that
fails for want of space or rights raises `WriteError`, one line saying so.
The run folder's final rename (`cifar.store.runs.RunWriter.publish`) is the one other rename.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

PART_SUFFIX = ".part"
# `.<name>[.<token>].<pid>.part<suffix>` (the token is absent in names older versions wrote)
PART_NAME = re.compile(r"^\.(?P<name>.+?)(?:\.[0-9a-f]{8})?\.(?P<pid>\d+)\.part(?:\.[^/]*)?$")
NEARLY_FULL_BYTES = 1 << 20  # a short write with less than this free: the disk filled up
STORAGE_PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file is larger than this file system allows",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "the device reported an input/output error",
}


class WriteError(OSError):
    """A write refused by the storage (a full disk, a read-only folder): nothing was replaced."""

    def __str__(self) -> str:
        return str(self.strerror)


# ----------------------------------------------------------------------------- writing


class Group:
    """Files written to temporary names, renamed into place by `written_together`."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []  # (temporary, target)

    def path(self, target: Path | str, suffix: str = "") -> Path:
        """A temporary path to write for `target`; `suffix` is appended for writers that insist
        on an extension (Keras' `save_weights` wants `.weights.h5`)."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.{os.getpid()}{PART_SUFFIX}{suffix}")
        self.pending.append((tmp, target))
        return tmp

    def write_bytes(self, target: Path | str, data: bytes) -> None:
        self.path(target).write_bytes(data)

    def write_json(self, target: Path | str, data: Any) -> None:
        self.path(target).write_text(json.dumps(data, indent=2, default=_json_default))

    def write_npy(self, target: Path | str, array: np.ndarray) -> None:
        with open(self.path(target), "wb") as handle:
            np.save(handle, array, allow_pickle=False)


@contextlib.contextmanager
def written_together() -> Iterator[Group]:
    """A `Group` whose files replace their targets once every one is written and synced; if any
    write fails, none is replaced and no temporary file is left. (The renames themselves, each
    atomic, come one after another: one refused by the file system stops the rest.)"""
    group = Group()
    try:
        yield group
        for tmp, _target in group.pending:
            _sync(tmp)
        for tmp, target in group.pending:
            replace(tmp, target)
    except Exception as error:  # noqa: BLE001 (TensorFlow's error on a full disk is no OSError)
        plain = _plainly(error, [target for _tmp, target in group.pending])
        if plain is error:
            raise
        raise plain from None
    finally:
        for tmp, _target in group.pending:
            discard(tmp)


@contextlib.contextmanager
def atomic_write(path: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write (a file, or a folder); on success it replaces `path`."""
    with written_together() as group:
        yield group.path(path, suffix)


def write_bytes(path: Path | str, data: bytes) -> None:
    with written_together() as group:
        group.write_bytes(path, data)


def write_json(path: Path | str, data: Any) -> None:
    with written_together() as group:
        group.write_json(path, data)


def write_npy(path: Path | str, array: np.ndarray) -> None:
    with written_together() as group:
        group.write_npy(path, array)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _sync(path: Path) -> None:
    """fsync a written file, or every file of a written folder."""
    files = [path]
    if path.is_dir():
        files = [Path(top) / name for top, _, names in os.walk(path) for name in names]
    for file in files:
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def replace(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; a folder replaces a folder: the old one is moved aside first, put
    back if the rename fails, and removed only once the new one is in place."""
    if not (tmp.is_dir() and target.is_dir() and not target.is_symlink()):
        os.replace(tmp, target)
        return
    aside = target.with_name(f".{target.name}.{secrets.token_hex(4)}.{os.getpid()}{PART_SUFFIX}.old")
    os.replace(target, aside)
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(aside, target)
        raise
    discard(aside)


def discard(path: Path) -> None:
    """Remove a temporary file or folder. A file is emptied first, which frees its space at once
    even while a library still holds it open (h5py after a failed write crashes at exit otherwise)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        if stat.S_ISREG(mode):
            os.truncate(path, 0)
        path.unlink()


def _plainly(error: Exception, targets: list[Path]) -> Exception:
    """A storage failure as one line naming what was not written; other errors as they are."""
    folder = targets[0].parent if targets else Path(".")
    code = getattr(error, "errno", None) if isinstance(error, OSError) else None
    problem = STORAGE_PROBLEMS.get(code)
    # numpy's short write ("N requested and M written") says no errno; TensorFlow raises its own
    # ("... No space left on device"): on a full disk, either is the disk.
    ours = isinstance(error, FileExistsError | FileNotFoundError)  # refusals with a message of their own
    said_by_a_library = (isinstance(error, OSError) and not ours) or "space" in str(error).lower()
    if problem is None and code is None and said_by_a_library and _nearly_full(folder):
        problem = STORAGE_PROBLEMS[errno.ENOSPC]
    if problem is None:
        return error
    names = ", ".join(target.name for target in targets) or "a file"
    return WriteError(
        code or errno.ENOSPC,
        f"cannot write {names} in {folder}: {problem}; nothing was replaced and no partial file is left",
    )


def _nearly_full(folder: Path) -> bool:
    try:
        info = os.statvfs(folder)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < NEARLY_FULL_BYTES


# ----------------------------------------------------------------------------- replacing


def check_overwrite(what: str, overwrite: bool) -> None:
    """FileExistsError saying `what` would be replaced, unless `overwrite`."""
    if not overwrite:
        raise FileExistsError(f"{what} exists already (--overwrite replaces it)")


def is_regular_file(path: Path) -> bool:
    """A plain file (no folder, link, device or FIFO): what a run's result files are."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def check_replace(
    path: Path | str, overwrite: bool, what: str = "", ours: Callable[[Path], bool] = is_regular_file
) -> None:
    """The one rule for "may this command write `path`": yes if nothing is there; if something is,
    only with `overwrite` and only when `ours` recognises it as something this program wrote.
    FileExistsError otherwise, saying what is there (`what`, by default the path)."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    check_overwrite(what or str(path), overwrite)
    if not ours(path):
        raise FileExistsError(f"{path} is not what this program writes: not replaced, even with --overwrite")


def writer_pid(part: Path) -> int | None:
    """The pid in a `.<name>.<token>.<pid>.part` file name, None if it holds none."""
    match = PART_NAME.match(part.name)
    return int(match["pid"]) if match else None


def remove_stale_parts(target: Path | str, alive: Callable[[int], bool]) -> list[Path]:
    """Remove the temporary files (or folders) of `target` that killed writers left: those whose
    pid is not `alive`; a folder such a writer had moved aside, with nothing in its place, is put
    back. Returns what was removed."""
    target = Path(target)
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = PART_NAME.match(entry.name)
        if match and match["name"] == target.name and not alive(int(match["pid"])):
            if entry.name.endswith(f"{PART_SUFFIX}.old") and not os.path.lexists(target):
                os.replace(entry, target)  # a folder moved aside by a writer killed before it put its own in
                continue
            discard(entry)
            removed.append(entry)
    return removed
