"""Fixtures of the robustness suite: a private Keras home and artifacts folder for every test,
and a tiny synthetic CIFAR-10 file for anything that loads data (nothing is ever downloaded).

`tests/conftest.py` already blocks the network; the autouse fixture below makes this folder
safe on its own too: ~/.keras and the repository's artifacts/ are never read or written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from robust_helpers import write_tiny_npz


@pytest.fixture(autouse=True)
def private_folders(tmp_path, monkeypatch):
    """KERAS_HOME and CIFAR_ARTIFACTS inside tmp_path; no dataset override unless asked for."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.delenv("CIFAR10_NPZ", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    from cifar.config import artifacts_dir, keras_home

    assert artifacts_dir().is_relative_to(tmp_path) and keras_home().is_relative_to(tmp_path)
    yield


@pytest.fixture
def cifar_npz(tmp_path, monkeypatch) -> Path:
    """A 100 / 30 image synthetic CIFAR-10 and CIFAR10_NPZ pointing at it."""
    path = write_tiny_npz(tmp_path / "tiny-cifar10.npz")
    monkeypatch.setenv("CIFAR10_NPZ", str(path))
    return path
