"""Helpers shared by the browser test and `bench/dashboard.py`: start `streamlit run`, launch
Debian's headless Chromium with playwright, wait for a page to finish rendering, take full-page
screenshots. No pytest here: failures raise `BrowserError`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
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
VIEWPORT = {"width": 1400, "height": 900}
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
EXCEPTION = '[data-testid="stException"]'
CONTENT_HEIGHT = """() => Math.max(...Array.from(document.querySelectorAll(
    '[data-testid="stMain"], [data-testid="stAppViewContainer"], [data-testid="stMainBlockContainer"]'
), e => e.scrollHeight), document.body.scrollHeight)"""


class BrowserError(AssertionError):
    """The app or the browser did not do what was expected."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_streamlit(
    env: dict, log: Path, port: int | None = None, folder: Path = REPO
) -> tuple[subprocess.Popen, str]:
    """`streamlit run streamlit_app.py` in `folder` (the repository), headless, on 127.0.0.1;
    (process, url)."""
    port = port or free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false"],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_healthy(url: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"streamlit exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise BrowserError(f"streamlit did not become healthy in {seconds:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def chromium_page(timeout_ms: int = 60_000):
    """A playwright page in a fresh headless Chromium (closed on exit)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            tab = browser.new_context(viewport=dict(VIEWPORT)).new_page()
            tab.set_default_timeout(timeout_ms)
            yield tab
        finally:
            browser.close()


def check_no_exception(page) -> None:
    errors = page.locator(EXCEPTION)
    if errors.count():
        raise BrowserError(f"{page.url} shows an exception:\n{errors.first.inner_text()}")


def settle(page, quiet_ms: int = 800) -> None:
    """Wait until the script has finished and stays finished for a moment; fail on an exception."""
    page.wait_for_selector(IDLE, state="attached")
    page.wait_for_timeout(quiet_ms)
    page.wait_for_selector(IDLE, state="attached")
    check_no_exception(page)


def shoot_from(page, heading: str, path: Path) -> None:
    """A screenshot from the heading named `heading` to the end of the page."""
    viewport = page.viewport_size
    height = min(int(page.evaluate(CONTENT_HEIGHT)) + 40, 12_000)
    page.set_viewport_size({"width": viewport["width"], "height": max(height, viewport["height"])})
    page.wait_for_timeout(1000)
    top = max(0.0, page.get_by_role("heading", name=heading).bounding_box()["y"] - 10)
    page.screenshot(
        path=str(path), clip={"x": 0, "y": top, "width": viewport["width"], "height": height - top}
    )
    page.set_viewport_size(viewport)


def shoot(page, path: Path) -> None:
    """A full-page screenshot: Streamlit scrolls inside a container, so grow the window to fit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    viewport = page.viewport_size
    page.mouse.move(viewport["width"] - 5, viewport["height"] - 5)  # no hover effects on the shot
    height = min(int(page.evaluate(CONTENT_HEIGHT)) + 40, 12_000)
    page.set_viewport_size({"width": viewport["width"], "height": max(height, viewport["height"])})
    page.wait_for_timeout(1000)  # let Plotly re-layout and finish its transitions
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(viewport)
