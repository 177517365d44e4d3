"""Background jobs: the one job slot (an flock the job process holds), states read from run folders
and the slot, start and cancel, and `python -m cifar train` by hand taking the same slot.

Most tests run a fake job (`fake_jobs` in conftest): a small Python process that does what
`cmd_train` does with the slot (`hold_slot`) and then sleeps, without TensorFlow. Tests marked
slow train for real. The process helpers alone are `tests/test_processes.py`'s.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time

import pytest

from cifar.cli import parse_overrides
from cifar.config import BaselineConfig, TransferConfig, parse_config
from cifar.service import jobs
from cifar.service.jobs import JobBusy, cancel_job, job_status, start_job
from cifar.store import processes
from cifar.store.processes import pid_alive, slot_holder
from cifar.store.runs import RunError, RunWriter, load_run, partial_path, read_status, run_path
from tests.factory import REPO, holding, labels_of, partial_run, take_slot, wait_for_job, wait_until

# ----------------------------------------------------------------------------- the typed config


CONFIGS = [
    BaselineConfig(),
    BaselineConfig(epochs=3, learning_rate=3.3e-5, augment=True, architecture="airbench", dropout=0.1 + 0.2),
    TransferConfig(),
    TransferConfig(resize="bilinear", input_size=299, flip_features=True, tta_flip=True, head_units=17),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.model}-{len(c.model_fields_set)}-changed")
def test_train_args_give_the_cli_the_same_config(config):
    args = jobs.train_args(config, "r1")
    assert args[:4] == ["train", config.model, "--run-id", "r1"]
    parsed = parse_config(config.model, parse_overrides(args[4:]))
    assert parsed == config and parsed.model_dump() == config.model_dump()


def test_start_job_takes_a_validated_config_and_checks_the_run_id_first(monkeypatch):
    monkeypatch.setattr(processes, "spawn", lambda *a, **k: pytest.fail("no process may start"))
    with pytest.raises(TypeError, match="BaselineConfig"):
        start_job({"model": "baseline", "epochs": 1})
    for run_id in ("../escape", "a/b", ".hidden", "x" * 101):
        with pytest.raises(RunError):
            start_job(BaselineConfig(epochs=1), run_id=run_id)
    assert not jobs.artifacts_dir().exists(), "a refused job created folders"
    run_path("done").mkdir(parents=True)
    with pytest.raises(RunError, match="exists already"):
        start_job(BaselineConfig(), run_id="done")
    assert slot_holder() is None and jobs.active_job() is None


# ----------------------------------------------------------------------------- the slot


def test_the_slot_is_held_by_an_open_file_and_freed_by_closing_it():
    assert slot_holder() is None and jobs.active_job() is None
    fd = take_slot("first")
    try:
        assert slot_holder()["run_id"] == "first" and slot_holder()["pid"] == os.getpid()
        assert jobs.active_job().run_id == "first"
        other = processes.open_slot()
        with pytest.raises(JobBusy, match="job first is running"):
            jobs.take_slot("second", other)
        os.close(other)
        assert slot_holder()["run_id"] == "first"
    finally:
        os.close(fd)
    assert slot_holder() is None and jobs.active_job() is None
    os.close(take_slot("next"))  # and it can be taken again


@pytest.mark.parametrize("content", ["", "{half a json", '{"run_id": "ghost", "pid": 1}'])
def test_a_record_without_a_held_lock_names_no_job(content):
    """What a killed job leaves (a record, even half written) does not block the slot."""
    path = processes.slot_path()
    path.parent.mkdir(parents=True)
    path.with_name("slot.json").write_text(content)
    path.touch()
    assert slot_holder() is None and jobs.active_job() is None
    fd = take_slot("next")
    os.close(fd)


def test_a_held_slot_without_a_readable_record_is_busy():
    fd = processes.open_slot()
    assert processes.lock_slot(fd)  # taken, record not written yet
    try:
        processes.slot_path().with_name("slot.json").write_text("{half")
        assert slot_holder() == {} and jobs.active_job() is None
        with pytest.raises(JobBusy, match="another job is starting"):
            start_job(BaselineConfig(), run_id="next")
    finally:
        os.close(fd)


def test_job_status_comes_from_the_slot_not_from_pids():
    # The partial folder says running, with a live pid (this process), but no one holds the slot.
    partial_run("vanished", state="running", pid=os.getpid(), progress=0.4, message="epoch 2/5")
    job = job_status("vanished")
    assert job.state == "failed" and not job.active
    assert "ended unexpectedly" in job.message and "epoch 2/5" in job.message
    fd = take_slot("alive")
    try:
        partial_run("alive", state="running", pid=123, progress=0.25, phase="training", started=time.time())
        job = job_status("alive")
        assert (job.state, job.progress, job.phase, job.pid) == ("running", 0.25, "training", os.getpid())
        assert job.active
    finally:
        os.close(fd)
    assert job_status("alive").state == "failed"


def test_job_status_of_finished_failed_unknown_and_starting_runs():
    run_path("done").mkdir(parents=True)
    assert job_status("done").state == "finished"
    partial_run("broke", state="failed", pid=os.getpid(), message="ValueError: boom")
    assert job_status("broke").state == "failed" and job_status("broke").message == "ValueError: boom"
    assert job_status("never-started").state == "failed"
    partial_run("again", state="failed", message="old attempt", started=time.time() - 60)
    fd = take_slot("booting")  # slot taken, folder not made yet
    fd_again = None
    try:
        assert job_status("booting").state == "starting"
        os.close(fd)
        fd = None
        fd_again = take_slot("again")  # a rerun under a failed id: the old status is not this one's
        assert job_status("again").state == "starting"
    finally:
        for descriptor in (fd, fd_again):
            if descriptor is not None:
                os.close(descriptor)


def test_list_jobs_and_discard():
    partial_run("a", state="failed", pid=1, started=1.0)
    partial_run("b", state="cancelled", started=2.0)
    assert [(j.run_id, j.state) for j in jobs.list_jobs()] == [("b", "cancelled"), ("a", "failed")]
    jobs.discard_job("a")
    assert not partial_path("a").exists()
    fd = take_slot("c")
    try:
        partial_run("c", state="running", pid=os.getpid(), started=time.time())
        with pytest.raises(JobBusy):
            jobs.discard_job("c")
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- fake job processes


def test_start_job_hands_the_slot_to_the_job_process(fake_jobs):
    job = start_job(BaselineConfig(epochs=1), run_id="job1")
    assert job.state == "starting" and job.pid
    holder = slot_holder()
    assert (holder["run_id"], holder["pid"], holder["group"]) == ("job1", job.pid, job.pid)
    with pytest.raises(JobBusy, match="job job1 is running"):
        start_job(BaselineConfig(epochs=1), run_id="job2")
    wait_until(lambda: holding("job1"), what="the job to hold its slot")
    assert "slot fd variable: None" in jobs.log_path("job1").read_text()  # not for its children
    assert jobs.active_job().run_id == "job1"
    assert os.getpgid(job.pid) == job.pid  # its own session: cancel stops its whole group


def test_sigkill_frees_the_slot_even_before_the_process_is_reaped(fake_jobs, monkeypatch):
    monkeypatch.setattr(processes, "reap", lambda: None)  # polling would reap it: not here
    job = start_job(BaselineConfig(), run_id="victim")
    wait_until(lambda: holding("victim"), what="the job to hold its slot")
    RunWriter("victim").open(pid=job.pid)  # what the job does next: status "running"
    assert job_status("victim").state == "running"
    os.killpg(job.pid, signal.SIGKILL)
    wait_until(lambda: slot_holder() is None, 30, what="the kernel to free the slot")
    assert processes._children[job.pid].returncode is None  # a zombie still: not reaped by us
    job_after = job_status("victim")
    assert job_after.state == "failed" and "ended unexpectedly" in job_after.message
    assert jobs.active_job() is None
    following = start_job(BaselineConfig(), run_id="following")
    assert slot_holder()["pid"] == following.pid


def test_a_job_killed_before_it_made_its_folder_is_failed(fake_jobs):
    job = start_job(BaselineConfig(), run_id="early-death")
    os.killpg(job.pid, signal.SIGKILL)
    wait_until(lambda: slot_holder() is None, 30, what="the kernel to free the slot")
    after = job_status("early-death")
    assert after.state == "failed" and "ended unexpectedly (no output)" in after.message
    assert job_status("never-started").message == ""  # an id no job ever had


def test_cancel_stops_the_job_and_marks_it_cancelled(fake_jobs):
    job = start_job(BaselineConfig(), run_id="long")
    wait_until(lambda: holding("long"), what="the job to hold its slot")
    RunWriter("long").open(pid=job.pid)
    cancelled = cancel_job("long", grace_seconds=10)
    assert cancelled.state == "cancelled" and not cancelled.active
    assert not pid_alive(job.pid) and slot_holder() is None
    assert read_status(partial_path("long"))["state"] == "cancelled"
    assert [(j.run_id, j.state) for j in jobs.list_jobs()] == [("long", "cancelled")]
    jobs.discard_job("long")
    assert jobs.list_jobs() == []


def test_cancel_while_starting_is_cancelled_not_failed(fake_jobs):
    job = start_job(BaselineConfig(), run_id="early")
    cancelled = cancel_job("early")
    assert cancelled.state == "cancelled", cancelled
    assert not pid_alive(job.pid) and slot_holder() is None
    assert job_status("early").state == "cancelled"


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_a_job_that_ends_frees_the_slot(fake_jobs, monkeypatch):
    monkeypatch.setenv("FAKE_JOB_SECONDS", "0")
    job = start_job(BaselineConfig(), run_id="short")
    wait_until(lambda: not pid_alive(job.pid), what="the job to end")
    assert slot_holder() is None and job_status("short").state == "failed"  # it published nothing


# ----------------------------------------------------------------------------- `python -m cifar train`


def _cli_train(*args: str) -> subprocess.CompletedProcess:
    """`python -m cifar train ...` by hand; also says whether TensorFlow was imported."""
    code = (
        "import sys\nfrom cifar.cli import main\nrc = main(sys.argv[1:])\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\nsys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "train", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_cli_train_refuses_while_a_dashboard_job_runs_and_leaves_its_folder(fake_jobs):
    job = start_job(BaselineConfig(), run_id="dash")
    wait_until(lambda: holding("dash"), what="the job to hold its slot")
    writer = RunWriter("dash").open(pid=job.pid)
    writer.write_json("history-so-far.json", {"epoch": 3})
    before = sorted(p.name for p in writer.path.iterdir()), read_status(writer.path)
    for run_id in ("dash", "other"):
        result = _cli_train("baseline", "--run-id", run_id, "--epochs", "1")
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines() == [
            "error: job dash is running (0%); wait for it, or cancel it on the Train page"
        ]
        assert "tensorflow imported: False" in result.stdout  # refused before the import
    assert (sorted(p.name for p in writer.path.iterdir()), read_status(writer.path)) == before
    assert job_status("dash").state == "running" and slot_holder()["pid"] == job.pid


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("run_id", ["../x", ""])
def test_cli_train_refuses_a_bad_run_id_before_taking_the_slot(run_id):
    result = _cli_train("baseline", "--run-id", run_id)
    assert result.returncode == 1 and "invalid run id" in result.stderr
    assert "tensorflow imported: False" in result.stdout
    assert slot_holder() is None


def test_a_train_started_by_hand_holds_the_slot_and_cancel_spares_its_shell(tmp_path):
    """Not in a session of its own: cancel stops that process, not the group it shares with us."""
    code = "import time\nfrom cifar.service.jobs import hold_slot\n"
    code += "hold_slot('byhand')\nprint('held', flush=True)\n"
    code += "time.sleep(120)"
    by_hand = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert by_hand.stdout.readline().strip() == "held"
        assert slot_holder()["group"] == os.getpgid(0) != by_hand.pid
        with pytest.raises(JobBusy, match="job byhand is running"):
            start_job(BaselineConfig(), run_id="dashboard")
        assert cancel_job("byhand", grace_seconds=10).state == "cancelled"
        assert by_hand.wait(timeout=30) == -signal.SIGTERM and slot_holder() is None
    finally:
        by_hand.kill()
        by_hand.wait()


# ----------------------------------------------------------------------------- structure


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("module", ["service/jobs", "service/standby", "store/processes"])
def test_job_modules_do_not_import_the_cli(module):
    """`cli` drives jobs and the standby; they get the entry point handed in, never import it."""
    tree = ast.parse((REPO / "cifar" / f"{module}.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported, "no imports found: the check would pass for nothing"
    assert "cifar.cli" not in imported and "cifar.__main__" not in imported
    code = f"import sys, cifar.{module.replace('/', '.')}; print('cifar.cli' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


# ----------------------------------------------------------------------------- real training


@pytest.mark.slow
def test_real_job_runs_to_the_end(cifar_npz):
    job = start_job(BaselineConfig(epochs=1, validation_size=20), run_id="job1")
    assert job.state == "starting" and slot_holder()["pid"] == job.pid
    with pytest.raises(JobBusy):
        start_job(BaselineConfig(epochs=1), run_id="job2")
    final = wait_for_job("job1", lambda j: not j.active)
    assert final.state == "finished", final
    run = load_run("job1")
    assert run.metrics["n_train"] == 80 and run.metrics["n_validation"] == 20
    assert run.test_predictions.shape == (len(labels_of(cifar_npz)), 10)
    assert run.config["config"] == BaselineConfig(epochs=1, validation_size=20).model_dump()
    assert run.config["command"].startswith("python -m cifar train baseline --run-id job1 ")
    wait_until(lambda: not pid_alive(job.pid), 60, what="the child to exit after publishing")
    assert jobs.active_job() is None and slot_holder() is None
    assert jobs.list_jobs() == []
    assert jobs.log_path("job1").exists()


@pytest.mark.slow
def test_cancel_a_running_job(cifar_npz):
    job = start_job(BaselineConfig(epochs=500, validation_size=20), run_id="long")
    wait_for_job("long", lambda j: j.state == "running" and j.phase == "training" or not j.active)
    assert job_status("long").state == "running"
    cancelled = cancel_job("long")
    assert cancelled.state == "cancelled" and not cancelled.active
    assert not pid_alive(job.pid)
    assert not run_path("long").exists() and partial_path("long").is_dir()
    assert slot_holder() is None and jobs.active_job() is None
    assert [(j.run_id, j.state) for j in jobs.list_jobs()] == [("long", "cancelled")]


@pytest.mark.slow
def test_cancel_while_starting(cifar_npz):
    """Cancelled before the child made its run folder (still importing TensorFlow)."""
    job = start_job(BaselineConfig(epochs=500, validation_size=20), run_id="early")
    cancelled = cancel_job("early")
    assert cancelled.state == "cancelled", cancelled
    assert not pid_alive(job.pid)
    assert not run_path("early").exists() and slot_holder() is None
    time.sleep(1)
    assert job_status("early").state == "cancelled"


def test_a_non_chief_workers_folder_is_not_listed_as_a_failed_job():
    """Workers 1..n-1 of a TF_CONFIG cluster hold no slot and publish nothing: their partial
    folders are the chief's job's, not failed jobs to discard while they run."""
    partial_run("multi.worker1", state="running", progress=0.3, started=time.time())
    partial_run("alone", state="running", progress=0.3, started=time.time())
    assert [job.run_id for job in jobs.list_jobs()] == ["alone"]


def test_jobs_shows_a_command_line_training_that_holds_the_slot(capsys):
    """#30 defect 10: while `python -m cifar train` loads TensorFlow it holds the slot (and other
    trainings are refused) before its run folder exists; `jobs` said "no background jobs"."""
    from cifar import cli

    fd = take_slot("by-hand")
    try:
        assert not partial_path("by-hand").exists()
        assert cli.main(["jobs"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("by-hand") and "starting" in out and "no background jobs" not in out
        assert [(job.run_id, job.state) for job in jobs.shown_jobs()] == [("by-hand", "starting")]
        partial_run("by-hand", state="running", pid=os.getpid(), started=time.time() + 1)
        assert [job.run_id for job in jobs.shown_jobs()] == ["by-hand"]  # once, from its folder
    finally:
        os.close(fd)
    assert jobs.shown_jobs()[0].state == "failed"  # its process let go without finishing


def test_a_status_never_says_more_than_done(tmp_path):
    """Keras reports a compiled call's last step, past a short epoch's end: a progress over 1 made
    status.json unreadable, and the job lost its pid, start time and phase."""
    from types import SimpleNamespace

    from cifar.training.callbacks import run_callbacks

    writer = RunWriter("steps").open()
    recorder = run_callbacks(writer, SimpleNamespace(epochs=2, early_stopping_patience=0), None)[0]
    recorder.set_params({"steps": 6})
    recorder.on_train_begin()
    recorder.on_epoch_begin(0)
    recorder.on_train_batch_end(31)  # steps_per_execution 32 over an epoch of 6 steps
    status = read_status(writer.path)
    assert status["progress"] == 0.5 and status["pid"] == os.getpid() and status["phase"] == "training"
