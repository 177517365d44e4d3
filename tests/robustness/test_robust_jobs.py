"""Background jobs: a SIGKILL at any moment leaves no run that looks complete, the job reads as
failed, the slot is freed, and the next start works; two simultaneous starts never both run.

Real jobs (`python -m cifar train baseline` on the tiny CIFAR10_NPZ, marked slow) are used where
the moment of the kill matters; races for the slot use the fake job of `tests/conftest.py`; the
run-folder protocol itself is replayed step by step without TensorFlow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from cifar.config import BaselineConfig
from cifar.service import jobs
from cifar.store import processes
from cifar.store.processes import pid_alive, slot_holder
from cifar.store.runs import RunWriter, list_runs, load_run, partial_path, read_status, run_path
from tests.factory import REPO, dead_pid, labels_of, wait_until

LONG_JOB = BaselineConfig(epochs=50, validation_size=20)  # about 10 s on the tiny data set
JOB_TIMEOUT = 120


def status(run_id: str) -> dict:
    return read_status(partial_path(run_id))


def kill(job: jobs.Job) -> None:
    os.killpg(job.pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(job.pid), 30, what=f"pid {job.pid} to die")


def assert_failed_and_invisible(run_id: str) -> None:
    job = jobs.job_status(run_id)
    assert job.state == "failed", job
    assert "ended unexpectedly" in job.message, job.message
    assert not job.active
    problems: list[str] = []
    assert run_id not in [run.run_id for run in list_runs(with_problems=problems)]
    assert problems == []  # a partial folder is not a broken run, just an unfinished job
    assert not run_path(run_id).exists()
    assert jobs.active_job() is None and slot_holder() is None  # the kernel freed the slot
    if partial_path(run_id).exists():
        assert [j.state for j in jobs.list_jobs() if j.run_id == run_id] == ["failed"]


MOMENTS = {
    "right after start (interpreter starting)": lambda run_id: True,
    "loading data (status running)": lambda run_id: status(run_id).get("state") == "running",
    "training (after the first epoch)": lambda run_id: (partial_path(run_id) / "history.csv").exists(),
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigkill_at_any_moment_leaves_no_complete_run(moment, cifar_npz, own_jobs):
    victim = jobs.start_job(LONG_JOB, run_id="victim")
    assert victim.pid and slot_holder()["pid"] == victim.pid
    wait_until(lambda: MOMENTS[moment]("victim"), JOB_TIMEOUT, what=moment)
    assert jobs.job_status("victim").active
    kill(victim)
    assert_failed_and_invisible("victim")

    # The next start works: no JobBusy, it gets to training, and it can be cancelled.
    following = jobs.start_job(LONG_JOB, run_id="following")
    wait_until(lambda: status("following").get("state") == "running", JOB_TIMEOUT, what="running")
    assert jobs.active_job().run_id == "following"
    with pytest.raises(jobs.JobBusy):
        jobs.start_job(LONG_JOB, run_id="third")
    cancelled = jobs.cancel_job("following", grace_seconds=10)
    assert cancelled.state == "cancelled"
    assert not pid_alive(following.pid)
    assert jobs.active_job() is None
    assert [run.run_id for run in list_runs()] == []


@pytest.mark.slow
def test_killed_job_reruns_cleanly_under_the_same_id(cifar_npz, own_jobs):
    victim = jobs.start_job(LONG_JOB, run_id="again")
    wait_until(lambda: (partial_path("again") / "history.csv").exists(), JOB_TIMEOUT, what="an epoch")
    kill(victim)
    assert_failed_and_invisible("again")

    rerun = jobs.start_job(BaselineConfig(epochs=1, validation_size=20), run_id="again")
    wait_until(lambda: run_path("again").is_dir() or not pid_alive(rerun.pid), JOB_TIMEOUT, what="the rerun")
    log = jobs.log_path("again").read_text()
    wait_until(lambda: not pid_alive(rerun.pid), 30, what="the rerun's process to exit")
    assert jobs.job_status("again").state == "finished", log[-2000:]
    run = load_run("again")
    assert run.test_predictions.shape == (len(labels_of(cifar_npz)), 10)
    assert len(run.history) == 1  # the killed attempt's epochs are gone
    assert not partial_path("again").exists()
    assert [job.run_id for job in jobs.list_jobs()] == []
    assert jobs.active_job() is None


@pytest.mark.slow
def test_restarting_a_failed_run_id_is_not_reported_failed(cifar_npz, own_jobs):
    victim = jobs.start_job(LONG_JOB, run_id="restart")
    wait_until(lambda: status("restart").get("state") == "running", JOB_TIMEOUT, what="running")
    kill(victim)
    assert jobs.job_status("restart").state == "failed"
    jobs.start_job(LONG_JOB, run_id="restart")
    with pytest.raises(jobs.JobBusy):  # the restarted job holds the slot
        jobs.start_job(LONG_JOB, run_id="second")
    assert jobs.job_status("restart").state == "starting"


# ----------------------------------------------------------------------------- the folder protocol


def test_every_step_of_writing_a_run_is_invisible_until_published():
    """Replays train()'s writes in order; after each one the writer 'dies' (its pid is dead)."""
    pid = dead_pid()
    writer = RunWriter("steps").open(pid=pid)
    steps = [
        lambda: writer.status("running", phase="training", progress=0.5),
        lambda: writer.write_history(pd.DataFrame({"loss": [1.0], "accuracy": [0.5]})),
        lambda: (writer.path / "model.weights.h5").write_bytes(b"\0" * 64),
        lambda: writer.write_json("config.json", {"config": {"model": "baseline"}}),
        lambda: writer.write_npy("test_predictions.npy", np.full((30, 10), 0.1, np.float32)),
        lambda: writer.write_npy("test_labels.npy", np.zeros(30, np.uint8)),
        lambda: writer.write_json("metrics.json", {"model": "baseline", "finished": time.time()}),
    ]
    for index, step in enumerate(steps):
        step()
        assert list_runs() == [], f"visible after step {index}"
        job = jobs.job_status("steps")
        assert job.state == "failed", (index, job)
        assert not run_path("steps").exists()
    assert not [p for p in writer.path.iterdir() if p.name.endswith(".part")]
    writer.publish()
    assert [run.run_id for run in list_runs()] == ["steps"]
    assert jobs.job_status("steps").state == "finished"


