"""Performance against the machine's own limit, in one run; writes bench/PERFORMANCE.md.

    PYTHONPATH=. .venv/bin/python bench/benchmark.py            # everything (about 10 min on 2 cores)
    PYTHONPATH=. .venv/bin/python bench/benchmark.py --quick    # fewer repetitions

Needs the real data and weights (`python -m cifar fetch`); head and upload figures use the
committed reference runs and the cached features when they exist.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GMACS = {224: 2.84, 299: 5.71}  # InceptionV3 multiply-adds per image (G)
# Classify's pairs: the reference runs, and each model's best run (the dashboard's default).
PREDICTION_RUNS = {
    "reference": ("baseline-reference", "transfer-reference"),
    "best": ("baseline-best", "transfer-best"),
}


def matmul_peak(n: int = 4096, repeat: int = 10) -> float:
    """GFLOP/s of a large float32 matmul, the faster of TensorFlow's oneDNN kernel and XLA's:
    the practical ceiling of this machine."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    best = float("inf")
    for xla in (False, True):
        f = tf.function(lambda: tf.matmul(a, b), jit_compile=xla)
        f().numpy()
        best = min(best, *timeit.repeat(lambda f=f: f().numpy(), number=1, repeat=repeat))
    return 2 * n**3 / best / 1e9


def extraction_share(size: int, rounds: int, batches: int) -> tuple[float, float, float]:
    """(images/s, GFLOP/s, share of the matmul peak) of the real extractor (resize + preprocess +
    base in one graph, batch 50 on a CPU), each round measuring the peak right before the extraction.

    This machine's clock and neighbours change from minute to minute (a peak measured once varied
    from 335 to 440 GFLOP/s between runs); pairing each extraction with its own peak and taking
    the median share keeps the ratio honest."""
    from cifar.config import TransferConfig
    from cifar.modeling.features import CPU_BATCH, GPU_BATCH, gpu_available, make_extract_fn
    from cifar.sources.assets import load_cifar10, load_inception_weights

    config = TransferConfig(resize="bilinear", architecture="exact2015", input_size=size)
    batch = GPU_BATCH if gpu_available() else CPU_BATCH
    extract = make_extract_fn(config, load_inception_weights().path)
    pixels = load_cifar10().x_test[:batch]
    np.asarray(extract(pixels))  # compile
    rates, shares = [], []
    for _ in range(rounds):
        peak = matmul_peak(repeat=5)
        seconds = timeit.repeat(lambda: np.asarray(extract(pixels)), number=1, repeat=batches)
        rate = batch / statistics.median(seconds)
        rates.append(rate)
        shares.append(rate * GMACS[size] * 2 / peak)
    rate = statistics.median(rates)
    return rate, rate * GMACS[size] * 2, statistics.median(shares)


def head_epoch_seconds(
    n: int | None = None, epochs: int = 5, batch_size: int = 64
) -> tuple[list[float], str]:
    """Seconds of each epoch of the head's training, as `train_transfer` runs it (rows gathered
    from the cached 2048-d features, real ones if present); the default head (Dense(256),
    dropout 0.5, Adam), after one warm-up epoch that traces the functions."""
    from cifar.config import TransferConfig
    from cifar.modeling.models import build_head
    from cifar.sources.data import as_tensor, gathered_batches
    from cifar.training.fitting import HEAD_STEPS_PER_EXECUTION, compile_model
    from cifar.training.train import _one_hot

    features, source = _training_features()
    labels = np.random.default_rng(0).integers(0, 10, len(features))
    n = n or len(features)
    config = TransferConfig(epochs=epochs, batch_size=batch_size)
    head = build_head(config)
    compile_model(head, config, n, steps_per_execution=HEAD_STEPS_PER_EXECUTION)
    stream = gathered_batches(
        as_tensor(features), np.arange(n), batch_size, as_tensor(_one_hot(labels)), seed=0
    )
    seconds = []
    head.fit(stream, epochs=1, verbose=0, shuffle=False)  # traces the training function
    head.fit(stream, epochs=epochs, verbose=0, shuffle=False, callbacks=[epoch_clock(seconds)])
    return seconds, source


