"""Shared fixtures: every test runs offline, in its own Keras home and artifacts folder
(`offline_sandbox`); a synthetic dataset, fixture runs, the session's trained run, fake jobs.

The user's ~/.keras is never read or written: KERAS_HOME and CIFAR_ARTIFACTS point into a
temporary folder before anything imports Keras, and again into `tmp_path` for every test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

# Where `python -m cifar fetch` cached the real data and weights (the committed runs' tests read them).
_USER_KERAS_HOME = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
# Before Keras is imported anywhere (it reads KERAS_HOME at import time).
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="cifar-tests-"))
os.environ["KERAS_HOME"] = str(_SESSION_ROOT / "keras")
os.environ["CIFAR_ARTIFACTS"] = str(_SESSION_ROOT / "artifacts")
os.environ.pop("CIFAR10_NPZ", None)
os.environ.pop("TF_CONFIG", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CIFAR_STANDBY"] = "0"  # no standby job processes, except in the tests about them

from cifar.config import artifacts_dir, keras_home  # noqa: E402
from cifar.sources import assets  # noqa: E402
from tests.factory import labels_of, npz_cifar, standard_runs, tiny_cifar, write_frost_textures, write_npz  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


class NetworkUsed(AssertionError):
    """A test tried to reach the network."""


def _no_network(*args, **kwargs):
    raise NetworkUsed(f"tests must not use the network (called with {args!r})")


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_real_connect = socket.socket.connect
_real_create_connection = socket.create_connection


def _loopback_only_connect(self, address):
    """Local sockets (multi-worker tests on 127.0.0.1) are fine; anything else is refused."""
    if self.family == getattr(socket, "AF_UNIX", None) or address[0] in _LOOPBACK:
        return _real_connect(self, address)
    raise NetworkUsed(f"tests must not use the network (connect to {address!r})")


def _loopback_only_create_connection(address, *args, **kwargs):
    if address[0] in _LOOPBACK:
        return _real_create_connection(address, *args, **kwargs)
    raise NetworkUsed(f"tests must not use the network (connect to {address!r})")


def _clear_streamlit_caches() -> None:
    """Fresh `st.cache_resource` / `st.cache_data` (only where a test loaded Streamlit already)."""
    if "streamlit" in sys.modules:
        import streamlit as st

        st.cache_resource.clear()
        st.cache_data.clear()


@pytest.fixture(autouse=True, scope="session")
def streamlit_components_scanned_once():
    """Streamlit's AppTest scans every installed distribution's metadata for custom components
    each time a new app runs (0.7 s here: most of a page test's time); the installed packages do
    not change during a session, so the scan is done once."""
    from streamlit.components.v2 import manifest_scanner

    found = manifest_scanner.scan_component_manifests()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(manifest_scanner, "scan_component_manifests", lambda max_workers=None: list(found))
        yield


@pytest.fixture(autouse=True)
def offline_sandbox(tmp_path, monkeypatch):
    """Private Keras home and artifacts folder; no dataset override, no TF_CONFIG; no network at
    all; fresh Streamlit caches. The one sandbox of every test."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.delenv("CIFAR10_NPZ", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)  # no accidental multi-worker training
    monkeypatch.setenv("CIFAR_PRELOAD", "0")  # no model loads behind a test's back
    monkeypatch.setenv("CIFAR_MEASURE_COST", "0")  # training's cost step: tests/test_cost.py's
    monkeypatch.setattr(assets, "download", _no_network)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(socket.socket, "connect", _loopback_only_connect)
    monkeypatch.setattr(socket, "create_connection", _loopback_only_create_connection)
    assert artifacts_dir().is_relative_to(tmp_path) and keras_home().is_relative_to(tmp_path)
    _clear_streamlit_caches()
    yield
    _clear_streamlit_caches()


# ----------------------------------------------------------------------------- data and runs


@pytest.fixture
def make_cifar():
    """`make_cifar(n_train, n_test, seed)`: `tests.factory.tiny_cifar`, a tiny synthetic dataset."""
    return tiny_cifar


@pytest.fixture
def cifar_npz(tmp_path, monkeypatch) -> Path:
    """`npz_cifar()` written to a file and CIFAR10_NPZ pointing at it (what jobs, the CLI and the
    pages load)."""
    path = write_npz(tmp_path / "cifar10.npz", npz_cifar())
    monkeypatch.setenv("CIFAR10_NPZ", str(path))
    return path


@pytest.fixture
def frost_textures() -> list:
    """`tests.factory.write_frost_textures()`: stand-in frost textures in the Keras home."""
    return write_frost_textures()


@pytest.fixture
def artifacts() -> Path:
    """This test's artifacts folder (CIFAR_ARTIFACTS)."""
    return artifacts_dir()


@pytest.fixture
def runs(artifacts, cifar_npz) -> list[str]:
    """baseline-reference, baseline-best and transfer-reference, tested on `cifar_npz`'s test set."""
    return standard_runs(artifacts, labels_of(cifar_npz))


@pytest.fixture(scope="session")
def trained_baseline(tmp_path_factory):
    """One tiny baseline run (1 epoch, 120/40 images), trained once for the whole session.

    Returns (artifacts folder, run id, data); tests point CIFAR_ARTIFACTS at the folder.
    """
    from cifar.config import BaselineConfig
    from cifar.training.train import train

    root = tmp_path_factory.mktemp("trained-baseline")
    data = tiny_cifar()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(root / "keras"))
        patch.setenv("CIFAR_ARTIFACTS", str(root / "artifacts"))
        patch.setattr(assets, "download", _no_network)
        patch.setattr(socket.socket, "connect", _loopback_only_connect)
        patch.delenv("TF_CONFIG", raising=False)
        patch.setenv("CIFAR_MEASURE_COST", "1")  # as for users: its cost is measured once published
        train(BaselineConfig(epochs=1, validation_size=20), data=data, run_id="t")
    return root / "artifacts", "t", data


