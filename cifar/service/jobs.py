"""Background training jobs: one at a time, each a separate process writing to its run folder.

The dashboard starts a job with `start_job(config)`, polls `job_status`, and may `cancel_job`. A
job is `python -m cifar train ...` in its own session (process group), so the page never blocks
and its memory goes back to the system when the job ends. The job process holds the one job slot
(`cifar.store.processes`) until it exits; `python -m cifar train` started by hand takes the same slot
(`hold_slot`). A job whose process is gone while its run folder says otherwise is "failed".

When the Train page warmed up a standby process (`cifar.service.standby`), the job runs in it.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cifar.atomic import write_json
from cifar.config import LARGEST_SEED, MOST_SEEDS, BaselineConfig, TransferConfig, artifacts_dir
from cifar.modeling.distribute import this_worker
from cifar.service import standby
from cifar.store import processes, run_folder
from cifar.store.run_files import read_history
from cifar.store.runs import (
    PARTIAL_SUFFIX,
    RunError,
    check_run_id,
    new_run_id,
    partial_path,
    read_status,
    run_path,
    runs_root,
)

# A non-chief worker's partial folder (`cifar.training.train.train`).
WORKER_COPY = re.compile(r"\.worker\d+$")
_start_lock = threading.Lock()  # Streamlit runs sessions in threads: one start at a time here


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
        history = read_history(folder / run_folder.HISTORY)
        if not history.empty:
            return history
    return None


# ----------------------------------------------------------------------------- the slot


def _holder_of(run_id: str) -> dict | None:
    """The slot's record if the slot is held for `run_id`."""
    holder = processes.slot_holder()
    return holder if holder and holder.get("run_id") == run_id else None


def _busy_message() -> str:
    run_id = (processes.slot_holder() or {}).get("run_id")
    try:
        progress = job_status(run_id).progress
    except RunError:  # no record yet (or not ours to read)
        return "another job is starting; try again in a moment"
    return f"job {run_id} is running ({progress:.0%}); wait for it, or cancel it on the Train page"


def take_slot(run_id: str, fd: int, pid: int | None = None) -> dict:
    """Take the job slot on descriptor `fd` for `run_id` (run by `pid`), or raise JobBusy.

    From then on `fd`'s open file holds the slot: closing its last copy frees it. Returns the
    slot's record.
    """
    if not processes.lock_slot(fd):
        raise JobBusy(_busy_message())
    return processes.record_slot(run_id, pid, processes.group_of(pid) if pid else None)


def hold_slot(run_id: str) -> None:
    """Hold the job slot for `run_id` until this process exits (`python -m cifar train`).

    A job started by the dashboard inherits the slot; one started by hand takes it, or gets
    JobBusy naming the running job. Non-chief workers of a TF_CONFIG cluster hold nothing.
    """
    check_run_id(run_id)
    if not this_worker().is_chief:
        return
    fd = processes.inherited_slot()
    if fd is not None and _holder_of(run_id) and processes.lock_slot(fd):
        return  # the dashboard took it for this run
    fd = processes.open_slot() if fd is None else fd
    try:
        take_slot(run_id, fd, pid=os.getpid())  # stays open, and locked, until this process exits
    except JobBusy:
        os.close(fd)
        raise


def seed_runs(run_id: str, seed: int, count: int = 1) -> dict[int, str]:
    """The run ids of a seed group, by seed: `run_id` for `seed`, then `run_id-seedS`."""
    if not 1 <= count <= MOST_SEEDS:
        raise ValueError(f"seeds: expected 1..{MOST_SEEDS}, got {count}")
    if seed + count - 1 > LARGEST_SEED:  # refused now, not after the first seeds have trained
        raise ValueError(f"seeds: {count} seeds from {seed} pass the largest seed, {LARGEST_SEED}")
    check_run_id(run_id)
    return {s: run_id if s == seed else check_run_id(f"{run_id}-seed{s}") for s in range(seed, seed + count)}


def move_slot(held_for: str, run_id: str) -> None:
    """The slot held for `held_for` by this process now names `run_id` (the next seed's run), and
    the job's log is found under `run_id` too (a link: one process, one log)."""
    holder = _holder_of(held_for)
    if holder and held_for != run_id:
        log, link = log_path(held_for), log_path(run_id)
        if log.exists() and not link.exists():
            link.symlink_to(log.resolve())
        processes.record_slot(run_id, holder.get("pid"), holder.get("group"), holder.get("started"))


def active_job() -> Job | None:
    """The job holding the slot, None if no job runs."""
    run_id = (processes.slot_holder() or {}).get("run_id")
    try:
        job = job_status(run_id)
    except RunError:
        return None
    return job if job.active else None


# ----------------------------------------------------------------------------- starting


def train_args(config: BaselineConfig | TransferConfig, run_id: str, seeds: int = 1) -> list[str]:
    """The `python -m cifar` arguments that train `config` (every field, so the log shows all)."""
    args = ["train", config.model, "--run-id", run_id] + (["--seeds", str(seeds)] if seeds > 1 else [])
    for key, value in config.model_dump().items():
        if key != "model":
            args += [f"--{key}", str(value)]
    return args


