"""Shared fixtures: every test runs offline, in its own Keras home and artifacts folder.

The user's ~/.keras is never read or written: KERAS_HOME and CIFAR_ARTIFACTS point into a
temporary folder before anything imports Keras, and again into `tmp_path` for every test.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest

# Before Keras is imported anywhere (it reads KERAS_HOME at import time).
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="cifar-tests-"))
os.environ["KERAS_HOME"] = str(_SESSION_ROOT / "keras")
os.environ["CIFAR_ARTIFACTS"] = str(_SESSION_ROOT / "artifacts")
os.environ.pop("CIFAR10_NPZ", None)
os.environ.pop("TF_CONFIG", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CIFAR_STANDBY"] = "0"  # no standby job processes, except in the tests about them

from cifar import assets  # noqa: E402
from cifar.assets import Cifar10  # noqa: E402


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


@pytest.fixture(autouse=True)
def offline_sandbox(tmp_path, monkeypatch):
    """Private Keras home and artifacts folder; no dataset override; no network at all."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.delenv("CIFAR10_NPZ", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)  # no accidental multi-worker training
    monkeypatch.setattr(assets, "download", _no_network)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(socket.socket, "connect", _loopback_only_connect)
    monkeypatch.setattr(socket, "create_connection", _loopback_only_create_connection)
    yield


def make_tiny_cifar(n_train: int = 120, n_test: int = 40, seed: int = 0) -> Cifar10:
    """Random uint8 images with every class present (labels cycle through 0..9)."""
    rng = np.random.default_rng(seed)
    return Cifar10(
        x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        y_train=(np.arange(n_train) % 10).astype(np.uint8),
        x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        y_test=((np.arange(n_test) * 3) % 10).astype(np.uint8),
    )


@pytest.fixture
def make_cifar():
    """`make_cifar(n_train, n_test, seed)`: a tiny synthetic dataset (a fixture, not an import:
    several conftest modules share the name `conftest`)."""
    return make_tiny_cifar


@pytest.fixture
def tiny_npz(tmp_path, monkeypatch) -> Path:
    """A small dataset file and CIFAR10_NPZ pointing at it (what jobs and the CLI load)."""
    data = make_tiny_cifar(100, 30, seed=1)
    path = tmp_path / "tiny-cifar10.npz"
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    monkeypatch.setenv("CIFAR10_NPZ", str(path))
    return path


@pytest.fixture(scope="session")
def trained_baseline(tmp_path_factory):
    """One tiny baseline run (1 epoch, 120/40 images), trained once for the whole session.

    Returns (artifacts folder, run id, data); tests point CIFAR_ARTIFACTS at the folder.
    """
    from cifar.config import BaselineConfig
    from cifar.train import train

    root = tmp_path_factory.mktemp("trained-baseline")
    data = make_tiny_cifar()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(root / "keras"))
        patch.setenv("CIFAR_ARTIFACTS", str(root / "artifacts"))
        patch.setattr(assets, "download", _no_network)
        patch.setattr(socket.socket, "connect", _loopback_only_connect)
        patch.delenv("TF_CONFIG", raising=False)
        train(BaselineConfig(epochs=1, validation_size=20), data=data, run_id="t")
    return root / "artifacts", "t", data


@pytest.fixture
def use_trained_baseline(trained_baseline, monkeypatch):
    artifacts, run_id, data = trained_baseline
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(artifacts))
    return run_id, data
