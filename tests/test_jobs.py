"""Background jobs: the single job slot, states read from run folders, real start and cancel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar import jobs
from cifar.config import ConfigError
from cifar.jobs import JobBusy, cancel_job, job_status, pid_alive, start_job
from cifar.atomic import write_json as write_json_atomic
from cifar.runs import load_run, partial_path, run_path


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(None) and not pid_alive(0)
    assert not pid_alive(_dead_pid())


def test_pid_alive_false_for_a_zombie():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            with open(f"/proc/{process.pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.05)
        assert not pid_alive(process.pid)
    finally:
        process.wait()


def test_invalid_config_raises_before_taking_the_lock(monkeypatch):
    def no_process(*args, **kwargs):
        raise AssertionError("no process may start")

    monkeypatch.setattr(jobs.subprocess, "Popen", no_process)
    with pytest.raises(ConfigError, match="epochs"):
        start_job("baseline", {"epochs": -1})
    with pytest.raises(ConfigError, match="nonsense"):
        start_job("transfer", {"nonsense": "1"})
    assert not jobs.lock_path().exists()
    assert jobs.active_job() is None


def _lock(run_id: str, pid: int):
    jobs.lock_path().parent.mkdir(parents=True, exist_ok=True)
    jobs.lock_path().write_text(json.dumps({"run_id": run_id, "pid": pid, "started": time.time()}))


def test_second_lock_while_a_live_job_holds_it_is_refused():
    jobs._take_lock("first")  # holds this (live) process's pid
    assert json.loads(jobs.lock_path().read_text())["run_id"] == "first"
    with pytest.raises(JobBusy, match="first"):
        jobs._take_lock("second")
    assert json.loads(jobs.lock_path().read_text())["run_id"] == "first"
    assert jobs.active_job().run_id == "first"


def test_stale_lock_with_a_dead_pid_is_taken_over():
    _lock("ghost", _dead_pid())
    jobs._take_lock("next")
    lock = json.loads(jobs.lock_path().read_text())
    assert lock["run_id"] == "next" and lock["pid"] == os.getpid()


@pytest.mark.parametrize("content", ["", "{half a json"])
def test_unreadable_lock_left_by_a_killed_writer_is_taken_over(content):
    path = jobs.lock_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    # Fresh: its writer may be filling it right now, so the slot is busy.
    with pytest.raises(JobBusy, match="another job is starting"):
        jobs._take_lock("next")
    # Old: nobody will ever fill it.
    old = time.time() - 60
    os.utime(path, (old, old))
    jobs._take_lock("next")
    assert json.loads(path.read_text())["run_id"] == "next"


def _partial(run_id: str, **status):
    folder = partial_path(run_id)
    folder.mkdir(parents=True)
    write_json_atomic(folder / "status.json", status)
    return folder


def test_job_status_running_with_a_dead_pid_is_failed():
    _partial("vanished", state="running", pid=_dead_pid(), progress=0.4, message="epoch 2/5")
    job = job_status("vanished")
    assert job.state == "failed" and not job.active
    assert "ended unexpectedly" in job.message and "epoch 2/5" in job.message


def test_job_status_running_with_a_live_pid():
    _partial("alive", state="running", pid=os.getpid(), progress=0.25, phase="training", message="m")
    job = job_status("alive")
    assert (job.state, job.progress, job.phase, job.pid) == ("running", 0.25, "training", os.getpid())
    assert job.active


def test_job_status_of_finished_failed_and_unknown_runs():
    run_path("done").mkdir(parents=True)
    assert job_status("done").state == "finished"
    _partial("broke", state="failed", pid=os.getpid(), message="ValueError: boom")
    assert job_status("broke").state == "failed" and job_status("broke").message == "ValueError: boom"
    assert job_status("never-started").state == "failed"
    _lock("booting", os.getpid())  # lock taken, folder not made yet
    assert job_status("booting").state == "starting"


def test_list_jobs_and_discard():
    _partial("a", state="failed", pid=1, started=1.0)
    _partial("b", state="cancelled", started=2.0)
    assert [(j.run_id, j.state) for j in jobs.list_jobs()] == [("b", "cancelled"), ("a", "failed")]
    jobs.discard_job("a")
    assert not partial_path("a").exists()
    _partial("c", state="running", pid=os.getpid())
    with pytest.raises(JobBusy):
        jobs.discard_job("c")


def _wait(run_id: str, condition, timeout: float = 120.0):
    deadline = time.time() + timeout
    job = job_status(run_id)
    while time.time() < deadline:
        job = job_status(run_id)
        if condition(job):
            return job
        time.sleep(0.5)
    log = jobs.artifacts_dir() / "jobs" / f"{run_id}.log"
    tail = log.read_text()[-3000:] if log.exists() else "(no log)"
    raise AssertionError(f"timed out waiting for job {run_id}: last state {job}\n{tail}")


@pytest.mark.slow
def test_real_job_runs_to_the_end(tiny_npz):
    job = start_job("baseline", {"epochs": 1, "validation_size": 20}, run_id="job1")
    assert job.state == "starting" and job.pid
    assert json.loads(jobs.lock_path().read_text())["pid"] == job.pid
    with pytest.raises(JobBusy):
        start_job("baseline", {"epochs": 1}, run_id="job2")
    final = _wait("job1", lambda j: not j.active)
    assert final.state == "finished", final
    run = load_run("job1")
    assert run.metrics["n_train"] == 80 and run.metrics["n_validation"] == 20
    assert run.test_predictions.shape == (30, 10)
    assert run.hyperparameters["epochs"] == 1 and run.hyperparameters["validation_size"] == 20
    assert jobs.active_job() is None and not jobs.lock_path().exists()
    assert jobs.list_jobs() == []
    deadline = time.time() + 60  # the child exits shortly after publishing
    while pid_alive(job.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not pid_alive(job.pid)
    assert (jobs.artifacts_dir() / "jobs" / "job1.log").exists()


@pytest.mark.slow
def test_cancel_a_running_job(tiny_npz):
    job = start_job("baseline", {"epochs": 500, "validation_size": 20}, run_id="long")
    _wait("long", lambda j: j.state == "running" and j.phase == "training" or not j.active)
    assert job_status("long").state == "running"
    cancelled = cancel_job("long")
    assert cancelled.state == "cancelled" and not cancelled.active
    assert not pid_alive(job.pid)
    assert not run_path("long").exists()
    assert partial_path("long").is_dir()
    assert not jobs.lock_path().exists() and jobs.active_job() is None
    assert [(j.run_id, j.state) for j in jobs.list_jobs()] == [("long", "cancelled")]
    jobs.discard_job("long")
    assert jobs.list_jobs() == []


@pytest.mark.slow
def test_cancel_while_starting(tiny_npz):
    """Cancelled before the child made its run folder (still importing TensorFlow)."""
    job = start_job("baseline", {"epochs": 500, "validation_size": 20}, run_id="early")
    cancelled = cancel_job("early")
    assert cancelled.state == "cancelled", cancelled
    assert not pid_alive(job.pid)
    assert not run_path("early").exists()
    assert not jobs.lock_path().exists()
    time.sleep(1)
    assert job_status("early").state == "cancelled"


# ----------------------------------------------------------------------------- the standby process


@pytest.fixture
def standby(monkeypatch):
    """Standby processes on (conftest turns them off), stopped after the test."""
    monkeypatch.setenv("CIFAR_STANDBY", "1")
    yield
    jobs._stop_standby()


def _standby_pid(timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while not jobs.standby_ready():
        log = jobs._standby["log"]
        assert time.time() < deadline, log.read_text() if log.exists() else "no standby log"
        time.sleep(0.2)
    return jobs._standby["process"].pid


def test_a_standby_that_cannot_start_is_no_error(monkeypatch):
    def no_process(*args, **kwargs):
        raise OSError("no more processes")

    monkeypatch.setenv("CIFAR_STANDBY", "1")
    monkeypatch.setattr(jobs, "_spawn", no_process)
    assert not jobs.warm_up() and jobs._standby == {}


def test_no_standby_when_turned_off_or_while_a_job_runs(monkeypatch):
    spawned = []
    monkeypatch.setattr(jobs, "_spawn", lambda *args, **kwargs: spawned.append(args))
    assert not jobs.warm_up()  # CIFAR_STANDBY=0 (conftest)
    monkeypatch.setenv("CIFAR_STANDBY", "1")
    jobs._take_lock("running")  # a live job (this process) holds the slot
    assert not jobs.warm_up()
    assert spawned == []


@pytest.mark.slow
def test_a_job_started_after_warm_up_runs_in_the_standby_process(tiny_npz, standby):
    assert jobs.warm_up()
    pid = _standby_pid()
    assert jobs.warm_up() and jobs._standby["process"].pid == pid  # one standby, not two
    job = start_job("baseline", {"epochs": 1, "validation_size": 20}, run_id="warm")
    assert job.pid == pid and json.loads(jobs.lock_path().read_text())["pid"] == pid
    assert _wait("warm", lambda j: not j.active).state == "finished"
    run = load_run("warm")
    assert run.metrics["n_train"] == 80 and run.hyperparameters["epochs"] == 1
    assert run.config["command"].startswith("python -m cifar train baseline --run-id warm ")
    log = jobs.log_path("warm").read_text()  # the standby's output went to the job's log
    assert f"job taken by standby process {pid}" in log and "run written to" in log
    assert jobs.active_job() is None and not jobs.lock_path().exists()


@pytest.mark.slow
def test_cancel_a_job_running_in_the_standby(tiny_npz, standby):
    jobs.warm_up()
    pid = _standby_pid()
    job = start_job("baseline", {"epochs": 500, "validation_size": 20}, run_id="warm-long")
    assert job.pid == pid
    _wait("warm-long", lambda j: j.state == "running" and j.phase == "training" or not j.active)
    assert cancel_job("warm-long").state == "cancelled"
    assert not pid_alive(pid) and not run_path("warm-long").exists()


@pytest.mark.slow
def test_a_standby_started_in_another_environment_is_not_used(tiny_npz, standby, monkeypatch):
    jobs.warm_up()
    old = jobs._standby["process"]
    monkeypatch.setenv("TPU_ML_PLATFORM_VERSION", "0-test")  # set by importing TensorFlow: no reason
    assert jobs._usable_standby() is old
    monkeypatch.setenv("CIFAR_TEST_CHANGED", "1")  # e.g. another artifacts folder or TF_CONFIG
    job = start_job("baseline", {"epochs": 1, "validation_size": 20}, run_id="cold")
    assert job.pid != old.pid
    assert old.poll() is not None  # told to exit (or killed)
    assert _wait("cold", lambda j: not j.active).state == "finished"


@pytest.mark.slow
def test_a_standby_close_to_its_idle_exit_gets_no_job(standby, tmp_path):
    jobs.warm_up()
    old = jobs._standby["process"]
    jobs._standby["started"] -= jobs.STANDBY_IDLE_SECONDS - jobs.STANDBY_MARGIN_SECONDS
    assert jobs._hand_over(["runs"], tmp_path / "log") is None
    assert old.poll() is not None and jobs._standby == {}


@pytest.mark.slow
def test_a_dead_standby_gets_no_job_and_is_replaced(standby, tmp_path):
    jobs.warm_up()
    first = jobs._standby["process"]
    first.kill()
    first.wait()
    assert jobs._hand_over(["runs"], tmp_path / "log") is None
    assert jobs.warm_up()
    assert jobs._standby["process"].pid != first.pid


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["idle", "pipe closed"])
def test_an_unused_standby_exits_by_itself(tmp_path, ending):
    ready = tmp_path / "ready"
    idle = "1" if ending == "idle" else "600"
    process = subprocess.Popen(
        [sys.executable, "-m", "cifar", "standby", "--ready-file", str(ready), "--idle-seconds", idle],
        stdin=subprocess.PIPE,
        cwd=Path(jobs.__file__).resolve().parent.parent,
    )
    try:
        if ending == "pipe closed":
            deadline = time.time() + 120
            while not ready.exists() and process.poll() is None and time.time() < deadline:
                time.sleep(0.2)
            assert ready.read_text() == str(process.pid)
            process.stdin.close()  # what the dashboard's exit does
        assert process.wait(timeout=120) == 0
        assert not ready.exists()
    finally:
        process.kill()
