"""Background training jobs: one at a time, each a separate process writing to its run folder.

The dashboard starts a job with `start_job`, polls `job_status`, and may `cancel_job`. A job is
`python -m cifar train ...` in its own session (process group), so the page never blocks and its
memory goes back to the system when the job ends. A job whose process vanished is reported as
failed, never as running forever.

Importing TensorFlow takes about 4 s of a 10-epoch head retrain on 2 cores. The Train page calls
`warm_up`, which starts a *standby* job process: it imports TensorFlow and the trainer, then
waits for one command line on its stdin. `start_job` hands the next job to it (same process
group, log and cancellation as a cold start) or, without a usable standby, starts cold.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cifar.atomic import write_json as write_json_atomic
from cifar.config import artifacts_dir, parse_config
from cifar.runs import (
    PARTIAL_SUFFIX,
    RunError,
    check_run_id,
    new_run_id,
    partial_path,
    process_start_time,
    read_status,
    run_path,
    runs_root,
)

_children: dict[int, subprocess.Popen] = {}  # reaped on poll, so finished jobs leave no zombies


class JobBusy(RuntimeError):
    """Another job is running; only one at a time."""


@dataclass(frozen=True)
class Job:
    run_id: str
    state: str  # starting, running, finished, failed, cancelled
    progress: float
    message: str
    phase: str = ""
    pid: int | None = None
    started: float | None = None
    updated: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")


def log_path(run_id: str) -> Path:
    """stdout and stderr of a job's process."""
    return artifacts_dir() / "jobs" / f"{check_run_id(run_id)}.log"


def job_history(run_id: str) -> pd.DataFrame | None:
    """Per-epoch history written so far by a running (or failed) job, None before epoch 1."""
    for folder in (partial_path(run_id), run_path(run_id)):
        try:
            return pd.read_csv(folder / "history.csv")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
    return None


