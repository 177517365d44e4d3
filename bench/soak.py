"""Memory soak: does one long-lived process (the dashboard) leak across repeated work?

In one process:
  1. 50 consecutive transfer-head retrains (`build_head` + the training compile + `fit`, 3 epochs on
     5,000 random 2048-d features, `keras.backend.clear_session()` between), as a head retrain on
     cached features does;
  2. 1,000 predictions through one `cifar.inference.predict.Predictor` of a tiny baseline run, on uploads of
     varied formats, modes and sizes (bytes as the uploader gives them, and camera-like arrays).

RSS (VmRSS from /proc/self/status) is printed after the first 5 iterations and at the end of
each phase. Everything lives in a temporary KERAS_HOME / CIFAR_ARTIFACTS; nothing is downloaded.

Then three hostile uploads at once (threads, as Streamlit sessions are), each in a fresh process:
its peak RSS growth with this checkout's `cifar` and with the code before issue #13's bound.

The results are written to bench/SOAK.md.

    python bench/soak.py                    # the full soak (several minutes on 2 CPU cores)
    python bench/soak.py --retrains 10 --predictions 200
    python bench/soak.py --bombs-only       # only the hostile uploads: rewrites only their section
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(tempfile.mkdtemp(prefix="cifar-soak-"))
os.environ["KERAS_HOME"] = str(ROOT / "keras")  # before Keras is imported
os.environ["CIFAR_ARTIFACTS"] = str(ROOT / "artifacts")
os.environ.pop("CIFAR10_NPZ", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SOAK_MD = REPO / "bench" / "SOAK.md"
SOAK_HEADING = "# Memory soak"
BOMBS_HEADING = "## Three hostile uploads at once"
BEFORE_BOUND = "72a8189"  # the last commit before issue #13 bounded the memory of a decode

import numpy as np  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def uploads(n: int, seed: int = 0) -> list:
    """Varied uploads: PNG / JPEG / WebP / GIF / BMP / TIFF bytes of several modes, and arrays."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    kinds = [
        ("PNG", "RGB"),
        ("JPEG", "RGB"),
        ("WEBP", "RGB"),
        ("PNG", "RGBA"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
        ("JPEG", "L"),
        ("PNG", "LA"),
    ]
    out = []
    for i in range(n):
        width, height = (int(v) for v in rng.integers(16, 640, 2))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        if i % 10 == 9:
            out.append(pixels)
            continue
        fmt, mode = kinds[i % len(kinds)]
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buffer, fmt)
        out.append(buffer.getvalue())
    return out


def head_retrains(count: int, epochs: int, samples: int) -> list[float]:
    import keras

    from cifar.config import NUM_CLASSES, TransferConfig
    from cifar.modeling.models import build_head
    from cifar.training.fitting import compile_model

    config = TransferConfig(epochs=epochs)
    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (samples, config.feature_dim)).astype(np.float32)
    labels = np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES, samples)]
    rss = []
    for i in range(count):
        keras.backend.clear_session()
        keras.utils.set_random_seed(i)
        head = build_head(config)
        compile_model(head, config, samples)
        head.fit(features, labels, batch_size=config.batch_size, epochs=epochs, shuffle=True, verbose=0)
        head.predict(features[:1000], batch_size=4096, verbose=0)
        del head
        gc.collect()
        rss.append(rss_mb())
        if (i + 1) % 10 == 0:
            print(f"  retrain {i + 1}/{count}: RSS {rss[-1]:.0f} MB", flush=True)
    keras.backend.clear_session()
    return rss