def epoch_clock(seconds: list[float]):
    """A Keras callback that appends each epoch's wall-clock seconds to `seconds`."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    return EpochClock()


def head_epoch_in_fresh_processes(batch_size: int, processes: int = 3) -> tuple[list[float], str]:
    """Every epoch time of `processes` fresh processes (this VM's speed wanders by +-30 % from
    minute to minute; one process's figure is one sample of that)."""
    seconds, source = [], ""
    for _ in range(processes):
        out = subprocess.run(
            [sys.executable, __file__, "--head-epochs", str(batch_size)],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        seconds += result["seconds"]
        source = result["source"]
    return seconds, source


def _training_features() -> tuple[np.ndarray, str]:
    from cifar.config import TransferConfig
    from cifar.modeling.features import FeatureSpec, cached_features
    from cifar.sources.assets import load_cifar10, load_inception_weights

    data = load_cifar10()
    config = TransferConfig()  # the reference's features (UpSampling2D(7), Keras' InceptionV3)
    spec = FeatureSpec.of(config, load_inception_weights(), "train", False, data.x_train)
    cached = cached_features(spec, len(data.x_train))
    if cached is not None:
        return cached, "cached real features"
    return np.random.default_rng(0).random((50000, 2048), dtype=np.float32), "random features"


def retrain_from_click(epochs: int = 10, standby: bool = True) -> float | None:
    """Seconds from `start_job` (what the Train page's button calls) to a finished run.

    With `standby`, as on the Train page: `warm_up` ran when the page was drawn and its standby
    process is ready (a user takes longer than its ~3 s to fill in the form). Without: a cold
    start, as for a click within those first seconds or with CIFAR_STANDBY=0.
    """
    from cifar.config import TransferConfig
    from cifar.service import jobs
    from cifar.service.standby import standby_ready, stop_standby, warm_up

    if "cached real" not in _training_features()[1]:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CIFAR_ARTIFACTS"] = tmp
        try:
            if standby:
                warm_up()
                deadline = time.time() + 120
                while not standby_ready() and time.time() < deadline:
                    time.sleep(0.1)
            start = time.perf_counter()
            job = jobs.start_job(TransferConfig(epochs=epochs))  # the reference config
            while jobs.job_status(job.run_id).active:
                time.sleep(0.1)
            state = jobs.job_status(job.run_id).state
            return time.perf_counter() - start if state == "finished" else None
        finally:
            stop_standby()
            os.environ.pop("CIFAR_ARTIFACTS", None)


def upload_latency(run_ids: tuple[str, ...], repeat: int) -> dict:
    """Bytes of a new 640x480 JPEG -> each run's top-3, warm; and the bare forward pass."""
    from PIL import Image

    from cifar.inference.predict import Predictor
    from cifar.sources.images import as_model_input, open_image
    from cifar.store.runs import RunError

    predictors = []
    for run_id in run_ids:
        try:
            predictors.append(Predictor.for_run(run_id))
        except (RunError, OSError) as error:
            print(f"upload latency: skipping {run_id} ({error})")
    if not predictors:
        return {}
    rng = np.random.default_rng(0)

    def photo() -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(buffer, "JPEG")
        return buffer.getvalue()

    uploads = iter([photo() for _ in range(repeat + 1)])  # a new one each time: the Predictor
    pixels = as_model_input(open_image(photo()))[None]  # keeps its latest answers

    def full():
        payload = next(uploads)
        for predictor in predictors:
            predictor.predict(payload, top_k=3)

    def forward():
        for predictor in predictors:
            predictor.probabilities(pixels)

    full(), forward()
    totals = timeit.repeat(full, number=1, repeat=repeat)
    forwards = timeit.repeat(forward, number=1, repeat=repeat)
    return {
        "models": [p.run.run_id for p in predictors],
        "p50": float(np.percentile(totals, 50)),
        "p95": float(np.percentile(totals, 95)),
        "forward_p50": float(np.percentile(forwards, 50)),
    }


def child_peak_mb(code: str) -> float | None:
    """Peak RSS (MB, VmHWM) of a fresh Python process running `code` against temporary artifacts.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child's ru_maxrss is at
    least this benchmark's own size at the fork."""
    report = (
        "\nfrom pathlib import Path\n"
        "status = Path('/proc/self/status').read_text().splitlines()\n"
        "print(next(int(line.split()[1]) for line in status if line.startswith('VmHWM:')) / 1024)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if "train(" in code:
            env["CIFAR_ARTIFACTS"] = tmp
        process = subprocess.run(
            [sys.executable, "-c", code + report], env=env, stdout=subprocess.PIPE, text=True, check=False
        )
    lines = process.stdout.strip().splitlines()
    return float(lines[-1]) if process.returncode == 0 and lines else None


def training_job_peak_rss() -> float | None:
    """Peak RSS (MB) of a real 3-epoch head-training process."""
    if "cached real" not in _training_features()[1]:
        return None
    return child_peak_mb(
        "from cifar.config import parse_config\n"
        "from cifar.training.train import train\n"
        "train(parse_config('transfer', {'epochs': 3}),"
        " run_id='rss')\n"
    )


def predictors_peak_rss(run_ids: tuple[str, ...]) -> float | None:
    """Peak RSS (MB) of a process that loads the runs' models and classifies one image with each."""
    return child_peak_mb(
        "import numpy as np\n"
        "from cifar.inference.predict import Predictor\n"
        f"for run_id in {list(run_ids)!r}:\n"
        "    Predictor.for_run(run_id).predict(np.zeros((32, 32, 3), np.uint8))\n"
    )


def describe_machine() -> str:
    from cifar.modeling.distribute import describe_device

    return describe_device()


def retrain_click_rows(report, quick: bool) -> None:
    """A 10-epoch head retrain from the Train button, with the standby process ready and cold."""
    for standby, label in ((True, "Train page open: standby process ready"), (False, "cold start")):
        clicks = [retrain_from_click(standby=standby) for _ in range(1 if quick else 3)]
        measured = [c for c in clicks if c is not None]
        click = statistics.median(measured) if measured else None
        report(
            f"10-epoch head retrain from the Train button ({label})",
            "n/a (no cached features)"
            if click is None
            else f"{click:.1f} s (median of {len(measured)}: {', '.join(f'{c:.1f}' for c in measured)})",
            "≤ 15 s",
            None if click is None else click <= 15,
        )


def prediction_rows(report, repeat: int) -> None:
    """Upload latency and the predictors' peak memory, for the reference and the best runs."""
    for label, run_ids in PREDICTION_RUNS.items():
        upload = upload_latency(run_ids, repeat=repeat * 3)
        if upload:
            ratio = upload["p50"] / upload["forward_p50"]
            report(
                f"upload latency ({label}), bytes -> top-3 of {' + '.join(upload['models'])}",
                f"p50 {upload['p50'] * 1000:.0f} ms, p95 {upload['p95'] * 1000:.0f} ms; forward alone "
                f"{upload['forward_p50'] * 1000:.0f} ms (×{ratio:.2f})",
                "p50 ≤ 1.5 × forward",
                ratio <= 1.5,
            )
    for label, run_ids in PREDICTION_RUNS.items():
        if peak_mb := predictors_peak_rss(run_ids):
            report(f"peak RSS, fresh process with the {label} models loaded", f"{peak_mb:.0f} MB")


def performance_markdown(device: str, rows: list, rates: dict, scaling: list) -> list[str]:
    """PERFORMANCE.md's lines, with the other scripts' tables appended."""
    lines = [
        "# Performance",
        "",
        f"Generated by `bench/benchmark.py` in one run on **{device}** "
        f"({time.strftime('%Y-%m-%d')}). Ratios are against the matmul peak measured in the same run.",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        "## Scaling with the number of images",
        "",
        f"| images | extraction at 224 px (s; images ÷ the {rates[224]:.1f} img/s above: chunks of 1,000 "
        "images, no fixed cost) | head training (s / epoch, median of 3) |",
        "|---|---|---|",
        *[f"| {n:,} | {n / rates[224]:.0f} | {s:.2f} |" for n, s in scaling],
        "",
        "Dashboard page timings: `bench/dashboard.py` in headless Chromium (below, if it has run).",
    ]
    for name in ("baseline_epoch.md", "dashboard_timings.md"):  # written by their own scripts
        extra = ROOT / "bench" / name
        if extra.exists():
            lines += ["", extra.read_text()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--head-epochs", type=int, metavar="BATCH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.head_epochs:  # the child of head_epoch_in_fresh_processes
        seconds, source = head_epoch_seconds(batch_size=args.head_epochs)
        print(json.dumps({"seconds": seconds, "source": source}))
        return
    repeat = 3 if args.quick else 10
    rows: list[tuple[str, str, str, str]] = []  # figure, measured, target, verdict

    def report(figure: str, measured: str, target: str = "", met: bool | None = None) -> None:
        rows.append((figure, measured, target, "" if met is None else ("met" if met else "missed")))
        print(rows[-1])

    device = describe_machine()
    print(f"device: {device}")
    peak = matmul_peak(repeat=repeat)
    report("float32 matmul peak (4096², best of oneDNN and XLA)", f"{peak:.0f} GFLOP/s", "the limit")
    rates = {}
    for size in (224, 299):
        rounds = 2 if args.quick else 5
        rate, gflops, share = extraction_share(size, rounds=rounds, batches=3)
        rates[size] = rate
        report(
            f"feature extraction, {size} px",
            f"{rate:.1f} img/s = {gflops:.0f} GFLOP/s ({share:.0%} of the peak measured beside it, "
            f"median of {rounds} pairs)",
            "≥ 80 % of peak",
            share >= 0.8,
        )
    for batch_size in (64, 256):  # the default config's batch, and transfer-best's
        epochs, source = head_epoch_in_fresh_processes(batch_size, processes=2 if args.quick else 3)
        seconds = statistics.median(epochs)
        report(
            f"head retraining, 50k × 2048 ({source}), batch {batch_size}",
            f"{seconds:.2f} s/epoch (median of {len(epochs)} epochs in {len(epochs) // 5} fresh "
            f"processes; range {min(epochs):.2f}-{max(epochs):.2f})",
            "≤ 1 s/epoch",
            seconds <= 1,
        )
    retrain_click_rows(report, args.quick)
    prediction_rows(report, repeat)
    if job_rss := training_job_peak_rss():
        report("peak RSS, head-training job (3 epochs)", f"{job_rss:.0f} MB")
    scaling = []
    for n in (5000, 10000, 25000, 50000):
        head_seconds, _ = head_epoch_seconds(n=n, epochs=3)
        scaling.append((n, statistics.median(head_seconds)))
    lines = performance_markdown(device, rows, rates, scaling)
    (ROOT / "bench" / "PERFORMANCE.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
