"""End to end: the real app in `streamlit run`, driven by a headless Chromium (Debian's package).

Fixture runs plus one real tiny baseline trained with the CLI on a synthetic CIFAR10_NPZ (so
Classify runs a model); the test visits every page, classifies an upload, trains a one-epoch
job from the Train page, sees it in Comparison, and saves a full-page screenshot of every page
to docs/screenshots/<page>.png.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.pages.factory import labels_of, synthetic_npz, write_run

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is not installed (apt-get install -y chromium chromium-driver)", allow_module_level=True
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit did not become healthy in {seconds:.0f} s:\n{log.read_text()[-3000:]}")


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
    }
    trained = subprocess.run(
        [sys.executable, "-m", "cifar", "train", "baseline", "--run-id", "baseline-reference",
         "--epochs", "1", "--validation_size", "20"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    write_run(root / "artifacts", "baseline-best", "baseline", labels, 0.8, seed=2, learning_rate=5e-4)
    write_run(root / "artifacts", "transfer-reference", "transfer", labels, 0.85, seed=3, epochs=4)

    port = free_port()
    log = root / "streamlit.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, log)
        yield {"url": url, "env": env, "log": log}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        _stop_jobs(env)


def _stop_jobs(env: dict) -> None:
    """Cancel a job the test started, if it is still running (it is its own process group)."""
    code = "from cifar.jobs import active_job, cancel_job\njob = active_job()\njob and cancel_job(job.run_id)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, timeout=60, check=False)


@pytest.fixture(scope="module")
def page(app):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        yield tab
        browser.close()


def visit(page, app, path: str) -> None:
    page.goto(f"{app['url']}/{path}")
    settle(page)


def settle(page, quiet_ms: int = 800) -> None:
    """Wait until the script has finished and stays finished for a moment."""
    page.wait_for_selector(IDLE, state="attached")
    page.wait_for_timeout(quiet_ms)
    page.wait_for_selector(IDLE, state="attached")
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]'
    ).first.inner_text()


CONTENT_HEIGHT = """() => Math.max(...Array.from(document.querySelectorAll(
    '[data-testid="stMain"], [data-testid="stAppViewContainer"], [data-testid="stMainBlockContainer"]'
), e => e.scrollHeight), document.body.scrollHeight)"""


def shoot(page, name: str) -> None:
    """A full-page screenshot: Streamlit scrolls inside a container, so grow the window to fit."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    viewport = page.viewport_size
    height = min(int(page.evaluate(CONTENT_HEIGHT)) + 40, 12_000)
    page.set_viewport_size({"width": viewport["width"], "height": max(height, viewport["height"])})
    page.wait_for_timeout(1000)  # let Plotly re-layout and finish its transitions
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    page.set_viewport_size(viewport)


def png_bytes() -> bytes:
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, :32] = (200, 40, 40)
    pixels[16:48, 32:] = (30, 90, 220)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_page_classify_and_train(app, page):
    expect = sync_api.expect

    visit(page, app, "")
    expect(page.get_by_role("heading", name="Headline accuracy")).to_be_visible()
    expect(page.locator(".js-plotly-plot")).to_have_count(1)
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
    expect(page.get_by_text("What the model sees")).to_be_visible(timeout=60_000)
    expect(page.locator(".js-plotly-plot")).to_have_count(1, timeout=120_000)  # the model loads once
    settle(page)
    expect(page.get_by_text("backbone weights are not cached")).to_be_visible()
    shoot(page, "classify")

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
