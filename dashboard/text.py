"""What the pages say in words: titles, next steps, durations, the feature-cache sentence.

Plain Python (no Streamlit), so the wording can be tested without a browser.
"""

from __future__ import annotations

import re
from pathlib import Path

from cifar.store.runs import Run

# Every ASCII punctuation character can be backslash-escaped in Markdown (CommonMark), which then
# shows it as itself: no emphasis, link, image, code, heading, list, `:color[...]` or `$math$`.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")

FETCH = "python -m cifar fetch"
DOWNLOADS = (
    "Predictions: calibrated, a row per test image. Model: uint8 32 x 32 pixels in, probabilities out "
    "(`import cifar.modeling.whole_model`, then `keras.models.load_model`). Made on click."
)
COST_LABELS = {  # runs_table's cost columns a person can put on Comparison's cost axis
    "flops_per_prediction": "FLOPs per prediction (every view)",
    "latency_ms_1": "latency of one photo (ms)",
    "parameters": "parameters",
    "model_bytes": "bytes a prediction needs",
    "total_seconds": "total training time (s, feature extraction included)",
}
BFLOAT16_HERE = {  # distribute.bfloat16_unit's answers, for the precision field's help
    "gpu": "here: an NVIDIA GPU is installed; where TensorFlow uses it, bfloat16 is native on "
    "Ampere (A100, RTX 30) and newer",
    "cpu": "here: this CPU has bfloat16 instructions (AVX512_BF16 or AMX)",
    "emulated": "here: this CPU has no bfloat16 instructions, so float32 is likely faster",
}
MODEL_TITLES = {"baseline": "Baseline CNN", "transfer": "InceptionV3 transfer", "ensemble": "Ensemble"}


def next_steps(runs: list[Run], data_cached: bool, weights_cached: bool) -> list[tuple[str, str]]:
    """(what, command) pairs for what the user can do next."""
    steps = []
    if not (data_cached and weights_cached):
        steps.append(("Download and verify CIFAR-10 and the InceptionV3 weights", FETCH))
    models = {run.model for run in runs}
    if "baseline" not in models:
        steps.append(("Train the baseline CNN", "python -m cifar train baseline --run-id baseline-reference"))
    if "transfer" not in models:
        steps.append(("Cache the frozen InceptionV3 features (long on a CPU)", "python -m cifar extract"))
        steps.append(
            ("Train the transfer model's head", "python -m cifar train transfer --run-id transfer-reference")
        )
    steps.append(("List every run with its hyperparameters", "python -m cifar runs"))
    steps.append(("Evaluate a run per class", "python -m cifar evaluate <run-id>"))
    steps.append(("Classify a photo from the command line", "python -m cifar predict <run-id> photo.jpg"))
    return steps


def plain(text: object) -> str:
    """`text` (from a run folder, a file name, an error) shown as itself wherever Streamlit renders
    Markdown (st.markdown, st.caption, st.info/warning/error, metric labels): on one line, escaped."""
    one_line = " ".join(str(text).split())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", one_line)


def format_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def feature_plan(missing: list[tuple[str, bool, int]], seconds: float) -> str:
    """What a transfer config needs before its head trains: `missing` (split, flipped, images)
    from `cifar.modeling.feature_cache.missing_features`, `seconds` their estimated extraction time."""
    if not missing:
        return "Features are cached: retraining the head takes seconds to minutes."
    parts = [f"{n:,} {split}{' flipped' if flip else ''}" for split, flip, n in missing]
    return (
        f"Feature extraction first: {', '.join(parts)} images, about "
        f"{format_duration(seconds)} on this machine's CPU (much less on a GPU); "
        "later head retrains with the same base settings reuse the cache."
    )


def home_relative(path: Path) -> str:
    """`path` with the user's home folder written as `~` (screenshots need not show it)."""
    try:
        return str(Path("~") / Path(path).relative_to(Path.home()))
    except ValueError:
        return str(path)


def cost_line(metrics: dict) -> str | None:
    """A run's cost in one line (None until `python -m cifar cost` has measured it)."""
    if "flops_per_image" not in metrics:
        return None
    parts = [
        f"{metrics['parameters'] / 1e6:.1f} M parameters",
        f"{metrics['flops_per_image'] * metrics['views'] / 1e9:.2f} GFLOPs per image"
        + (f" ({metrics['views']} views)" if metrics["views"] > 1 else ""),
    ]
    if (latency := (metrics.get("latency_ms") or {}).get("1")) is not None:
        parts.append(f"{latency:.0f} ms per photo")
    if metrics.get("total_seconds") is not None:
        parts.append(f"{format_duration(metrics['total_seconds'])} to train")
    else:
        parts.append("training time unknown (its features' extraction was not timed)")
    return " · ".join(parts)


def image_caption(image) -> str:
    """What became of an upload (`cifar.sources.images.open_image`): its own size, the size it is used at,
    the frame used, and the share every model's centre square crops."""
    width, height = image.info.get("original_size", image.size)
    notes = [f"Your image: {width} × {height}"]
    if (width, height) != image.size:
        notes.append(f"used at {image.width} × {image.height}")
    if (frames := image.info.get("frames", 1)) > 1:
        notes.append(f"the first of its {frames} frames")
    cropped = 1 - min(image.size) / max(image.size)
    if cropped >= 0.01:
        side = "width" if image.width > image.height else "height"
        notes.append(f"every model sees its centre square, {cropped:.0%} of its {side} cropped")
    return "; ".join(notes)
