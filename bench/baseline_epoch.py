"""The from-scratch CNN's training epoch against the machine's matmul peak (issue: airbench94's
recipe at half the machine's peak). Writes bench/baseline_epoch.md and its section of
bench/PERFORMANCE.md. Also the same epoch at half the batch size, for comparison.

    PYTHONPATH=. .venv/bin/python bench/baseline_epoch.py [--images 10240]

For `baseline-best`'s own config (its committed config.json): the steady-state epoch (the
second of two, so tracing and the first allocations are out) on the first IMAGES training
images, through the same stream, model, optimizer and callbacks-free `fit` as training; in
float32 and with `precision="mixed_bfloat16"` (the config's option: layers compute in bfloat16,
weights stay float32). Achieved GFLOP/s = 3 x the forward FLOPs of one image (TensorFlow's profiler,
`cifar.analysis.cost.count_flops`; a backward pass costs about two forwards) x images / seconds, against
the float32 matmul peak measured right before each (`bench/benchmark.py`'s `matmul_peak`).
Also the committed run's own epochs (history.csv), against a peak measured now.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchmark import describe_machine, epoch_clock, matmul_peak  # noqa: E402
from bench.blocks import markers, replace_block  # noqa: E402

RUN = "baseline-best"


def steady_epoch_seconds(config, pixels, labels) -> float:
    """Seconds of the second of two training epochs of `config` on (pixels, labels)."""
    import keras

    from cifar.modeling.airbench import WHITEN_IMAGES
    from cifar.modeling.models import build_baseline, normalized
    from cifar.sources.data import alternating_flip_dataset, augmented_dataset, steps_per_epoch
    from cifar.training.fitting import baseline_steps_per_call, compile_model

    keras.utils.set_random_seed(0)
    model = build_baseline(config)
    if config.stem == "whiten":
        model.get_layer("whiten").set_kernel_from(normalized(pixels[:WHITEN_IMAGES]))
    steps = steps_per_epoch(len(pixels), config.batch_size)
    compile_model(model, config, len(pixels), baseline_steps_per_call(config, steps, config.alternating_flip))
    one_hot = keras.utils.to_categorical(labels, 10)
    if config.alternating_flip:
        stream = alternating_flip_dataset(pixels, one_hot, config.batch_size, 0, 2)
    else:
        stream = augmented_dataset(pixels, one_hot, config.batch_size, 0).repeat(2)
    times = []
    model.fit(stream, epochs=2, steps_per_epoch=steps, callbacks=[epoch_clock(times)], verbose=0)
    return times[-1]


def forward_flops(config) -> int:
    from cifar.analysis.cost import count_flops
    from cifar.config import IMAGE_SHAPE
    from cifar.modeling.models import build_baseline

    return count_flops(build_baseline(config), IMAGE_SHAPE, "uint8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=10240, help="training images per timed epoch")
    args = parser.parse_args()
    from cifar.config import load_config
    from cifar.sources.assets import load_cifar10
    from cifar.store.runs import load_run

    run = load_run(RUN)
    config = load_config(run.hyperparameters)
    data = load_cifar10()
    pixels, labels = data.x_train[: args.images], data.y_train[: args.images]
    train_flops = 3 * forward_flops(config)
    rows = []
    half_batch = config.model_copy(update={"batch_size": config.batch_size // 2, "precision": "float32"})
    bfloat16 = config.model_copy(update={"precision": "mixed_bfloat16"})
    for variant in (config.model_copy(update={"precision": "float32"}), bfloat16, half_batch):
        peak = matmul_peak(repeat=5)
        seconds = steady_epoch_seconds(variant, pixels, labels)
        achieved = train_flops * len(pixels) / seconds / 1e9
        per_45k = seconds * 45000 / len(pixels)
        rows.append(
            f"| {variant.precision}, {len(pixels):,} images, batch {variant.batch_size} | {seconds:.1f} s "
            f"(= {per_45k:.0f} s per 45,000) | {achieved:.0f} GFLOP/s | {peak:.0f} GFLOP/s | "
            f"**{achieved / peak:.0%}** |"
        )
    import pandas as pd

    epoch_seconds = [float(s) for s in pd.read_csv(run.path / "history.csv")["seconds"]]
    peak = matmul_peak(repeat=5)
    typical = statistics.median(epoch_seconds)
    n_train = int(run.metrics["n_train"])
    achieved = train_flops * n_train / typical / 1e9
    rows.append(
        f"| `{RUN}`'s own training ({len(epoch_seconds)} epochs of {n_train:,} images, history.csv) | "
        f"median {typical:.0f} s (range {min(epoch_seconds):.0f}-{max(epoch_seconds):.0f}) | "
        f"{achieved:.0f} GFLOP/s | {peak:.0f} GFLOP/s (measured now) | **{achieved / peak:.0%}** |"
    )
    lines = [
        "## Baseline epoch, % of peak",
        "",
        f"Made by `bench/baseline_epoch.py` on {describe_machine()} ({time.strftime('%Y-%m-%d')}) for "
        f"`{RUN}`'s config: {train_flops / 3 / 1e6:.0f} MFLOPs per image forward (TensorFlow's profiler), "
        "3x that per training image. Target: the epoch at >= 50 % of the matmul peak. The peak is "
        "float32's; bfloat16 matmuls (AVX512_BF16) have a higher one, so its share can pass 100 %.",
        "",
        "| epoch | seconds | achieved | matmul peak beside it | % of peak |",
        "|---|---|---|---|---|",
        *rows,
    ]
    body = "\n".join(lines)
    start, end = markers("baseline-epoch")
    (ROOT / "bench" / "baseline_epoch.md").write_text(f"{start}\n{body}\n{end}\n")
    replace_block(ROOT / "bench" / "PERFORMANCE.md", "baseline-epoch", body)
    print(body)
    print(json.dumps({"forward_flops": train_flops // 3}))


if __name__ == "__main__":
    main()
