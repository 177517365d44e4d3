"""Job processes: the one job slot, starting `python -m cifar ...`, and stopping a job.

The slot is an flock on `artifacts/jobs/slot.lock`, held by the job process itself (its open file
description), so the kernel frees it when the process dies, however it dies: a job runs exactly
while its slot is held, and no pid is ever checked against /proc. Whoever takes the lock writes
`slot.json` (run id, pid, process group, start time); it is only trusted while the lock is held.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cifar.atomic import write_json
from cifar.config import artifacts_dir
from cifar.store.run_files import SlotRecord, read_record

SLOT_FD_ENV = "CIFAR_JOB_SLOT_FD"  # names the slot descriptor a job process inherits
COMMAND = (sys.executable, "-m", "cifar")
REPO_ROOT = Path(__file__).resolve().parents[2]  # (this file: REPO_ROOT/cifar/store/processes.py)
LOCK_WAIT_SECONDS = 0.5  # a probe holds a shared lock for microseconds: retry that long

_children: dict[int, subprocess.Popen] = {}  # reaped by `slot_holder` (every poll): no zombies


def slot_path() -> Path:
    return artifacts_dir() / "jobs" / "slot.lock"


def _record_path() -> Path:
    return artifacts_dir() / "jobs" / "slot.json"


def open_slot() -> int:
    """A new open file description of the slot file (not inherited by other children)."""
    slot_path().parent.mkdir(parents=True, exist_ok=True)
    return os.open(slot_path(), os.O_RDWR | os.O_CREAT, 0o644)


def lock_slot(fd: int) -> bool:
    """Take the slot on `fd` (True), or False if another open file holds it."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def record_slot(run_id: str, pid: int | None, group: int | None = None, started: float | None = None) -> dict:
    """Name the job that holds the slot; only the holder writes this."""
    record = {"run_id": run_id, "pid": pid, "group": group, "started": started or time.time()}
    write_json(_record_path(), record)
    return record


def slot_holder() -> dict | None:
    """The record of the job holding the slot ({} if it has none yet), None if the slot is free."""
    reap()  # every poll comes here: finished jobs leave no zombies behind
    try:
        fd = os.open(slot_path(), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it; closing the descriptor lets go at once
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return read_record(_record_path(), SlotRecord)  # {} if unreadable: held, by an unnamed job


def inherited_slot() -> int | None:
    """The slot descriptor this process was started with (see `spawn`), else None."""
    value = os.environ.pop(SLOT_FD_ENV, "")  # not for this process's own children
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        if not os.path.samestat(os.fstat(fd), os.stat(slot_path())):
            return None  # a stale variable: that number is some other file now
    except OSError:
        return None
    os.set_inheritable(fd, False)
    return fd


def job_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def spawn(args: list[str], stdout, stdin=subprocess.DEVNULL, env=None, slot_fd=None) -> subprocess.Popen:
    """`python -m cifar <args>` in its own session (process group), in the repository root.

    With `slot_fd`, the child gets that descriptor (the same open file description, so the same
    lock) and its number in CIFAR_JOB_SLOT_FD.
    """
    env = dict(env or job_env())
    if slot_fd is not None:
        env[SLOT_FD_ENV] = str(slot_fd)
    process = subprocess.Popen(
        [*COMMAND, *args],
        stdout=stdout,
        stderr=subprocess.STDOUT,
        stdin=stdin,
        start_new_session=True,
        cwd=REPO_ROOT,
        env=env,
        pass_fds=() if slot_fd is None else (slot_fd,),
    )
    _children[process.pid] = process
    return process


def reap() -> None:
    """Collect the exit status of finished children (no zombies)."""
    for pid, process in list(_children.items()):
        if process.poll() is not None:
            _children.pop(pid, None)


def wait_or_kill(process: subprocess.Popen, grace_seconds: float) -> None:
    """Wait for a child of ours to exit by itself; SIGKILL it after `grace_seconds`."""
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    reap()


def group_of(pid: int) -> int | None:
    """The process group `pid` belongs to (None if it is gone)."""
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def pid_alive(pid: int | None) -> bool:
    """Does process `pid` exist (our own finished children are reaped first)?"""
    if not pid:
        return False
    reap()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(pid: int, group: int | None, running: Callable[[], bool], grace_seconds: float) -> None:
    """SIGTERM, then after `grace_seconds` SIGKILL, until `running()` is False.

    The whole process group when `pid` leads one (every job the dashboard starts does); a
    `python -m cifar train` started by hand inside someone else's group: that process only.
    """
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig) if group == pid else os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while running() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not running():
            break
    reap()
