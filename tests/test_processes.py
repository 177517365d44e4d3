"""`cifar.store.processes` alone: liveness of a pid, and children reaped when they end."""

from __future__ import annotations

import os

from cifar.store import processes
from cifar.store.processes import pid_alive
from tests.factory import dead_pid, wait_until


def test_pid_alive_and_finished_children_are_reaped():
    assert pid_alive(os.getpid())
    assert not pid_alive(None) and not pid_alive(0)
    assert not pid_alive(dead_pid())
    with open(os.devnull, "wb") as log:
        child = processes.spawn(["--version"], log)  # argparse: exits at once
    wait_until(lambda: not pid_alive(child.pid), what="the child to end and be reaped")
    assert child.returncode is not None and child.pid not in processes._children


def test_polling_the_slot_reaps_finished_jobs():
    """A finished job must not stay a zombie while the dashboard only polls (`slot_holder`)."""
    from pathlib import Path

    with open(os.devnull, "wb") as log:
        child = processes.spawn(["--version"], log)

    def gone() -> bool:
        processes.slot_holder()  # what the Train page's monitor calls every 2 s
        return not Path(f"/proc/{child.pid}").exists()

    wait_until(gone, what="the finished child to be reaped by polling the slot")
    assert child.pid not in processes._children


def test_jobs_start_in_the_repository_root(tmp_path):
    """Where a relative CIFAR_ARTIFACTS or PYTHONPATH=. of `scripts/dashboard` points (the module
    moved one folder down once, and its jobs started in cifar/)."""
    from tests.factory import REPO

    assert processes.REPO_ROOT == REPO and (processes.REPO_ROOT / "pyproject.toml").is_file()
    out = tmp_path / "out.txt"
    code = "import os, sys; open(sys.argv[1], 'w').write(os.getcwd())"
    processes.COMMAND, saved = (processes.COMMAND[0], "-c", code), processes.COMMAND
    try:
        with open(os.devnull, "wb") as log:
            child = processes.spawn([str(out)], log)
        child.wait(timeout=60)
    finally:
        processes.COMMAND = saved
    assert out.read_text() == str(REPO)
