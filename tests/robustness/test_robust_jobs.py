"""Background jobs: a SIGKILL at any moment leaves no run that looks complete, the job reads as
failed, the slot is freed, and the next start works; two simultaneous starts never both run.

Real jobs (`python -m cifar train baseline` on the tiny CIFAR10_NPZ) are used where the kill
matters; the run-folder protocol itself is replayed step by step without TensorFlow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pandas as pd
import pytest
from robust_helpers import wait_for

from cifar import jobs
from cifar.runs import RunWriter, list_runs, load_run, partial_path, read_status, run_path

LONG_JOB = {"epochs": 50, "validation_size": 20}  # about 10 s on the tiny data set
JOB_TIMEOUT = 120


@pytest.fixture
def own_jobs():
    """Kill (by process group) every job process this test started and left running."""
    before = set(jobs._children)
    yield
    for pid, process in list(jobs._children.items()):
        if pid not in before and process.poll() is None:
            os.killpg(pid, signal.SIGKILL)
            process.wait(timeout=30)


def status(run_id: str) -> dict:
    return read_status(partial_path(run_id))


def kill(job: jobs.Job) -> None:
    os.killpg(job.pid, signal.SIGKILL)
    wait_for(lambda: not jobs.pid_alive(job.pid), 30, what=f"pid {job.pid} to die")


def assert_failed_and_invisible(run_id: str) -> None:
    job = jobs.job_status(run_id)
    assert job.state == "failed", job
    assert "ended unexpectedly" in job.message, job.message
    assert not job.active
    problems: list[str] = []
    assert run_id not in [run.run_id for run in list_runs(with_problems=problems)]
    assert problems == []  # a partial folder is not a broken run, just an unfinished job
    assert not run_path(run_id).exists()
    assert jobs.active_job() is None  # the slot is free again
    assert not jobs.lock_path().exists()
    if partial_path(run_id).exists():
        assert [j.state for j in jobs.list_jobs() if j.run_id == run_id] == ["failed"]


MOMENTS = {
    "right after start (interpreter starting)": lambda run_id: True,
    "loading data (status running)": lambda run_id: status(run_id).get("state") == "running",
    "training (after the first epoch)": lambda run_id: (partial_path(run_id) / "history.csv").exists(),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigkill_at_any_moment_leaves_no_complete_run(moment, cifar_npz, own_jobs):
    victim = jobs.start_job("baseline", LONG_JOB, run_id="victim")
    assert victim.pid and jobs.lock_path().exists()
    wait_for(lambda: MOMENTS[moment]("victim"), JOB_TIMEOUT, what=moment)
    assert jobs.job_status("victim").active
    kill(victim)
    assert_failed_and_invisible("victim")

    # The next start works: no JobBusy, it gets to training, and it can be cancelled.
    following = jobs.start_job("baseline", LONG_JOB, run_id="following")
    wait_for(lambda: status("following").get("state") == "running", JOB_TIMEOUT, what="running")
    assert jobs.active_job().run_id == "following"
    with pytest.raises(jobs.JobBusy):
        jobs.start_job("baseline", LONG_JOB, run_id="third")
    cancelled = jobs.cancel_job("following", grace_seconds=10)
    assert cancelled.state == "cancelled"
    assert not jobs.pid_alive(following.pid)
    assert jobs.active_job() is None
    assert [run.run_id for run in list_runs()] == []


def test_killed_job_reruns_cleanly_under_the_same_id(cifar_npz, own_jobs):
    victim = jobs.start_job("baseline", LONG_JOB, run_id="again")
    wait_for(lambda: (partial_path("again") / "history.csv").exists(), JOB_TIMEOUT, what="an epoch")
    kill(victim)
    assert_failed_and_invisible("again")

    rerun = jobs.start_job("baseline", {"epochs": 1, "validation_size": 20}, run_id="again")
    wait_for(
        lambda: run_path("again").is_dir() or rerun.pid not in jobs._children, JOB_TIMEOUT, what="the rerun"
    )
    log = (jobs.lock_path().parent / "again.log").read_text()
    wait_for(lambda: not jobs.pid_alive(rerun.pid), 30, what="the rerun's process to exit")
    assert jobs.job_status("again").state == "finished", log[-2000:]
    run = load_run("again")
    assert run.test_predictions.shape == (30, 10)
    assert len(run.history) == 1  # the killed attempt's epochs are gone
    assert not partial_path("again").exists()
    assert [job.run_id for job in jobs.list_jobs()] == []
    assert jobs.active_job() is None


def test_restarting_a_failed_run_id_is_not_reported_failed(cifar_npz, own_jobs):
    victim = jobs.start_job("baseline", LONG_JOB, run_id="restart")
    wait_for(lambda: status("restart").get("state") == "running", JOB_TIMEOUT, what="running")
    kill(victim)
    assert jobs.job_status("restart").state == "failed"
    jobs.start_job("baseline", LONG_JOB, run_id="restart")
    with pytest.raises(jobs.JobBusy):  # the restarted job holds the slot
        jobs.start_job("baseline", LONG_JOB, run_id="second")
    assert jobs.job_status("restart").state == "starting"


# ----------------------------------------------------------------------------- the folder protocol


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


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
    unrelated = subprocess.Popen(["sleep", "30"])
    try:
        writer = RunWriter("recycled").open(pid=unrelated.pid)
        writer.status("running", started=time.time() - 3600)  # the job began an hour ago
        jobs.lock_path().parent.mkdir(parents=True, exist_ok=True)
        jobs.lock_path().write_text(json.dumps({"run_id": "recycled", "pid": unrelated.pid}))
        assert jobs.job_status("recycled").state == "failed"
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
            started.append(jobs.start_job("baseline", LONG_JOB, run_id=run_id))
        except jobs.JobBusy as error:
            refused.append(error)

    threads = [threading.Thread(target=start, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return started, refused


@pytest.mark.parametrize("same_id", [False, True], ids=["different run ids", "same run id"])
def test_two_simultaneous_starts_one_runs_the_other_is_busy(same_id, cifar_npz, own_jobs):
    for attempt in range(4):
        ids = [f"race-{attempt}"] * 2 if same_id else [f"race-{attempt}-a", f"race-{attempt}-b"]
        started, refused = race(2, ids)
        assert len(started) == 1 and len(refused) == 1, (attempt, started, refused)
        assert json.loads(jobs.lock_path().read_text())["run_id"] == started[0].run_id
        assert jobs.active_job().run_id == started[0].run_id
        kill(started[0])
        assert jobs.active_job() is None


def test_simultaneous_starts_after_a_dead_job_start_only_one(cifar_npz, own_jobs, monkeypatch):
    jobs.lock_path().parent.mkdir(parents=True, exist_ok=True)
    jobs.lock_path().write_text(json.dumps({"run_id": "dead", "pid": dead_pid(), "started": 0}))
    real_status = jobs.job_status

    def slow_status(run_id):  # a busy disk or a GIL switch while the stale lock is checked
        time.sleep(0.2)
        return real_status(run_id)

    monkeypatch.setattr(jobs, "job_status", slow_status)
    started, refused = race(3, ["stale-a", "stale-b", "stale-c"])
    for job in started:
        kill(job)
    assert len(started) == 1, f"{len(started)} jobs started at once: {[j.run_id for j in started]}"
