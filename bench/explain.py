"""Grad-CAM against the forward pass, and the test-set maps: timed on this machine.

    PYTHONPATH=. .venv/bin/python bench/explain.py     (writes bench/EXPLAIN.md)

For one real photo through each best model, at each resolution it takes: the Predictor's answer
(the forward pass the Classify page runs: the image's pixels, then the model, test-time flip
included: two views for these runs) against `Explainer.explain`
(one view: a forward and a backward pass to the explained block), the median of REPEATS warm
calls after one warm-up each (both compiled already, as in the dashboard). Target: Grad-CAM at
most 3x the forward pass. Also each run's stored map (`projection.json`): how long UMAP took.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import RUNS as COMMITTED_RUNS  # noqa: E402

PHOTO = ROOT / "bench" / "photos" / "dog-kphotoalbum-1.jpg"
RUNS = ("baseline-best", "transfer-best")  # Classify's default models
REPEATS = 7


def timed(call) -> float:
    call()  # warm-up: traces and compiles
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    from cifar.analysis.feature_space import read_projection
    from cifar.inference.explain import Explainer
    from cifar.inference.predict import Predictor
    from cifar.sources.images import open_image
    from cifar.store.runs import load_run

    image = open_image(PHOTO)
    rows = []
    for run_id in RUNS:
        run = load_run(run_id)
        predictor = Predictor(run)
        explainer = Explainer(run, predictor)
        for resolution in predictor.resolutions:
            forward = timed(lambda p=predictor, r=resolution: _forward(p, image, r))
            cam = timed(lambda e=explainer, r=resolution: e.explain(image, r))
            rows.append((run_id, resolution, forward, cam))
    lines = [
        "# Grad-CAM against the forward pass",
        "",
        f"Made by `bench/explain.py` on {platform.machine()}, {_cores()} CPU cores; photo "
        f"`{PHOTO.relative_to(ROOT)}`; median of {REPEATS} warm calls. Target: Grad-CAM <= 3x forward.",
        "",
        "| run | resolution | forward pass | Grad-CAM | ratio |",
        "|---|---|---|---|---|",
    ]
    for run_id, resolution, forward, cam in rows:
        ms = f"{forward * 1000:.0f} ms | {cam * 1000:.0f} ms"
        lines.append(f"| `{run_id}` | {resolution} | {ms} | {cam / forward:.2f}x |")
    lines += [
        "",
        "## Test-set maps (`python -m cifar project`)",
        "",
        "| run | space | dimensions | UMAP seconds |",
        "|---|---|---|---|",
    ]
    for run_id in COMMITTED_RUNS:
        found = read_projection(load_run(run_id))
        if found:
            record = found[0]
            lines.append(
                f"| `{run_id}` | {record['space']} | {record['dimensions']} | {record['seconds']:.0f} |"
            )
    (ROOT / "bench" / "EXPLAIN.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _forward(predictor, image, resolution: str):
    """What an upload costs the Predictor, its answer cache bypassed: the pixels, then the model."""
    pixels = predictor.model_input(image, resolution)[None]
    return (predictor.full_probabilities if resolution == "full" else predictor.probabilities)(pixels)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
