"""The standby: a job process started ahead of time, with TensorFlow imported, waiting for its job.

Importing TensorFlow takes about 4 s of a 10-epoch head retrain on 2 cores. The Train page calls
`warm_up`, which starts `python -m cifar standby`: it imports TensorFlow and the trainer, then
waits for one command line on its stdin. It is started with a descriptor of the job slot file
(`cifar.store.processes`); `cifar.service.jobs.start_job` claims it, locks the slot on that shared descriptor,
and sends the job, so the standby holds the slot as a cold-started job would. Without a usable
standby (none, dead, about to exit idle, other environment, CIFAR_STANDBY=0) jobs start cold.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cifar.atomic import write_bytes
from cifar.config import artifacts_dir
from cifar.store import processes

# An unused standby exits (and gives its ~0.4 GB back) after this; while a Train tab stays open,
# the page starts the next one.
STANDBY_IDLE_SECONDS = 15 * 60
STANDBY_MARGIN_SECONDS = 60  # no job for a standby this close to its idle exit: it might miss it
_standby: dict = {}  # this process's standby: process, env it started with, started, files, slot_fd
_standby_lock = threading.Lock()  # Streamlit runs sessions in threads

# Set in this process by importing TensorFlow, Keras or matplotlib (the Classify page does), and
# by the same imports in every job: not a reason to discard a standby started before them.
_IMPORT_SIDE_EFFECTS = {
    "ENABLE_RUNTIME_UPTIME_TELEMETRY",
    "HDF5_PLUGIN_PATH",
    "KMP_DUPLICATE_LIB_OK",
    "KMP_INIT_AT_FORK",
    "MPLBACKEND",
    "TF2_BEHAVIOR",
    "TPU_ML_PLATFORM",
    "TPU_ML_PLATFORM_VERSION",
}


def standby_enabled() -> bool:
    return os.environ.get("CIFAR_STANDBY", "1") != "0"


@dataclass
class Standby:
    """A ready standby claimed for one job; `slot_fd` is the slot file it shares with us."""

    process: subprocess.Popen
    slot_fd: int
    log: Path  # its own log, until it takes a job

    def give(self, args: list[str], log: Path) -> bool:
        """Send `python -m cifar <args>` (output to `log`); False if it died (it is then stopped)."""
        try:
            self.process.stdin.write((json.dumps({"argv": args, "log": str(log)}) + "\n").encode())
            self.process.stdin.close()
        except OSError:
            self.stop()
            return False
        self.log.unlink(missing_ok=True)  # from now on it writes to the job's log
        return True

    def stop(self) -> None:
        """End of input: it exits by itself (killed if it does not within 2 s)."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        processes.wait_or_kill(self.process, grace_seconds=2)
        self.log.unlink(missing_ok=True)


def warm_up() -> bool:
    """Start a standby job process unless one waits already, a job runs, or CIFAR_STANDBY=0.

    True if a standby is there (starting or ready). Idempotent and cheap: pages call it on
    every rerun. A standby is only a speed-up: if it cannot start, jobs start cold.
    """
    if not standby_enabled():
        return False
    with _standby_lock:
        if _usable_standby() is not None:
            return True
        _stop_standby()
        if processes.slot_holder() is not None:  # its ~4 s of imports would slow the job down
            return False
        try:
            _start_standby()
        except OSError:
            _stop_standby()
            return False
        return True


def _start_standby() -> None:
    folder = artifacts_dir() / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    # Named after this process: two dashboards may share one artifacts folder.
    ready, log_file = folder / f"standby-{os.getpid()}.ready", folder / f"standby-{os.getpid()}.log"
    env = processes.job_env()
    _standby["slot_fd"] = processes.open_slot()
    with open(log_file, "wb") as log:
        args = ["standby", "--ready-file", str(ready), "--idle-seconds", str(STANDBY_IDLE_SECONDS)]
        process = processes.spawn(args, log, stdin=subprocess.PIPE, env=env, slot_fd=_standby["slot_fd"])
    _standby.update(process=process, env=env, started=time.time(), ready=ready, log=log_file)


def standby_ready() -> bool:
    """Has this process's standby finished its imports?"""
    with _standby_lock:
        process = _usable_standby()
        try:
            return process is not None and _standby["ready"].read_text().strip() == str(process.pid)
        except OSError:
            return False


def _comparable(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key not in _IMPORT_SIDE_EFFECTS}


def _usable_standby() -> subprocess.Popen | None:
    """The standby if it still waits, is not about to exit for idleness, and was started with
    the environment a job would get now."""
    process = _standby.get("process")
    if process is None or process.poll() is not None:
        return None
    if time.time() - _standby["started"] > STANDBY_IDLE_SECONDS - STANDBY_MARGIN_SECONDS:
        return None
    return process if _comparable(_standby["env"]) == _comparable(processes.job_env()) else None


def stop_standby() -> None:
    """Stop this process's standby, if any (it exits at the end of its input)."""
    with _standby_lock:
        _stop_standby()


def _stop_standby() -> None:
    """`stop_standby` for callers that hold `_standby_lock` already."""
    if "process" in _standby:
        Standby(_standby["process"], _standby["slot_fd"], _standby["log"]).stop()
    if "slot_fd" in _standby:
        os.close(_standby["slot_fd"])
    _standby.clear()


def claim_standby() -> Standby | None:
    """This process's standby if usable, now the caller's to give a job or stop; else None."""
    with _standby_lock:
        process = _usable_standby()
        if process is None:
            _stop_standby()
            return None
        claimed = Standby(process, _standby["slot_fd"], _standby["log"])
        _standby.clear()
        return claimed


def serve_standby(ready_file: Path, idle_seconds: float, run: Callable[[Sequence[str]], int]) -> int:
    """The standby's side (`python -m cifar standby`): import, wait for one job, `run` it."""
    import tensorflow as tf  # noqa: F401  (the expensive part, done before anyone waits)

    import cifar.training.train  # noqa: F401

    write_bytes(ready_file, str(os.getpid()).encode())
    readable, _, _ = select.select([sys.stdin], [], [], idle_seconds)
    line = sys.stdin.readline() if readable else ""
    Path(ready_file).unlink(missing_ok=True)
    if not line:  # idle for too long, or the dashboard went away
        return 0
    order = json.loads(line)
    log = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, sys.stdout.fileno())
    os.dup2(log, sys.stderr.fileno())
    os.close(log)
    print(f"job taken by standby process {os.getpid()} (TensorFlow was imported before it came)")
    sys.argv = [sys.argv[0], *order["argv"]]  # the run's config.json records this command line
    return run(order["argv"])