def job_retrains(count: int) -> list[float]:
    """Retrains the way the Train page starts them: `start_job` (a separate process), then poll.

    The tiny synthetic dataset keeps each job short; what is measured is this process's RSS.
    """
    from cifar.config import BaselineConfig
    from cifar.service.jobs import job_status, start_job

    rng = np.random.default_rng(2)
    npz = ROOT / "tiny.npz"
    np.savez(
        npz,
        x_train=rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8),
        y_train=(np.arange(200) % 10).astype(np.uint8),
        x_test=rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8),
        y_test=(np.arange(50) % 10).astype(np.uint8),
    )
    os.environ["CIFAR10_NPZ"] = str(npz)
    rss = []
    try:
        for i in range(count):
            job = start_job(BaselineConfig(epochs=1, validation_size=20), run_id=f"job-{i}")
            while job_status(job.run_id).active:
                time.sleep(0.2)
            if job_status(job.run_id).state != "finished":
                raise RuntimeError(f"job {job.run_id} ended {job_status(job.run_id).state}")
            gc.collect()
            rss.append(rss_mb())
            if (i + 1) % 10 == 0:
                print(f"  job {i + 1}/{count}: RSS {rss[-1]:.0f} MB", flush=True)
    finally:
        os.environ.pop("CIFAR10_NPZ", None)
    return rss


def predictions(count: int) -> list[float]:
    from cifar.config import BaselineConfig
    from cifar.inference.predict import Predictor
    from cifar.sources.assets import Cifar10
    from cifar.training.train import train

    rng = np.random.default_rng(1)
    data = Cifar10(
        rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8),
        (np.arange(100) % 10).astype(np.uint8),
        rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
        (np.arange(30) % 10).astype(np.uint8),
    )
    train(BaselineConfig(epochs=1, validation_size=20), data=data, run_id="soak")
    predictor = Predictor.for_run("soak")
    images = uploads(min(count, 200))
    rss = []
    for i in range(count):
        predictor.predict(images[i % len(images)], top_k=3)
        if i % 10 == 9 or i < 5:
            gc.collect()
            rss.append(rss_mb())
        if (i + 1) % 250 == 0:
            print(f"  prediction {i + 1}/{count}: RSS {rss[-1]:.0f} MB", flush=True)
    return rss


def concurrent_bombs(before: str) -> list[str]:
    """Peak RSS growth of one process decoding hostile uploads at once, before and after."""
    from tests.robustness.test_robust_uploads import decode_in_subprocess

    old_code = ROOT / "before"
    old_code.mkdir()
    archive = subprocess.run(["git", "archive", before, "cifar"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old_code)], input=archive.stdout, check=True)
    workloads = [
        ("1 PNG declaring 10900 x 10900", "rgb-png", 10900, 1),
        ("3 PNGs declaring 10900 x 10900, at once", "rgb-png", 10900, 3),
        ("3 PNGs of 8000 x 8000 (the largest allowed), at once", "rgb-png", 8000, 3),
    ]
    lines = [f"{'uploads':54} {'file':>8} {'before':>9} {'after':>9}  after: outcome"]
    for name, kind, side, copies in workloads:
        old = decode_in_subprocess(kind, side, copies=copies, code=old_code)
        new = decode_in_subprocess(kind, side, copies=copies)
        refused = sum("error" in result for result in new["results"])
        outcome = f"{refused} refused" if refused else f"{copies} decoded in {new['seconds']:.1f} s"
        lines.append(
            f"{name:54} {new['bytes'] / 1e3:5.0f} KB {old['peak'] / 2**20:6.0f} MB "
            f"{new['peak'] / 2**20:6.0f} MB  {outcome}"
        )
        print(lines[-1], flush=True)
    return lines


def bombs_section(lines: list[str], before: str) -> str:
    from cifar.sources.images import DECODE_BUDGET

    table = "\n".join(lines)
    return (
        f"Output of `bench/soak.py --bombs-only` on {machine()}, {time.strftime('%Y-%m-%d')}: peak RSS "
        "growth of one fresh process (Python with `cifar` imported, as the dashboard's server has it) "
        "while it decodes the uploads in threads, as Streamlit sessions do; *before* with `cifar/` of "
        f"commit {before}, *after* with this checkout's.\n\n```\n{table}\n```\n\n"
        "A decode's memory is now estimated from the image's header (bytes a pixel per mode and "
        f"format) and refused over {DECODE_BUDGET / 2**20:.0f} MB "
        "(`cifar.sources.images.DECODE_BUDGET`), and "
        "one decode runs at a time, so concurrent uploads queue instead of stacking."
    )