def start_job(config: BaselineConfig | TransferConfig, run_id: str | None = None, seeds: int = 1) -> Job:
    """Take the single job slot and train `config` in the background (in the standby if ready);
    with `seeds` > 1, the seed group one run after another (`seed_runs`)."""
    if not isinstance(config, BaselineConfig | TransferConfig):
        raise TypeError(f"start_job needs a BaselineConfig or TransferConfig, got {type(config).__name__}")
    run_id = check_run_id(run_id or new_run_id(config.model))
    for seed_run_id in seed_runs(run_id, config.seed, seeds).values():
        if run_path(seed_run_id).exists():
            raise RunError(f"run {seed_run_id!r} exists already")
    with _start_lock:
        if processes.slot_holder() is not None:
            raise JobBusy(_busy_message())
        waiting = standby.claim_standby()
        fd = waiting.slot_fd if waiting else processes.open_slot()
        try:
            started = take_slot(run_id, fd)["started"]
            shutil.rmtree(partial_path(run_id), ignore_errors=True)  # a killed earlier attempt's
            process = _launch(train_args(config, run_id, seeds), log_path(run_id), fd, waiting)
            processes.record_slot(run_id, process.pid, process.pid, started)
        except BaseException:
            if waiting is not None:
                waiting.stop()
            raise
        finally:
            os.close(fd)  # the job process holds the slot from now on
    return Job(run_id, "starting", 0.0, "starting", pid=process.pid, started=started)


def _launch(args: list[str], log: Path, fd: int, waiting: standby.Standby | None):
    """The job's process: the standby given the job, else a new one (inheriting `fd`)."""
    if waiting is not None and waiting.give(args, log):
        return waiting.process
    with open(log, "wb") as handle:  # the child keeps its own copy of the descriptor
        return processes.spawn(args, handle, slot_fd=fd)


# ----------------------------------------------------------------------------- state


def job_status(run_id: str) -> Job:
    """The state of a job from its run folder (finished) or partial folder, and the slot."""
    if run_path(run_id).is_dir():
        return Job(run_id, "finished", 1.0, "finished")
    holder = _holder_of(run_id)
    status = read_status(partial_path(run_id))
    if holder and status.get("started", 0) < holder.get("started", 0):
        status = {}  # left by an earlier attempt under this id; this one has not written yet
    # `start_job` writes the log (cold start) or hands it to the standby before releasing its lock
    started_once = holder or log_path(run_id).exists()
    state = status.get("state", "starting" if started_once else "failed")
    message = status.get("message", "")
    # "finished" in a partial folder: the writer died between its last status and the rename.
    if not holder and state in ("starting", "running", "finished"):
        if run_path(run_id).is_dir():  # it finished between the two checks
            return Job(run_id, "finished", 1.0, "finished")
        state, message = "failed", f"the job's process ended unexpectedly ({message or 'no output'})"
    return Job(
        run_id,
        state,
        float(status.get("progress", 0.0)),
        message,
        phase=status.get("phase", ""),
        pid=(holder or status).get("pid"),
        started=status.get("started") or (holder or {}).get("started"),
        updated=status.get("updated"),
    )


HAND_OVER_SECONDS = 2.0  # `start_job` names the job's pid within milliseconds of taking the slot


def _started_holder(run_id: str) -> dict | None:
    """The slot's record for `run_id` once it names the job's process (a cancel clicked while
    `start_job` is still launching it waits for that, so that it stops the right process)."""
    deadline = time.monotonic() + HAND_OVER_SECONDS
    holder = _holder_of(run_id)
    while holder is not None and not holder.get("pid") and time.monotonic() < deadline:
        time.sleep(0.02)
        holder = _holder_of(run_id)
    return holder


def cancel_job(run_id: str, grace_seconds: float = 5.0) -> Job:
    """Stop a running job (its whole process group) and mark it cancelled."""
    job = job_status(run_id)
    holder = _started_holder(run_id) if job.active else None
    if holder and holder.get("pid"):
        try:
            processes.stop(
                holder["pid"], holder.get("group"), lambda: _holder_of(run_id) is not None, grace_seconds
            )
        except PermissionError:
            raise JobBusy(f"job {run_id} runs as another user; this process may not stop it") from None
    folder = partial_path(run_id)
    if job.active and not folder.is_dir() and not run_path(run_id).is_dir():
        folder.mkdir(parents=True, exist_ok=True)  # cancelled while starting: not "failed"
    if folder.is_dir():
        status = read_status(folder)
        status.update(state="cancelled", message="cancelled by the user", updated=time.time())
        write_json(folder / run_folder.STATUS, status)
    return job_status(run_id)


def list_jobs() -> list[Job]:
    """Every unfinished or failed job (partial run folders), newest first.

    Non-chief workers of a TF_CONFIG cluster (`<id>.workerN`) hold no slot and publish nothing:
    they are the chief's job, not jobs of their own (see `cifar.training.train.train`).
    """
    root = runs_root()
    if not root.is_dir():
        return []
    jobs = []
    for path in root.iterdir():
        if path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX):
            if WORKER_COPY.search(path.name[: -len(PARTIAL_SUFFIX)]):
                continue
            try:
                jobs.append(job_status(path.name[1 : -len(PARTIAL_SUFFIX)]))
            except RunError:
                continue
    return sorted(jobs, key=lambda job: job.started or 0, reverse=True)


def shown_jobs() -> list[Job]:
    """What `python -m cifar jobs` shows: the job holding the slot first (even before its run
    folder exists, as while a `python -m cifar train` loads TensorFlow), then `list_jobs`."""
    listed = list_jobs()
    holder = active_job()
    if holder is None or holder.run_id in {job.run_id for job in listed}:
        return listed
    return [holder, *listed]


def discard_job(run_id: str) -> None:
    """Remove what a failed or cancelled job left behind."""
    if job_status(run_id).active:
        raise JobBusy(f"job {run_id} is still running; cancel it on the Train page first")
    shutil.rmtree(partial_path(run_id), ignore_errors=True)