def lock_path() -> Path:
    return artifacts_dir() / "jobs" / "active.json"


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True if `pid` runs, is not a zombie, and (given `start_time`) is not a recycled pid."""
    if not pid:
        return False
    if start_time is not None and process_start_time(pid) not in (None, start_time):
        return False
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _read_lock() -> dict:
    try:
        return json.loads(lock_path().read_text())
    except (OSError, ValueError):
        return {}


STALE_UNREADABLE_LOCK_SECONDS = 10  # a lock writer fills its file within microseconds


@contextlib.contextmanager
def _slot_guard():
    """Serialises checking, freeing and taking the job slot across processes (flock)."""
    path = artifacts_dir() / "jobs" / "start.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def active_job() -> Job | None:
    with _slot_guard():
        return _active_job()


def _active_job() -> Job | None:
    lock = _read_lock()
    if not lock:
        _remove_unreadable_lock()
        return None
    job = job_status(lock.get("run_id", ""))
    if job.active:
        return job
    lock_path().unlink(missing_ok=True)  # the job ended or vanished: free the slot
    return None


def _remove_unreadable_lock() -> None:
    """An empty or corrupt lock (its writer was killed mid-write) would block every job forever."""
    try:
        age = time.time() - lock_path().stat().st_mtime
    except OSError:
        return
    if age > STALE_UNREADABLE_LOCK_SECONDS and not _read_lock():
        lock_path().unlink(missing_ok=True)


def _take_lock(run_id: str) -> None:
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _slot_guard():
        _take_lock_guarded(run_id, path)


def _lock_record(run_id: str, pid: int) -> dict:
    """Who holds the job slot: the run, its process (with its start time) and when it began."""
    return {"run_id": run_id, "pid": pid, "pid_start": process_start_time(pid), "started": time.time()}


def _take_lock_guarded(run_id: str, path: Path) -> None:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            current = _active_job()
            if current is not None:
                raise JobBusy(
                    f"job {current.run_id} is running ({current.progress:.0%}); "
                    "wait for it or cancel it first"
                ) from None
            continue  # the stale lock was removed; try once more
        with os.fdopen(fd, "w") as handle:
            json.dump(_lock_record(run_id, os.getpid()), handle)
        return
    raise JobBusy("another job is starting; try again in a moment")


def start_job(model: str, overrides: dict, run_id: str | None = None) -> Job:
    """Validate the config, take the single job slot and start training in the background."""
    config = parse_config(model, overrides)  # ConfigError before anything starts
    run_id = run_id or new_run_id(model)
    if run_path(run_id).exists():
        raise RunError(f"run {run_id!r} exists already")
    _take_lock(run_id)
    try:
        shutil.rmtree(partial_path(run_id), ignore_errors=True)  # a killed earlier attempt's status
        args = ["train", model, "--run-id", run_id]
        for key, value in config.model_dump().items():
            if key != "model":
                args += [f"--{key}", str(value)]
        process = _hand_over(args, log_path(run_id)) or _start_cold(args, log_path(run_id))
        _children[process.pid] = process
        write_json_atomic(lock_path(), _lock_record(run_id, process.pid))
    except BaseException:
        lock_path().unlink(missing_ok=True)
        raise
    return Job(run_id, "starting", 0.0, "starting", pid=process.pid, started=time.time())


def _job_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def _spawn(args: list[str], stdout, stdin=subprocess.DEVNULL, env=None) -> subprocess.Popen:
    """`python -m cifar <args>` in its own session, in the repository root."""
    return subprocess.Popen(
        [sys.executable, "-m", "cifar", *args],
        stdout=stdout,
        stderr=subprocess.STDOUT,
        stdin=stdin,
        start_new_session=True,
        cwd=Path(__file__).resolve().parent.parent,
        env=env or _job_env(),
    )


def _start_cold(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:  # the child keeps its own copy of the descriptor
        return _spawn(args, handle)


# ----------------------------------------------------------------------------- the standby process

# An unused standby exits (and gives its ~0.4 GB back) after this; while a Train tab stays open,
# the page starts the next one.
STANDBY_IDLE_SECONDS = 15 * 60
STANDBY_MARGIN_SECONDS = 60  # no job for a standby this close to its idle exit: it might miss it
_standby: dict = {}  # this process's standby: {"process", "env" it started with, "started", files}
_standby_lock = threading.Lock()  # Streamlit runs sessions in threads


def standby_enabled() -> bool:
    return os.environ.get("CIFAR_STANDBY", "1") != "0"


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
        if active_job() is not None:  # its ~4 s of imports would slow the running job down
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
    env = _job_env()
    with open(log_file, "wb") as log:
        args = ["standby", "--ready-file", str(ready), "--idle-seconds", str(STANDBY_IDLE_SECONDS)]
        process = _spawn(args, log, stdin=subprocess.PIPE, env=env)
    _standby.update(process=process, env=env, started=time.time(), ready=ready, log=log_file)


def standby_ready() -> bool:
    """Has this process's standby finished its imports?"""
    with _standby_lock:
        process = _usable_standby()
        try:
            return process is not None and _standby["ready"].read_text().strip() == str(process.pid)
        except OSError:
            return False


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
    return process if _comparable(_standby["env"]) == _comparable(_job_env()) else None


def _stop_standby() -> None:
    process = _standby.get("process")
    if process is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()  # end of input: the standby exits by itself
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if "log" in _standby:
        _standby["log"].unlink(missing_ok=True)
    _standby.clear()


def _hand_over(args: list[str], log: Path) -> subprocess.Popen | None:
    """Give `python -m cifar <args>` to the standby; None if there is no usable one."""
    with _standby_lock:
        process = _usable_standby()
        if process is None:
            _stop_standby()
            return None
        try:
            process.stdin.write((json.dumps({"argv": args, "log": str(log)}) + "\n").encode())
            process.stdin.close()
        except OSError:  # it died just now
            _stop_standby()
            return None
        _standby["log"].unlink(missing_ok=True)  # from now on it writes to the job's log
        _standby.clear()
        return process


