"""`open_page`: the app run through `streamlit.testing.v1.AppTest` on a given page (the sandbox,
the dataset and the fixture runs are `tests/conftest.py`'s)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from cifar.service import jobs
from tests.factory import PAGES, REPO

ENTRY = str(REPO / "streamlit_app.py")


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


@pytest.fixture
def started(monkeypatch):
    """`start_job` records its calls instead of starting a process."""
    calls = []

    def fake_start_job(config, run_id=None, seeds=1):
        calls.append((config, run_id) if seeds == 1 else (config, run_id, seeds))
        return jobs.Job(run_id or f"{config.model}-now", "starting", 0.0, "starting")

    monkeypatch.setattr(jobs, "start_job", fake_start_job)
    return calls