def test_kill_between_finished_status_and_rename_is_failed():
    writer = RunWriter("halfway").open(pid=dead_pid())
    writer.status("finished", finished=time.time())  # what publish() does first
    assert not run_path("halfway").exists()
    assert jobs.job_status("halfway").state == "failed"


def test_recycled_pid_does_not_keep_a_dead_job_running():
    """The job's pid now belongs to another process, named by its folder and the slot's record:
    no one holds the slot, so the job is failed (no pid is trusted)."""
    unrelated = subprocess.Popen(["sleep", "30"])
    try:
        writer = RunWriter("recycled").open(pid=unrelated.pid)
        writer.status("running", started=time.time() - 3600)  # the job began an hour ago
        processes.slot_path().parent.mkdir(parents=True, exist_ok=True)
        processes.slot_path().with_name("slot.json").write_text(
            json.dumps({"run_id": "recycled", "pid": unrelated.pid, "started": time.time() - 3600})
        )
        assert jobs.job_status("recycled").state == "failed"
        assert jobs.active_job() is None
    finally:
        unrelated.kill()
        unrelated.wait()


# ----------------------------------------------------------------------------- two starts at once


def race(n_threads: int, run_ids: list[str]) -> tuple[list[jobs.Job], list[Exception]]:
    barrier = threading.Barrier(n_threads)
    started: list[jobs.Job] = []
    refused: list[Exception] = []

    def start(run_id: str) -> None:
        barrier.wait()
        try:
            started.append(jobs.start_job(LONG_JOB, run_id=run_id))
        except jobs.JobBusy as error:
            refused.append(error)

    threads = [threading.Thread(target=start, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return started, refused


@pytest.mark.usefixtures("fake_jobs")
@pytest.mark.parametrize("same_id", [False, True], ids=["different run ids", "same run id"])
def test_two_simultaneous_starts_one_runs_the_other_is_busy(same_id):
    for attempt in range(4):
        ids = [f"race-{attempt}"] * 2 if same_id else [f"race-{attempt}-a", f"race-{attempt}-b"]
        started, refused = race(2, ids)
        assert len(started) == 1 and len(refused) == 1, (attempt, started, refused)
        assert slot_holder()["run_id"] == started[0].run_id and slot_holder()["pid"] == started[0].pid
        assert jobs.active_job().run_id == started[0].run_id
        kill(started[0])
        assert jobs.active_job() is None


@pytest.mark.usefixtures("fake_jobs")
def test_simultaneous_starts_after_a_dead_job_start_only_one(monkeypatch):
    """A dead job's record and partial folder are left; three starts race past them."""
    processes.slot_path().parent.mkdir(parents=True, exist_ok=True)
    processes.slot_path().touch()
    record = {"run_id": "dead", "pid": dead_pid(), "started": 0}
    processes.slot_path().with_name("slot.json").write_text(json.dumps(record))
    RunWriter("dead").open(pid=record["pid"])
    real_status = jobs.job_status

    def slow_status(run_id):  # a busy disk or a GIL switch while the stale lock is checked
        time.sleep(0.2)
        return real_status(run_id)

    monkeypatch.setattr(jobs, "job_status", slow_status)
    started, refused = race(3, ["stale-a", "stale-b", "stale-c"])
    for job in started:
        kill(job)
    assert len(started) == 1, f"{len(started)} jobs started at once: {[j.run_id for j in started]}"
    assert len(refused) == 2
    assert real_status("dead").state == "failed"


DASHBOARD = """
import sys, time
from cifar.service import jobs
from cifar.store import processes
from cifar.config import BaselineConfig
processes.COMMAND = (sys.executable, "-c", "import time; time.sleep(120)")
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
try:
    print("started", jobs.start_job(BaselineConfig(), run_id=sys.argv[2]).pid)
except jobs.JobBusy as error:
    print("busy", error)
"""


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_two_dashboard_processes_starting_at_once_start_one_job():
    """Two dashboards (processes, not threads) click Start in the same instant."""
    for attempt in range(3):
        go = time.time() + 3  # both are past their imports by then
        dashboards = [
            subprocess.Popen(
                [sys.executable, "-c", DASHBOARD, str(go), f"two-{attempt}-{i}"],
                cwd=REPO,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        answers = sorted(d.communicate(timeout=60)[0].split()[0] for d in dashboards)
        holder = slot_holder()
        try:
            assert answers == ["busy", "started"], (attempt, answers)
        finally:
            if holder:
                os.killpg(holder["pid"], signal.SIGKILL)
        wait_until(lambda: slot_holder() is None, 30, what="the slot to be freed")