def serve_standby(ready_file: Path, idle_seconds: float = STANDBY_IDLE_SECONDS) -> int:
    """The standby's side (`python -m cifar standby`): import, wait for one job, become it."""
    import tensorflow as tf  # noqa: F401  (the expensive part, done before anyone waits)

    import cifar.train  # noqa: F401

    Path(ready_file).write_text(str(os.getpid()))
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
    from cifar.cli import main

    sys.argv = [sys.argv[0], *order["argv"]]  # the run's config.json records this command line
    return main(order["argv"])


def job_status(run_id: str) -> Job:
    """The state of a job from its run folder (finished) or partial folder (in progress)."""
    if run_path(run_id).is_dir():
        return Job(run_id, "finished", 1.0, "finished")
    status = read_status(partial_path(run_id))
    lock = _read_lock()
    source = status if status.get("pid") else (lock if lock.get("run_id") == run_id else {})
    pid, pid_start = source.get("pid"), source.get("pid_start")
    state = status.get("state", "starting" if pid else "failed")
    message = status.get("message", "")
    started = status.get("started") or lock.get("started")
    # "finished" in a partial folder: the writer died between its last status and the rename.
    if state in ("starting", "running", "finished") and not (
        pid_alive(pid, pid_start) and not _started_after(pid, started)
    ):
        if run_path(run_id).is_dir():  # it finished between the two checks
            return Job(run_id, "finished", 1.0, "finished")
        state, message = "failed", f"the job's process ended unexpectedly ({message or 'no output'})"
    return Job(
        run_id,
        state,
        float(status.get("progress", 0.0)),
        message,
        phase=status.get("phase", ""),
        pid=pid,
        started=started,
        updated=status.get("updated"),
    )


def _started_after(pid: int | None, started: float | None, slack: float = 5.0) -> bool:
    """True if process `pid` began after the job did: the job's pid was recycled."""
    if not pid or not isinstance(started, int | float):
        return False
    ticks = process_start_time(pid)
    try:
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, StopIteration, ValueError):
        return False
    if ticks is None:
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") > started + slack


def cancel_job(run_id: str, grace_seconds: float = 5.0) -> Job:
    """Stop a running job (its whole process group) and mark it cancelled."""
    job = job_status(run_id)
    if job.active and job.pid:
        try:
            os.killpg(job.pid, signal.SIGTERM)
            deadline = time.time() + grace_seconds
            while pid_alive(job.pid) and time.time() < deadline:
                time.sleep(0.1)
            if pid_alive(job.pid):
                os.killpg(job.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    folder = partial_path(run_id)
    if job.active and not folder.is_dir() and not run_path(run_id).is_dir():
        folder.mkdir(parents=True, exist_ok=True)  # cancelled while starting: not "failed"
    if folder.is_dir():
        status = read_status(folder)
        status.update(state="cancelled", message="cancelled by the user", updated=time.time())
        write_json_atomic(folder / "status.json", status)
    if _read_lock().get("run_id") == run_id:
        lock_path().unlink(missing_ok=True)
    return job_status(run_id)


def list_jobs() -> list[Job]:
    """Every unfinished or failed job (partial run folders), newest first."""
    root = runs_root()
    if not root.is_dir():
        return []
    jobs = []
    for path in root.iterdir():
        if path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX):
            run_id = path.name[1 : -len(PARTIAL_SUFFIX)]
            try:
                jobs.append(job_status(run_id))
            except RunError:
                continue
    return sorted(jobs, key=lambda job: job.started or 0, reverse=True)


def discard_job(run_id: str) -> None:
    """Remove what a failed or cancelled job left behind."""
    import shutil

    job = job_status(run_id)
    if job.active:
        raise JobBusy(f"job {run_id} is still running; cancel it first")
    shutil.rmtree(partial_path(run_id), ignore_errors=True)