def soak_section(lines: list[str]) -> str:
    return (
        f"Output of `bench/soak.py` (defaults) on {machine()}, {time.strftime('%Y-%m-%d')}. "
        "RSS of the one process doing the work.\n\n```\n" + "\n".join(lines) + "\n```\n\n"
        "The dashboard starts retrains as background jobs (first row): its own memory stays flat. "
        "Training inside one long-lived process (second row) grows in TensorFlow/Keras itself even "
        "with `clear_session()`, which is why jobs are separate processes."
    )


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores"


def rewrite_section(heading: str, body: str) -> None:
    """Replace the section under `heading` in bench/SOAK.md (up to the next `## `), or append it."""
    text = SOAK_MD.read_text() if SOAK_MD.exists() else ""
    start = text.find(heading + "\n")
    if start < 0:
        text = (text.rstrip() + "\n\n" if text else "") + f"{heading}\n\n{body}\n"
    else:
        end = text.find("\n## ", start + len(heading))
        rest = "" if end < 0 else "\n" + text[end + 1 :]
        text = f"{text[:start]}{heading}\n\n{body}\n{rest}"
    SOAK_MD.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrains", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--predictions", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=50, help="retrains as background jobs")
    parser.add_argument("--bombs-only", action="store_true", help="only the hostile uploads at once")
    parser.add_argument("--before", default=BEFORE_BOUND, help="git revision of the code measured as before")
    args = parser.parse_args()

    print(f"soak in {ROOT} (pid {os.getpid()}), RSS at start {rss_mb():.0f} MB", flush=True)
    try:
        if not args.bombs_only:
            rewrite_section(SOAK_HEADING, soak_section(soak(args)))
        rewrite_section(BOMBS_HEADING, bombs_section(concurrent_bombs(args.before), args.before))
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
    print(f"\nwrote {SOAK_MD.relative_to(REPO)}")
    return 0


def soak(args) -> list[str]:
    """The retrain and prediction phases: the lines of the table printed at the end."""
    rows = []
    if args.jobs:
        job_rss = job_retrains(args.jobs)
        rows.append(
            (
                f"{args.jobs} retrains as background jobs (the Train page)",
                job_rss[min(4, len(job_rss) - 1)],
                job_rss[-1],
            )
        )
    started = time.perf_counter()
    retrain_rss = head_retrains(args.retrains, args.epochs, args.samples)
    rows.append(
        (
            f"{args.retrains} head retrains ({args.samples} x 2048, {args.epochs} epochs)",
            retrain_rss[min(4, len(retrain_rss) - 1)],
            retrain_rss[-1],
        )
    )
    retrain_seconds = time.perf_counter() - started
    started = time.perf_counter()
    predict_rss = predictions(args.predictions)
    rows.append(
        (
            f"{args.predictions} predictions, varied uploads",
            predict_rss[min(4, len(predict_rss) - 1)],
            predict_rss[-1],
        )
    )
    predict_seconds = time.perf_counter() - started

    lines = [f"{'phase':52} {'RSS after 5':>12} {'RSS at end':>11} {'change':>8}"]
    for name, after_five, end in rows:
        lines.append(f"{name:52} {after_five:9.0f} MB {end:8.0f} MB {(end - after_five) / after_five:+8.1%}")
    timing = f"retrains {retrain_seconds:.0f} s; predictions {predict_seconds:.0f} s"
    lines += ["", f"{timing} (with the tiny training)"]
    print("\n" + "\n".join(lines), flush=True)
    return lines


if __name__ == "__main__":
    sys.exit(main())
