"""The standby: a job process started ahead of time that takes the next job, slot included.

Fast tests use the fake job of conftest's `fake_jobs` (serve_standby's real code, TensorFlow
replaced by an empty module); tests marked slow import TensorFlow and train for real.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from cifar.config import BaselineConfig
from cifar.service import jobs, standby
from cifar.service.jobs import cancel_job, job_status, start_job
from cifar.store import processes
from cifar.store.processes import pid_alive, slot_holder
from cifar.store.runs import load_run, run_path
from tests.factory import REPO, holding, take_slot, wait_for_job, wait_until


@pytest.fixture
def standby_on(monkeypatch):
    """Standby processes on (conftest turns them off), stopped after the test."""
    monkeypatch.setenv("CIFAR_STANDBY", "1")
    yield
    standby.stop_standby()


def _standby_pid(timeout: float = 120) -> int:
    def ready():
        log = standby._standby.get("log")
        assert "process" in standby._standby, "no standby"
        assert standby._standby["process"].poll() is None, log.read_text() if log else "no log"
        return standby.standby_ready()

    wait_until(ready, timeout, what="the standby to be ready")
    return standby._standby["process"].pid


def test_a_standby_that_cannot_start_is_no_error(monkeypatch):
    def no_process(*args, **kwargs):
        raise OSError("no more processes")

    monkeypatch.setenv("CIFAR_STANDBY", "1")
    monkeypatch.setattr(processes, "spawn", no_process)
    open_before = len(os.listdir("/proc/self/fd"))
    assert not standby.warm_up() and standby._standby == {}
    assert len(os.listdir("/proc/self/fd")) == open_before  # its slot descriptor was closed


def test_no_standby_when_turned_off_or_while_a_job_runs(monkeypatch):
    spawned = []
    monkeypatch.setattr(processes, "spawn", lambda *args, **kwargs: spawned.append(args))
    assert not standby.warm_up()  # CIFAR_STANDBY=0 (conftest)
    monkeypatch.setenv("CIFAR_STANDBY", "1")
    fd = take_slot("running")  # a job (this process) holds the slot
    try:
        assert not standby.warm_up()
    finally:
        os.close(fd)
    assert spawned == []


@pytest.mark.usefixtures("fake_jobs")
def test_the_standby_takes_the_job_and_its_slot(standby_on):
    assert standby.warm_up()
    pid = _standby_pid()
    assert standby.warm_up() and standby._standby["process"].pid == pid  # one standby, not two
    assert slot_holder() is None  # sharing the slot file is not holding the slot
    job = start_job(BaselineConfig(epochs=1), run_id="warm")
    assert job.pid == pid and slot_holder()["pid"] == pid and standby._standby == {}
    wait_until(lambda: holding("warm"), what="the standby to take the job")
    log = jobs.log_path("warm").read_text()  # the standby's output goes to the job's log
    assert f"job taken by standby process {pid}" in log
    assert jobs.active_job().run_id == "warm"
    assert not standby.warm_up()  # no second standby while a job runs
    with pytest.raises(jobs.JobBusy, match="job warm is running"):
        start_job(BaselineConfig(), run_id="second")
    assert cancel_job("warm", grace_seconds=10).state == "cancelled"
    assert not pid_alive(pid) and slot_holder() is None


@pytest.mark.usefixtures("fake_jobs")
def test_a_killed_standby_job_frees_the_slot(standby_on):
    standby.warm_up()
    pid = _standby_pid()
    start_job(BaselineConfig(), run_id="warm-killed")
    wait_until(lambda: holding("warm-killed"), what="the standby to take the job")
    os.killpg(pid, 9)
    wait_until(lambda: slot_holder() is None, 30, what="the kernel to free the slot")
    assert job_status("warm-killed").state == "failed"


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.usefixtures("fake_jobs")
def test_a_standby_started_in_another_environment_is_not_used(standby_on, monkeypatch):
    standby.warm_up()
    old = standby._standby["process"]
    monkeypatch.setenv("TPU_ML_PLATFORM_VERSION", "0-test")  # set by importing TensorFlow: no reason
    assert standby._usable_standby() is old
    monkeypatch.setenv("CIFAR_TEST_CHANGED", "1")  # e.g. another artifacts folder or TF_CONFIG
    job = start_job(BaselineConfig(), run_id="cold")
    assert job.pid != old.pid and slot_holder()["pid"] == job.pid
    assert old.poll() is not None  # told to exit (or killed)
    wait_until(lambda: holding("cold"), what="the cold job to hold its slot")


@pytest.mark.usefixtures("fake_jobs")
def test_a_standby_close_to_its_idle_exit_gets_no_job(standby_on):
    standby.warm_up()
    old = standby._standby["process"]
    standby._standby["started"] -= standby.STANDBY_IDLE_SECONDS - standby.STANDBY_MARGIN_SECONDS
    assert standby.claim_standby() is None
    assert old.poll() is not None and standby._standby == {}
    job = start_job(BaselineConfig(), run_id="after-margin")
    assert job.pid != old.pid


def _killed_standby():
    """A standby started, then killed (and reaped) before it gets a job."""
    standby.warm_up()
    process = standby._standby["process"]
    process.kill()
    process.wait()
    return process


@pytest.mark.usefixtures("fake_jobs")
def test_a_dead_standby_gets_no_job_and_is_replaced(standby_on):
    first = _killed_standby()
    assert standby.claim_standby() is None
    assert standby.warm_up() and standby._standby["process"].pid != first.pid


@pytest.mark.usefixtures("fake_jobs")
def test_a_standby_that_dies_at_hand_over_leaves_the_job_to_a_cold_start(standby_on):
    dead = _killed_standby()
    dead.poll = lambda: None  # it died after the check that it waits
    job = start_job(BaselineConfig(), run_id="handed")
    assert job.pid != dead.pid and slot_holder()["pid"] == job.pid
    wait_until(lambda: holding("handed"), what="the cold job to hold the slot it was given")
    assert standby._standby == {}


@pytest.mark.parametrize("ending", ["idle", "pipe closed"])
@pytest.mark.parametrize("kind", ["fake", pytest.param("real", marks=pytest.mark.slow)])
def test_an_unused_standby_exits_by_itself(tmp_path, ending, kind, request):
    if kind == "fake":
        request.getfixturevalue("fake_jobs")
    ready = tmp_path / "ready"
    idle = "1" if ending == "idle" else "600"
    process = subprocess.Popen(
        [*processes.COMMAND, "standby", "--ready-file", str(ready), "--idle-seconds", idle],
        stdin=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        if ending == "pipe closed":
            wait_until(lambda: ready.exists() or process.poll() is not None, 120, what="ready")
            assert ready.read_text() == str(process.pid)
            process.stdin.close()  # what the dashboard's exit does
        assert process.wait(timeout=120) == 0
        assert not ready.exists()
    finally:
        process.kill()


# ----------------------------------------------------------------------------- real TensorFlow


@pytest.mark.slow
def test_a_job_started_after_warm_up_runs_in_the_standby_process(cifar_npz, standby_on):
    assert standby.warm_up()
    pid = _standby_pid()
    job = start_job(BaselineConfig(epochs=1, validation_size=20), run_id="warm")
    assert job.pid == pid and slot_holder()["pid"] == pid
    assert wait_for_job("warm", lambda j: not j.active).state == "finished"
    run = load_run("warm")
    assert run.metrics["n_train"] == 80 and run.hyperparameters["epochs"] == 1
    assert run.config["command"].startswith("python -m cifar train baseline --run-id warm ")
    # The run is finished once published; its last log line comes after the cost is measured.
    log = wait_until(
        lambda: "run written to" in jobs.log_path("warm").read_text(), 60, what="the last log line"
    )
    assert log and f"job taken by standby process {pid}" in jobs.log_path("warm").read_text()
    wait_until(lambda: slot_holder() is None, 60, what="the standby to exit")
    assert jobs.active_job() is None


@pytest.mark.slow
def test_cancel_a_job_running_in_the_standby(cifar_npz, standby_on):
    standby.warm_up()
    pid = _standby_pid()
    job = start_job(BaselineConfig(epochs=500, validation_size=20), run_id="warm-long")
    assert job.pid == pid
    wait_for_job("warm-long", lambda j: j.state == "running" and j.phase == "training" or not j.active)
    assert cancel_job("warm-long").state == "cancelled"
    assert not pid_alive(pid) and not run_path("warm-long").exists()
