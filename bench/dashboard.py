"""The dashboard on the real data, in headless Chromium: cold start, warm render per page, peak RSS.

    PYTHONPATH=. .venv/bin/python bench/dashboard.py

Starts `streamlit run streamlit_app.py` against the real `artifacts/` and Keras home (no overrides:
CIFAR_ARTIFACTS, KERAS_HOME and CIFAR10_NPZ are removed from its environment), then measures

- cold start: from starting the process to the Overview page fully rendered;
- warm render of every page: click its sidebar link (in-app navigation from another page; with
  `--reload`, a full page load of its URL instead) until the script is idle, every Plotly chart is
  drawn and every image is loaded; the median of 3 visits after one warm-up visit. Classify
  includes uploading a real photo (bench/photos/dog-kphotoalbum-1.jpg) and every default model's top-k
  answer; "classify upload" is the upload-to-answer part alone;
- first upload: right after the cold start, Classify opened and the photo uploaded at once: how
  long the first visitor waits while the models may still be loading in the background; and, on
  a second fresh server, the first upload after READ_S seconds on the Overview (a person reading it);
- peak RSS of the server (VmHWM) after every page, Classify's models included.

Saves a full-page screenshot of every page to docs/screenshots/<page>.png (Classify twice: the
photo at full resolution, and as the 32 x 32 thumbnail in classify-thumbnail.png) and writes
bench/dashboard_timings.md. Any page showing a Streamlit exception fails the run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dashboard import pages  # noqa: E402
from tests.e2e.browser import (  # noqa: E402
    EXCEPTION,
    BrowserError,
    check_no_exception,
    chromium_page,
    shoot,
    shoot_from,
    start_streamlit,
    stop,
    wait_healthy,
)

TARGET_S = 1.5
READ_S = 20  # seconds a first visitor spends on the Overview before uploading a photo
QUIET_MS = 800
OVERRIDES = ("CIFAR_ARTIFACTS", "KERAS_HOME", "CIFAR10_NPZ", "TF_CONFIG")
# url path (also the screenshot's name) -> (the sidebar link, the page's st.title)
PAGES = {page.url_path: (page.title, page.heading) for page in pages.PAGES}
UPLOADER = '[data-testid="stFileUploaderDropzoneInput"]'
ANSWER = '[data-testid="stPlotlyChart"], [data-testid="stAlertContentWarning"]'  # chart, or warnings only

# True once the page has rendered: the script is idle, the page's title is there, nothing is stale
# or a skeleton, every Plotly chart has drawn its SVG and every image has loaded. An exception
# element or a "Page not found" dialog also ends the wait (the caller then fails).
RENDERED = """([title, extra]) => {
  if (document.querySelector('[data-testid="stException"]')) return true;
  if ([...document.querySelectorAll('[role="dialog"]')].some(d => d.textContent.includes('not found')))
    return true;
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (![...document.querySelectorAll('h1')].some(h => h.textContent.includes(title))) return false;
  if (document.querySelector('[data-stale="true"], [data-testid="stSkeleton"]')) return false;
  for (const chart of document.querySelectorAll('[data-testid="stPlotlyChart"]'))
    if (!chart.querySelector('.js-plotly-plot .main-svg')) return false;
  for (const img of document.querySelectorAll('[data-testid="stMain"] img'))
    if (!img.complete || img.naturalWidth === 0) return false;
  if (extra && !document.querySelector(extra)) return false;
  return true;
}"""
ELEMENTS = """() => document.querySelectorAll('[data-testid="stElementContainer"]').length"""


def device() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Chromium headless"


def proc_status(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


PHOTO = ROOT / "bench" / "photos" / "dog-kphotoalbum-1.jpg"  # a real photo, 640 x 426
THUMBNAIL_MODE = "a 32 × 32 thumbnail, as in CIFAR-10"  # Classify's radio option


def first_upload_after_reading(page, env: dict, upload: tuple[str, bytes]) -> float:
    """A fresh server: the Overview, READ_S seconds of reading, then Classify and the photo;
    seconds from upload to answer."""
    log = Path(tempfile.mkdtemp(prefix="dashboard-bench-")) / "streamlit.log"
    server, url = start_streamlit(env, log)
    try:
        wait_healthy(url, server, log, seconds=180)
        bench = Bench(page, url, log)
        page.goto(url)
        bench.wait_rendered("overview")
        page.wait_for_timeout(READ_S * 1000)
        return bench.classify(upload)[1]
    finally:
        stop(server)


def upload_image() -> tuple[str, bytes]:
    """A real photo, as a person uploads it (JPEG)."""
    return PHOTO.name, PHOTO.read_bytes()


class Bench:
    """Visits pages by clicking the sidebar (in-app navigation, as a user does; the session and
    the server's caches are warm) or, with `reload`, by a full page load of the page's URL."""

    def __init__(self, page, url: str, log: Path, reload: bool = False):
        self.page, self.url, self.log, self.reload = page, url, log, reload

    def fail(self, message: str) -> None:
        raise BrowserError(f"{message}\n--- streamlit log (end) ---\n{self.log.read_text()[-3000:]}")

    def wait_rendered(self, path: str, extra: str | None = None, timeout_ms: int = 180_000) -> float:
        """Wait until the page has rendered and stays so for QUIET_MS; the perf_counter it first did.

        The Train page's job monitor is a fragment that reruns every 2 s: a rerun that only
        refreshes it (no element added or removed) does not move the time."""
        title = PAGES[path][1]
        done, count = None, -1
        while True:
            try:
                self.page.wait_for_function(RENDERED, arg=[title, extra], polling=20, timeout=timeout_ms)
            except Exception as error:
                self.fail(f"/{path} did not render in {timeout_ms / 1000:.0f} s: {error}")
            now = time.perf_counter()
            self.check(path)
            elements = self.page.evaluate(ELEMENTS)
            if elements != count:
                done, count = now, elements
            self.page.wait_for_timeout(QUIET_MS)
            if self.page.evaluate(RENDERED, [title, extra]) and self.page.evaluate(ELEMENTS) == count:
                self.check(path)
                return done

    def check(self, path: str) -> None:
        try:
            check_no_exception(self.page)
        except BrowserError as error:
            self.fail(f"/{path}: {error}")
        dialog = self.page.locator('[role="dialog"]')
        if dialog.count() and "not found" in dialog.first.inner_text():
            self.fail(f"/{path}: {dialog.first.inner_text()}")

    def go(self, path: str) -> float:
        """Start navigating to `path`; the perf_counter when it started."""
        start = time.perf_counter()
        if self.reload:
            self.page.goto(f"{self.url}/{'' if path == 'overview' else path}")
        else:
            sidebar = self.page.locator('[data-testid="stSidebarNav"]')
            sidebar.get_by_role("link", name=PAGES[path][0], exact=True).click()
        return start

    def leave(self, path: str) -> None:
        """In-app navigation needs another page to come from (its title tells the pages apart)."""
        if not self.reload:
            other = "comparison" if path == "overview" else "overview"
            self.go(other)
            self.wait_rendered(other)

    def visit(self, path: str) -> float:
        self.leave(path)
        start = self.go(path)
        return self.wait_rendered(path) - start

    def classify(self, upload: tuple[str, bytes]) -> tuple[float, float]:
        """(navigate + upload + answer, upload + answer) in seconds, without the quiet waits."""
        self.leave("classify")
        start = self.go("classify")
        rendered = self.wait_rendered("classify", extra=UPLOADER)
        uploaded = time.perf_counter()
        name, data = upload
        self.page.locator(UPLOADER).set_input_files({"name": name, "mimeType": "image/jpeg", "buffer": data})
        answer = self.wait_rendered("classify", extra=ANSWER) - uploaded
        return rendered - start + answer, answer


def timed_visits(bench: Bench, path: str, repeat: int, upload) -> tuple[float, float | None]:
    measure = (lambda: bench.classify(upload)) if path == "classify" else (lambda: (bench.visit(path), None))
    measure()  # warm-up
    runs = [measure() for _ in range(repeat)]
    total = statistics.median(r[0] for r in runs)
    part = statistics.median(r[1] for r in runs) if path == "classify" else None
    return total, part


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed visits per page (after one warm-up)")
    parser.add_argument("--reload", action="store_true", help="full page loads instead of the sidebar")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "dashboard_timings.md")
    return parser.parse_args()


def real_environment() -> dict[str, str]:
    """The server's environment without the test overrides (real artifacts and Keras home); this
    process drops them too, since upload_image reads the real cache."""
    env = {key: value for key, value in os.environ.items() if key not in OVERRIDES}
    env.update({"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    for key in OVERRIDES:
        if key in os.environ:
            print(f"note: {key} is set here; the server runs without it (real artifacts and Keras home)")
            os.environ.pop(key)
    return env


def screenshots(bench: Bench, page, upload: bytes, folder: Path) -> None:
    """Every page's screenshot, Classify's "Why" section and thumbnail mode, Train's transfer tab."""
    for path in PAGES:  # screenshots last, so that no timing includes them
        if path == "classify":
            bench.classify(upload)
        else:
            bench.visit(path)
        shoot(page, folder / f"{path}.png")
        if path == "classify":  # its "Why" section alone: Grad-CAM and nearest images
            shoot_from(page, "Why: where each model looks", folder / "classify-explain-cam.png")
            page.get_by_text(THUMBNAIL_MODE).click()
            bench.wait_rendered("classify", extra=ANSWER)
            shoot(page, folder / "classify-thumbnail.png")
    page.get_by_role("tab", name="InceptionV3 transfer").click()
    bench.wait_rendered("train")
    shoot(page, folder / "train-transfer.png")
    if page.locator(EXCEPTION).count():
        bench.fail("an exception appeared while taking screenshots")


def main() -> int:
    args = arguments()
    env = real_environment()
    from cifar.store.runs import best_runs, list_runs

    runs = list_runs()
    if not runs:
        print("artifacts/runs/ holds no complete run: train one first", file=sys.stderr)
        return 2
    models = [run.run_id for run in best_runs(runs).values() if run is not None]
    upload = upload_image()
    log = Path(tempfile.mkdtemp(prefix="dashboard-bench-")) / "streamlit.log"

    rows: dict[str, float] = {}
    with chromium_page(timeout_ms=180_000) as page:
        after_reading = first_upload_after_reading(page, env, upload)
        print(f"first upload after {READ_S} s on the Overview: {after_reading:.2f} s", flush=True)
    with chromium_page(timeout_ms=180_000) as page:  # the browser starts before the clock does
        start = time.perf_counter()
        server, url = start_streamlit(env, log)
        try:
            wait_healthy(url, server, log, seconds=180)
            healthy = time.perf_counter() - start
            bench = Bench(page, url, log, reload=args.reload)
            page.goto(url)
            cold = bench.wait_rendered("overview") - start
            print(f"cold start: {cold:.2f} s (server healthy after {healthy:.2f} s)", flush=True)
            first = bench.classify(upload)[1]
            print(f"first upload after the cold start: {first:.2f} s to the answer", flush=True)

            for path in PAGES:
                total, part = timed_visits(bench, path, args.repeat, upload)
                rows[path] = total
                if part is not None:
                    rows["classify upload"] = part
                note = f" (upload to answer {part:.2f} s)" if part is not None else ""
                print(f"{path}: {total:.2f} s{note}", flush=True)
            peak = proc_status(server.pid, "VmHWM")
            current = proc_status(server.pid, "VmRSS")
            screenshots(bench, page, upload, args.screenshots)
        finally:
            stop(server)
    text = log.read_text()
    if "Traceback" in text:
        print(f"the server logged a traceback ({log}):\n{text[-3000:]}", file=sys.stderr)
        return 1

    measured = {"cold": cold, "healthy": healthy, "first": first, "after_reading": after_reading}
    lines = report(args, runs, models, rows, measured, peak, current)
    args.out.write_text("\n".join(lines))
    print("\n" + "\n".join(lines))
    return 0


def report(args, runs, models, rows: dict[str, float], measured: dict[str, float], peak, current) -> list:
    """bench/dashboard_timings.md's lines."""
    cold, healthy, first, after_reading = (
        measured[key] for key in ("cold", "healthy", "first", "after_reading")
    )
    table = ["| page | warm render (s) | target ≤ 1.5 s |", "|---|---:|:---:|"]
    for name, seconds in rows.items():
        table.append(f"| {name} | {seconds:.2f} | {'yes' if seconds <= TARGET_S else '**no**'} |")
    run_ids = ", ".join(f"`{run.run_id}`" for run in runs)
    lines = [
        f"## Dashboard (headless Chromium, {device()})",
        "",
        f"`PYTHONPATH=. .venv/bin/python bench/dashboard.py` on {time.strftime('%Y-%m-%d %H:%M')}, "
        f"runs in artifacts/: {run_ids}; Classify loads {', '.join(f'`{m}`' for m in models)}.",
        f"Load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}.",
        "",
        *table,
        "",
        f"Warm render: median of {args.repeat} "
        f"{'full page loads' if args.reload else 'sidebar clicks (in-app navigation)'} after one warm-up, "
        "until the script is "
        "idle, charts drawn and images loaded. Classify: navigate, upload a real photo "
        f"(`{PHOTO.relative_to(ROOT)}`), every default model's top-k; `classify upload` is upload to "
        "answer alone.",
        "",
        f"- Cold start (process start to Overview rendered): {cold:.2f} s "
        f"(server healthy after {healthy:.2f} s)",
        f"- First upload right after the cold start (Classify's models loading in the background since "
        f"the Overview opened): {first:.2f} s from upload to answer",
        f"- First upload after {READ_S} s on the Overview (a fresh server): {after_reading:.2f} s "
        "from upload to answer",
        f"- Peak RSS of the streamlit server after every page (VmHWM): {peak / 2**20:,.0f} MiB "
        f"(VmRSS at the end {current / 2**20:,.0f} MiB)",
        "",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