@pytest.fixture
def use_trained_baseline(trained_baseline, monkeypatch):
    """The session's trained run, in this test's CIFAR_ARTIFACTS: (run id, data)."""
    artifacts, run_id, data = trained_baseline
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(artifacts))
    return run_id, data


# ----------------------------------------------------------------------------- job processes

# What a job process does with the slot, then waiting; also a standby (serve_standby's real code
# with TensorFlow and the trainer replaced by empty modules).
FAKE_JOB = """
import os, sys, time, types
sys.modules["tensorflow"] = types.ModuleType("tensorflow")
sys.modules["cifar.training.train"] = types.ModuleType("cifar.training.train")
from cifar.service.jobs import hold_slot
from cifar.service.standby import serve_standby

def run(argv):
    hold_slot(argv[argv.index("--run-id") + 1])
    # One string, one write (the job's stdout is unbuffered): a reader never sees half of it.
    print(f"holding the slot; slot fd variable: {os.environ.get('CIFAR_JOB_SLOT_FD')}", flush=True)
    time.sleep(float(os.environ.get("FAKE_JOB_SECONDS", "120")))
    return 0

args = sys.argv[1:]
if args[0] == "standby":
    sys.exit(serve_standby(args[args.index("--ready-file") + 1], float(args[-1]), run=run))
sys.exit(run(args))
"""


@pytest.fixture
def own_jobs():
    """Every job process (or standby) this test started and left running is killed afterwards."""
    from cifar.service import standby
    from cifar.store import processes

    before = set(processes._children)
    yield
    standby.stop_standby()
    for pid, process in list(processes._children.items()):
        if pid not in before and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture
def fake_jobs(own_jobs, monkeypatch):
    """Jobs (and standbys) are the fake above, which holds the slot and sleeps without TensorFlow."""
    from cifar.store import processes

    monkeypatch.setattr(processes, "COMMAND", (sys.executable, "-c", FAKE_JOB))


# ----------------------------------------------------------------------------- the committed runs

REAL_ASSETS = ("datasets/cifar10-verified.npz", "models/inception_v3_google2015_notop.weights.h5")


@pytest.fixture(scope="session")
def real_home(tmp_path_factory) -> Path:
    """A Keras home holding the real CIFAR-10 and InceptionV3 weights, linked from where `python -m
    cifar fetch` cached them (scripts/test runs it first). Skipped where they are not cached;
    under CI, where they must be, a failure."""
    missing = [name for name in REAL_ASSETS if not (_USER_KERAS_HOME / name).is_file()]
    if missing:
        why = f"not cached in {_USER_KERAS_HOME}: {', '.join(missing)} (python -m cifar fetch)"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    home = tmp_path_factory.mktemp("real-keras-home")
    for name in REAL_ASSETS:
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        try:  # read only: a link is enough
            os.link(_USER_KERAS_HOME / name, home / name)
        except OSError:
            shutil.copyfile(_USER_KERAS_HOME / name, home / name)
    return home


@contextlib.contextmanager
def committed_runs(home: Path):
    """The checkout's committed runs, on the real data and weights in `home` (read only)."""
    from tests.factory import REPO

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(home))
        patch.setenv("CIFAR_ARTIFACTS", str(REPO / "artifacts"))
        yield


@pytest.fixture
def real_runs(real_home):
    """This test reads the committed runs on the real data and weights."""
    with committed_runs(real_home):
        yield
