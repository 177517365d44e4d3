"""Writes bench/RESULTS.md (and the README's results table) from the committed run folders.

Accuracy is recomputed from each run's `test_predictions.npy` and the real CIFAR-10 test labels
(not read from the logs). Run: `PYTHONPATH=. .venv/bin/python bench/results.py`
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bench.blocks import replace_block
from cifar import tta
from cifar.assets import load_cifar10
from cifar.calibration import expected_calibration_error, temperature_scaled
from cifar.config import REFERENCE_FIGURES
from cifar.runs import RunError, load_run

ROOT = Path(__file__).resolve().parent.parent
RUNS = ("baseline-reference", "baseline-best", "transfer-reference", "transfer-best", "ensemble-best")
COST_NOTE = (
    "Measured by `python -m cifar cost RUN` (`cifar/cost.py`) on this machine: parameters of the whole "
    "model as it predicts (a transfer run's frozen base included); FLOPs of one 32 × 32 image through "
    "it, counted from its graph by TensorFlow's profiler (a multiply-add is 2; a transfer run's scaling "
    "to [-1, 1] included, its resize to the base's input not: the profiler has no count for resize ops, "
    "about 3 MFLOPs at 299 px), times the views a prediction averages (test-time flip: 2); the files a "
    "prediction loads (weights, and the backbone file); the median of three calls of the classifier "
    "on 1 and on 256 images, every view included; training time plus the extraction of the features "
    "it trained on, from the feature cache's manifests (unknown for features extracted before their "
    "time was recorded). An ensemble sums its members, its latency measured."
)


def summarize(config: dict, run=None) -> str:
    c = config
    if c["model"] == "ensemble":
        from cifar.ensemble import ensemble_weights

        members, weights = ensemble_weights(run)
        pooled = " and ".join(f"`{m}` (weight {w:.2f})" for m, w in zip(members, weights, strict=True))
        return f"log-linear pooling of {pooled}, weights fitted on the validation split"
    if c["model"] == "baseline":
        parts = [f"{c['architecture']} CNN"]
        if c["architecture"] == "airbench":
            parts.append(f"width {c['width']}")
            recipe = {
                "whitening stem": c.get("stem") == "whiten",
                "BatchNorm without scale": c.get("bn_scale") is False,
                f"BatchNorm shifts at {c.get('bias_lr_scale', 1):g}x lr": c.get("bias_lr_scale", 1) != 1,
                "dirac init": c.get("dirac_init"),
            }
            parts += [name for name, on in recipe.items() if on]
        if c.get("lookahead"):
            parts.append("lookahead")
        if c.get("augment"):
            parts.append("alternating flip+translate" if c.get("alternating_flip") else "flip+translate")
        if c.get("tta_flip") or c.get("tta_translate"):
            views = len(tta.views(bool(c.get("tta_flip")), bool(c.get("tta_translate"))))
            parts.append("test-time flip" if views == 2 else f"test-time views: {views}")
    else:
        resize = "UpSampling2D(7)" if c["resize"] == "upsample7" else f"{c['resize']} resize"
        parts = [f"InceptionV3 ({c['architecture']}), {resize} to {c['input_size']} px"]
        if c.get("pooled_layers", "mixed10") != "mixed10":
            parts.append(f"pooled {c['pooled_layers']}")
        standardized = "standardized, " if c.get("standardize") else ""
        parts.append(f"{standardized}Dense({c['head_units']}) dropout {c['dropout']}")
        if c.get("flip_features"):
            parts.append("flip features")
        if c.get("tta_flip"):
            parts.append("test-time flip")
    schedule = {"onecycle": " one-cycle", "triangle": " triangle"}.get(c.get("lr_schedule"), "")
    momentum = (
        f" momentum {c['momentum']:g}" if c["optimizer"] == "sgd" and c.get("momentum", 0.9) != 0.9 else ""
    )
    parts.append(
        f"{c['optimizer']}{momentum} lr {c['learning_rate']:g}"
        + schedule
        + f", {c['epochs']} epochs, batch {c['batch_size']}"
    )
    if c.get("label_smoothing"):
        parts.append(f"label smoothing {c['label_smoothing']}")
    return "; ".join(parts)


def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def table() -> str:
    y_test = load_cifar10().y_test.astype(np.int64)
    rows = [
        "| run | model | configuration | train acc. | test acc. (recomputed) | write-up test | gap |"
        " test ECE raw → calibrated | training time | device |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in (("baseline", "common CNN"), ("transfer", "InceptionV3 transfer")):
        ref = REFERENCE_FIGURES[name]
        rows.append(
            f"| write-up | {name} | {figures} (as reported) | {percent(ref['train_accuracy'])} | "
            f"{percent(ref['test_accuracy'])} | | | | | |"
        )
    for run_id in RUNS:
        try:
            run = load_run(run_id)
        except RunError as error:
            rows.append(f"| {run_id} | – | not trained yet ({error}) | | | | | | | |")
            continue
        if not np.array_equal(run.test_labels, y_test):
            sys.exit(f"{run_id}: test_labels.npy differ from the real CIFAR-10 test labels")
        accuracy = float(np.mean(run.test_predictions.argmax(axis=1) == y_test))
        reference = REFERENCE_FIGURES.get(run.model, {}).get("test_accuracy")
        gap = "–" if reference is None else f"{100 * (accuracy - reference):+.2f} pts"
        m = run.metrics
        timing = f"{m['seconds'] / 60:.1f} min"
        if m.get("extraction_seconds", 0) > 1:
            timing += " (+ features cached earlier)"
        rows.append(
            f"| `{run_id}` | {run.model} | {summarize(run.hyperparameters, run)} | "
            f"{percent(m.get('train_accuracy'))} | **{percent(accuracy)}** | {percent(reference)} | "
            f"{gap} | {ece_change(run, y_test)} | {timing} | {m.get('device', '?')} |"
        )
    return "\n".join(rows)


def ece_change(run, y_test: np.ndarray) -> str:
    """Test ECE of the saved probabilities, then of the calibrated ones (recomputed here)."""
    if not run.calibration:
        return "not calibrated"
    raw = expected_calibration_error(run.test_predictions, y_test)
    calibrated = expected_calibration_error(temperature_scaled(run.test_predictions, run.temperature), y_test)
    return f"{percent(raw)} → {percent(calibrated)}"


def cost_table() -> str:
    """Each run's cost, as `python -m cifar cost` measured it into metrics.json."""
    rows = [
        "| run | test acc. | parameters | GFLOPs per image × views | model files | latency batch 1 | "
        "latency batch 256 | total training time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run_id in RUNS:
        try:
            m = load_run(run_id).metrics
        except RunError:
            continue
        if "flops_per_image" not in m:
            rows.append(f"| `{run_id}` | {percent(m.get('test_accuracy'))} | not measured | | | | | |")
            continue
        total = m.get("total_seconds")
        rows.append(
            f"| `{run_id}` | {percent(m['test_accuracy'])} | {m['parameters'] / 1e6:.2f} M "
            f"| {m['flops_per_image'] / 1e9:.3f} × {m['views']} | {m['model_bytes'] / 2**20:.1f} MiB "
            f"| {m['latency_ms']['1']:.1f} ms | {m['latency_ms']['256'] / 1000:.2f} s "
            f"| {f'{total / 60:.1f} min' if total is not None else 'unknown: ' + m['total_seconds_note']} |"
        )
    return "\n".join(rows)


def calibration_table() -> str:
    """Each run's calibration.json: the temperature and what it does on validation and test."""
    rows = [
        "| run | temperature T | fit | validation ECE before → after | test ECE before → after |"
        " test NLL before → after |",
        "|---|---|---|---|---|---|",
    ]
    for run_id in RUNS:
        try:
            record = load_run(run_id).calibration
        except RunError:
            continue
        if not record:
            rows.append(f"| `{run_id}` | – | not calibrated | | | |")
            continue
        val, test = record.get("validation") or {}, record.get("test") or {}
        if not (val and test):
            rows.append(f"| `{run_id}` | {record['temperature']:.3f} | incomplete calibration.json | | | |")
            continue
        fit = "converged" if record["converged"] else f"fell back to T = 1: {record['message']}"
        rows.append(
            f"| `{run_id}` | {record['temperature']:.3f} | {fit} "
            f"| {percent(val['ece_before'])} → {percent(val['ece_after'])} "
            f"| {percent(test['ece_before'])} → **{percent(test['ece_after'])}** "
            f"| {test['nll_before']:.3f} → {test['nll_after']:.3f} |"
        )
    return "\n".join(rows)


ROBUSTNESS_NOTE = (
    "Made by `python -m cifar robustness RUN` (`cifar/robustness.py`): CIFAR-10-C's 15 corruptions "
    "at its 5 severities, with its own constants (`cifar/corruptions.py`), on the same class-stratified "
    "1,000 test images for every run, one view per image (no test-time flip). Clean: those images "
    "uncorrupted. mCE: each corruption's errors summed over the severities, divided by "
    "`baseline-reference`'s, averaged over the corruptions (100 = the reference, lower is better); "
    "relative mCE subtracts each model's clean error first (Hendrycks and Dietterich 2019)."
)


def robustness_tables() -> tuple[str, str]:
    """(summary per run, accuracy per corruption per run) of the runs with robustness results."""
    from cifar.corruptions import FAMILIES
    from cifar.robustness import corruption_errors, read_robustness, robustness_table

    runs = [run for run in (_load(run_id) for run_id in RUNS) if run and read_robustness(run)]
    if not runs:
        return "(no robustness results yet)", ""
    table = robustness_table(runs)
    clean = {run.run_id: read_robustness(run)[0]["clean_accuracy"] for run in runs}
    errors = corruption_errors(table, clean).set_index("run")
    rows = [
        "| run | images | clean | mean corrupted | noise | blur | weather | digital | mCE | relative mCE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        mine = table[table["run"] == run.run_id]
        family = [
            percent(mine[mine["corruption"].isin(names)]["accuracy"].mean()) for names in FAMILIES.values()
        ]
        e = errors.loc[run.run_id]
        rows.append(
            f"| `{run.run_id}` | {read_robustness(run)[0]['images']:,} | {percent(clean[run.run_id])} "
            f"| **{percent(e['mean corruption accuracy'] / 100)}** | {' | '.join(family)} "
            f"| {e['mCE']:.1f} | {e['relative mCE']:.1f} |"
        )
    by_corruption = table.pivot_table(index="corruption", columns="run", values="accuracy", sort=False)
    ids = [run.run_id for run in runs]
    detail = ["| corruption | " + " | ".join(f"`{i}`" for i in ids) + " | transfer-best − baseline-best |",
              "|---|" + "---|" * (len(ids) + 1)]  # fmt: skip
    for name, row in by_corruption.iterrows():
        gap = row.get("transfer-best", np.nan) - row.get("baseline-best", np.nan)
        cells = " | ".join(percent(row[i]) for i in ids)
        detail.append(f"| {name.replace('_', ' ')} | {cells} | {gap * 100:+.1f} pts |")
    return "\n".join(rows), "\n".join(detail)


def _load(run_id: str):
    try:
        return load_run(run_id)
    except RunError:
        return None


def main() -> None:
    body = table()
    summary, detail = robustness_tables()
    note = (
        "Train accuracy is the final model evaluated on its 45,000 training images (inference mode, "
        "no dropout); 5,000 training images are held out for validation. Test accuracy is recomputed "
        "here from `test_predictions.npy` against the real test labels. ECE: expected calibration "
        "error, 15 equal-width bins of the top label's probability; calibrated = softmax(log p / T) "
        "with the run's temperature T from `calibration.json`. One run each."
    )
    calibration_note = (
        "T is fitted on the run's 5,000 validation images by minimising the negative log-likelihood "
        "(Guo et al. 2017, temperature scaling); the test set is never used to fit it. T < 1 sharpens "
        "timid probabilities (label smoothing, flip averaging), T > 1 softens over-confident ones. "
        "The ensemble's weights are fitted on the same validation images, which leaves its T near 1."
    )
    (ROOT / "bench" / "RESULTS.md").write_text(
        "# Results on the full CIFAR-10 data\n\nGenerated by `bench/results.py` from the run folders "
        f"under `artifacts/runs/`.\n\n{body}\n\n{note}\n\n## Calibration\n\n{calibration_table()}\n\n"
        f"{calibration_note}\n\n## Cost\n\n{cost_table()}\n\n{COST_NOTE}\n\n"
        f"## Robustness to corruptions\n\n{summary}\n\n{ROBUSTNESS_NOTE}\n\n"
        f"Accuracy per corruption (mean over the five severities):\n\n{detail}\n"
    )
    replace_block(ROOT / "README.md", "results", f"{body}\n\n{note}")
    replace_block(ROOT / "README.md", "robustness", f"{summary}\n\n{ROBUSTNESS_NOTE}")
    print(body)


if __name__ == "__main__":
    main()
