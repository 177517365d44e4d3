"""End to end: the real app in `streamlit run`, driven by a headless Chromium (Debian's package).

Fixture runs plus one real tiny baseline trained with the CLI on a synthetic CIFAR10_NPZ (so
Classify runs a model); the test visits every page, classifies an upload, trains a one-epoch
job from the Train page, sees it in Comparison, and saves a full-page screenshot of every page
to pytest's tmp dir (or $SCREENSHOTS_DIR).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e.browser import CHROMIUM, REPO, chromium_page, settle, start_streamlit, stop, wait_healthy
from tests.e2e.browser import shoot as shoot_to
from tests.factory import labels_of, write_run
from tests.factory import write_npz as synthetic_npz

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is not installed (apt-get install -y chromium chromium-driver)", allow_module_level=True
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)"
)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where screenshots go: $SCREENSHOTS_DIR when set, else pytest's tmp dir (CI leaves the
    tracked docs/screenshots/ alone; `bench/dashboard.py` makes those from the real runs)."""
    chosen = os.environ.get("SCREENSHOTS_DIR")
    return Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    npz = synthetic_npz(root / "synthetic.npz")
    labels = labels_of(npz)
    env = {
        **os.environ,
        "CIFAR_ARTIFACTS": str(root / "artifacts"),
        "CIFAR10_NPZ": str(npz),
        "KERAS_HOME": str(root / "keras"),  # no backbone weights: the transfer model says so
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CIFAR_STANDBY": "1",  # as for users: the Train page keeps a job process ready
    }
    trained = subprocess.run(
        [sys.executable, "-m", "cifar", "train", "baseline", "--run-id", "baseline-reference",
         "--epochs", "1", "--validation_size", "20"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    write_run(root / "artifacts", "baseline-best", "baseline", labels, 0.8, seed=2, learning_rate=5e-4)
    write_run(root / "artifacts", "transfer-reference", "transfer", labels, 0.85, seed=3, epochs=4)

    log = root / "streamlit.log"
    server, url = start_streamlit(env, log)
    try:
        wait_healthy(url, server, log)
        yield {"url": url, "env": env, "log": log}
    finally:
        stop(server)
        _stop_jobs(env)


def _stop_jobs(env: dict) -> None:
    """Cancel a job the test started, if it is still running (it is its own process group)."""
    code = (
        "from cifar.service.jobs import active_job, cancel_job\n"
        "job = active_job()\njob and cancel_job(job.run_id)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, timeout=60, check=False)


@pytest.fixture(scope="module")
def page(app):
    with chromium_page() as tab:
        yield tab


def visit(page, app, path: str) -> None:
    """Open a page by its URL, as a bookmark does: it must come with the app's own navigation."""
    page.goto(f"{app['url']}/{path}")
    settle(page)
    sync_api.expect(page.get_by_test_id("stSidebarNav")).to_contain_text("Classify an image")


def png_bytes() -> bytes:
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, :32] = (200, 40, 40)
    pixels[16:48, 32:] = (30, 90, 220)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_page_classify_and_train(app, page, screenshots):
    expect = sync_api.expect

    def shoot(page, name: str) -> None:
        shoot_to(page, screenshots / f"{name}.png")

    visit(page, app, "")
    expect(page.get_by_role("heading", name="Best runs")).to_be_visible()
    # The first chart a fresh browser draws waits for Plotly's script chunk: seconds on a busy machine.
    expect(page.locator(".js-plotly-plot")).to_have_count(1, timeout=30_000)
    shoot(page, "overview")

    visit(page, app, "per-class")
    expect(page.get_by_role("heading", name="Most confused pairs")).to_be_visible()
    expect(page.get_by_text("Same prediction")).to_be_visible()
    shoot(page, "per-class")

    visit(page, app, "misclassified")
    expect(page.locator('[data-testid="stImage"] img').first).to_be_visible()
    shoot(page, "misclassified")

    visit(page, app, "classify")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": "flag.png", "mimeType": "image/png", "buffer": png_bytes()}
    )
    expect(page.get_by_text("What baseline-reference sees: 32 × 32, upscaled")).to_be_visible(timeout=60_000)
    expect(page.locator(".js-plotly-plot")).to_have_count(1, timeout=120_000)  # the model loads once
    settle(page)
    expect(page.get_by_text("backbone weights are not cached")).to_be_visible()
    shoot(page, "classify")

    for path, heading in (("robustness", "Robustness to corruptions"), ("feature-map", "Feature map")):
        visit(page, app, path)
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)

    visit(page, app, "train")
    page.get_by_role("spinbutton", name="epochs", exact=True).first.fill("1")
    page.get_by_role("spinbutton", name="epochs", exact=True).first.press("Enter")
    settle(page)
    page.get_by_role("spinbutton", name="validation size", exact=True).first.fill("20")
    page.get_by_role("spinbutton", name="validation size", exact=True).first.press("Enter")
    settle(page)
    page.get_by_role("textbox", name="Run id (optional)").first.fill("e2e-job")
    page.get_by_role("textbox", name="Run id (optional)").first.press("Enter")
    settle(page)
    expect(page.get_by_text("--epochs 1 --validation_size 20 --run-id e2e-job")).to_be_visible()
    page.get_by_role("button", name="Start training").first.click()
    expect(page.get_by_text("Run e2e-job finished")).to_be_visible(timeout=240_000)
    job_log = (Path(app["env"]["CIFAR_ARTIFACTS"]) / "jobs" / "e2e-job.log").read_text()
    assert "job taken by standby process" in job_log, job_log[-2000:]
    settle(page)
    shoot(page, "train")
    page.get_by_role("tab", name="InceptionV3 transfer").click()
    expect(page.get_by_text("Not cached yet: the InceptionV3 weights.")).to_be_visible()
    shoot(page, "train-transfer")

    visit(page, app, "comparison")
    expect(page.get_by_role("heading", name="Learning curves")).to_be_visible()
    expect(page.get_by_text("e2e-job").first).to_be_visible()
    assert page.locator(".js-plotly-plot").count() >= 3
    shoot(page, "comparison")

    log = app["log"].read_text()
    assert "Traceback" not in log, log[-3000:]
