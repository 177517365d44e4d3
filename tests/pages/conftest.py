"""Fixtures of the dashboard tests: runs written directly as folders, a synthetic CIFAR10_NPZ,
and `open_page`, which runs the app through `streamlit.testing.v1.AppTest` on a given page."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.pages.factory import PAGES, labels_of, standard_runs, synthetic_npz

REPO = Path(__file__).resolve().parents[2]
ENTRY = str(REPO / "streamlit_app.py")


@pytest.fixture(autouse=True)
def sandbox(tmp_path, monkeypatch):
    """Empty artifacts and Keras home of this test; no dataset; fresh Streamlit caches."""
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("CIFAR10_NPZ", raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def npz(tmp_path, monkeypatch) -> Path:
    """A synthetic 200 / 100 image CIFAR-10 and CIFAR10_NPZ pointing at it."""
    path = synthetic_npz(tmp_path / "synthetic.npz")
    monkeypatch.setenv("CIFAR10_NPZ", str(path))
    return path


@pytest.fixture
def artifacts(tmp_path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def runs(artifacts, npz) -> list[str]:
    """baseline-reference, baseline-best and transfer-reference, tested on the synthetic test set."""
    return standard_runs(artifacts, labels_of(npz))


@pytest.fixture
def open_page():
    def run(page: str | None = None, timeout: float = 30) -> AppTest:
        app = AppTest.from_file(ENTRY, default_timeout=timeout)
        app.run()
        if page is not None:
            app.switch_page(PAGES[page])
            app.run()
        return app

    return run
