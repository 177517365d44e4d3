"""Writes bench/RECIPE.md (and the README's summary of it): what each part of `baseline-best`'s
airbench94 recipe is worth (#19).

    PYTHONPATH=. .venv/bin/python bench/recipe.py

Reads `baseline-best` (artifacts/runs) and the training records in bench/recipe/runs: runs of the
same recipe made with the CLI into that folder, e.g.

    CIFAR_ARTIFACTS=bench/recipe .venv/bin/python -m cifar train baseline --run-id no-lookahead \\
        <baseline-best's command-line options> --lookahead false

The recipe in full is `baseline-best` (float32) and, computing in bfloat16, any record that differs
from it in `precision` alone (`bfloat16`). A record that differs from one of them in one option is
that option's ablation; one that differs in `epochs` only is a point of the accuracy / epochs curve;
one that differs in `seed` only measures what another seed does to the same recipe.
Records keep their small files (config, history, metrics, test predictions), not their weights.
Test accuracy is recomputed from each run's `test_predictions.npy` against the real CIFAR-10 test
labels. The test-time views are measured here on `baseline-best`'s own weights (no training needed).
"""

from __future__ import annotations

import hashlib
import os
import statistics
from pathlib import Path

import numpy as np

from bench.blocks import replace_block
from cifar.runs import RunError, load_run

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "bench" / "recipe"
RUN = "baseline-best"
# Each option of the recipe, the value that switches it off, and what it follows in airbench94.
OPTIONS = {
    "stem": ("conv", "first convolution: 2x2 patch whitening (frozen kernel, trained bias)"),
    "bn_scale": (True, "BatchNorm without learned scale"),
    "bias_lr_scale": (1.0, "BatchNorm shifts at 64x the learning rate"),
    "dirac_init": (False, "identity (dirac) initialisation of each convolution's first filters"),
    "lookahead": (False, "lookahead EMA of the weights every 5 steps"),
    "alternating_flip": (False, "alternating flip (random flip when off)"),
    "label_smoothing": (0.0, "label smoothing 0.2"),
    "lr_schedule": ("onecycle", "triangle learning-rate schedule"),
}

# Records whose training shared the 2 cores with other work: their accuracy stands, their seconds
# are not the recipe's speed. Every other record was made with the cores otherwise idle.
SHARED_CORES = {
    "no-whitening": "the cores shared with a mutation-testing run",
    "bfloat16": "the cores shared with a mutation-testing run; bench/PERFORMANCE.md times it idle",
    "bf16-epochs-12": "its first three epochs beside a one-minute test run at the lowest priority",
    "bf16-epochs-16": "beside short checks now and then (lint, a Python snippet at the lowest priority)",
    "bf16-no-lookahead": "the cores shared with the test suite (CI=true .ci/run)",
    "bf16-no-label-smoothing": "its first two epochs beside a one-minute test file and lint, "
    "at the lowest priority",
    "bf16-seed-1": "the cores shared with the test suite (CI=true .ci/run) and a dashboard walkthrough",
}


def records() -> list:
    """The runs in bench/recipe/runs, loaded as the product loads its own."""
    from unittest import mock

    with mock.patch.dict(os.environ, {"CIFAR_ARTIFACTS": str(RECORDS)}):
        folders = sorted(p.name for p in (RECORDS / "runs").iterdir() if p.is_dir() and p.name[0] != ".")
        return [load_run(name) for name in folders]


def differences(run, reference) -> dict:
    """The options in which `run` differs from `reference`, with defaults filled in for the
    options one of them predates."""
    from cifar.config import load_config

    mine, theirs = (load_config(r.hyperparameters).model_dump() for r in (run, reference))
    return {k: mine.get(k) for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)}


def test_accuracy(run, y_test: np.ndarray) -> float:
    if not np.array_equal(run.test_labels, y_test):
        raise SystemExit(f"{run.run_id}: test_labels.npy differ from the real CIFAR-10 test labels")
    return float(np.mean(run.test_predictions.argmax(axis=1) == y_test))


def val_accuracy(run) -> float | None:
    """The trained network's validation accuracy, one view (metrics.json). Not the last epoch's row
    of history.csv: lookahead copies its average into the weights after it, unless the steps end
    on an update (10 epochs of 44 steps do; 12 do not)."""
    return run.metrics.get("val_accuracy")


def epoch_seconds(run) -> str:
    seconds = [float(s) for s in run.history["seconds"]]
    shared = f"; {SHARED_CORES[run.run_id]}" if run.run_id in SHARED_CORES else ""
    return f"{statistics.median(seconds):.0f} s ({min(seconds):.0f}-{max(seconds):.0f}){shared}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def runs_table(runs: list, reference, y_test: np.ndarray) -> list[str]:
    rows = [
        "| run | differs from `baseline-best` in | training images | epochs "
        "| seconds per epoch (median, range) | validation, one view "
        "| test (recomputed, the run's views) |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in [reference, *runs]:
        changed = ", ".join(f"`{k}` = {v}" for k, v in differences(run, reference).items()) or "–"
        m = run.metrics
        rows.append(
            f"| `{run.run_id}` | {changed} | {m['n_train']:,} | {m['epochs_run']} | {epoch_seconds(run)} "
            f"| {percent(val_accuracy(run))} | **{percent(test_accuracy(run, y_test))}** |"
        )
    return rows


def bases(runs: list, reference) -> list:
    """The recipe in full, once per precision: `baseline-best` and the records that differ from it
    in `precision` alone (in folder order). Ablations and curve points are measured against one."""
    return [reference, *(r for r in runs if set(differences(r, reference)) == {"precision"})]


def variant_of(run, full: list) -> tuple | None:
    """(base, differences) for the base `run` differs from least (the first of a tie: `baseline-best`
    before the records), or None when `run` is a base itself."""
    if any(run is base for base in full):
        return None
    return min(((base, differences(run, base)) for base in full), key=lambda pair: len(pair[1]))


def ablations(runs: list, reference) -> dict[str, list[tuple]]:
    """For each option, (record, its value, base, contribution) where the record switches that
    option alone off a recipe in full: contribution = the base's validation accuracy minus the record's."""
    found = {option: [] for option in OPTIONS}
    for run, option, value, base in single_changes(runs, reference):
        if option in found and val_accuracy(run) is not None:
            found[option].append((run, value, base, val_accuracy(base) - val_accuracy(run)))
    return found


def single_changes(runs: list, reference) -> list[tuple]:
    """(record, option, its value, base) for each record that differs from a recipe in full in one option."""
    full = bases(runs, reference)
    changes = []
    for run in runs:
        variant = variant_of(run, full)
        if variant and len(variant[1]) == 1:
            (option, value), base = next(iter(variant[1].items())), variant[0]
            changes.append((run, option, value, base))
    return changes


def repeats(runs: list, reference) -> list[tuple]:
    """(record, its seed, base) for each record that is a recipe in full trained with another seed."""
    return [change for change in single_changes(runs, reference) if change[1] == "seed"]


def test_difference(base, run, y_test: np.ndarray) -> float:
    """The base's test accuracy minus the record's, in points."""
    return 100 * (test_accuracy(base, y_test) - test_accuracy(run, y_test))


def noise_sentence(runs: list, reference, y_test: np.ndarray) -> str:
    """What chance alone moves, as far as the repeats measure it: on the test set only, because
    another seed also holds out another validation split."""
    measured = [
        f"`{base.run_id}` minus `{run.run_id}` (seed {seed}) = {test_difference(base, run, y_test):+.2f} pts"
        for run, _, seed, base in repeats(runs, reference)
    ]
    if not measured:
        return (
            "Each ablation is one training run (seed 0); the recipe has not been repeated with another "
            "seed, so what chance alone moves is not measured."
        )
    return (
        "Each ablation is one training run (seed 0), so chance is part of each figure. The recipe in full "
        "trained again with another seed, which also holds out other validation images, so only the "
        f"test set compares: {'; '.join(measured)} on test, to set beside the ablations' differences on test."
    )


def ablation_table(runs: list, reference, y_test: np.ndarray) -> list[str]:
    """One row per option and base it was switched off from."""
    rows = [
        "| option (airbench94) | switched off as (record) | recipe in full (base) "
        "| validation, one view: base, switched off | contribution "
        "| test, the run's views: base, switched off | difference on test |",
        "|---|---|---|---|---|---|---|",
    ]
    for option, found in ablations(runs, reference).items():
        off, meaning = OPTIONS[option]
        if not found:
            rows.append(f"| {meaning} | `{option}` = {off} | not measured yet | | | | |")
        for run, value, base, contribution in found:
            on_test = test_accuracy(base, y_test), test_accuracy(run, y_test)
            rows.append(
                f"| {meaning} | `{option}` = {value} (`{run.run_id}`) | `{base.run_id}` "
                f"| {percent(val_accuracy(base))}, {percent(val_accuracy(run))} "
                f"| **{100 * contribution:+.2f} pts** | {percent(on_test[0])}, {percent(on_test[1])} "
                f"| {test_difference(base, run, y_test):+.2f} pts |"
            )
    return rows


def precision(run) -> str:
    from cifar.config import load_config

    return load_config(run.hyperparameters).precision


def curve_table(runs: list, reference, y_test: np.ndarray) -> list[str]:
    """The recipe at other numbers of epochs, beside the 10-epoch base it stretches."""
    points = bases(runs, reference) + [
        run for run, option, *_ in single_changes(runs, reference) if option == "epochs"
    ]
    rows = [
        "| precision | epochs | run | seconds per epoch (median, range) "
        "| validation, one view | test (the run's views) |",
        "|---|---|---|---|---|---|",
    ]
    for run in sorted(points, key=lambda r: (precision(r), r.hyperparameters["epochs"])):
        rows.append(
            f"| {precision(run)} | {run.hyperparameters['epochs']} | `{run.run_id}` | {epoch_seconds(run)} "
            f"| {percent(val_accuracy(run))} | **{percent(test_accuracy(run, y_test))}** |"
        )
    return rows


def contributions_line(runs: list, reference, y_test: np.ndarray) -> str:
    """The options measured so far and their contributions, as one sentence."""
    found = ablations(runs, reference)
    measured = [
        f"{OPTIONS[option][1]} {100 * contribution:+.2f} pts, on test "
        f"{test_difference(base, run, y_test):+.2f} (`{run.run_id}`)"
        for option, rows in found.items()
        for run, _, base, contribution in rows
    ]
    missing = [f"`{option}`" for option, rows in found.items() if not rows]
    return (
        "Each option's contribution on the validation split (one view), then its difference on test "
        f"(the run's views): {'; '.join(measured) or 'none measured yet'}."
        + (f" Not measured yet: {', '.join(missing)}." if missing else "")
        + f" {noise_sentence(runs, reference, y_test)}"
    )


def bases_line(runs: list, reference, y_test: np.ndarray) -> str:
    """Which recipes in full the ablations compare with, and their validation accuracy."""
    named = [f"`{b.run_id}` ({precision(b)}, {percent(val_accuracy(b))})" for b in bases(runs, reference)]
    return (
        f"Validation accuracy of the trained network, one view, with the option switched off and everything "
        f"else as in the recipe in full it is compared with, the one computing in the same precision: "
        f'{", ".join(named)} (bench/PERFORMANCE.md, "Baseline epoch, % of peak", times both '
        "precisions on idle cores). 10 epochs, 45,000 training images, seed 0; contribution = the "
        f"base's minus the record's. {noise_sentence(runs, reference, y_test)}"
    )


def view_table(reference, data) -> list[str]:
    """`baseline-best`'s validation accuracy with each set of test-time views, from its weights."""
    from cifar import tta
    from cifar.data import validation_rows
    from cifar.restore import load_model

    _, network = load_model(reference)
    rows = validation_rows(reference.hyperparameters, len(data.x_train))
    images, labels = data.x_train[rows], data.y_train[rows]
    answers_of = {}  # each view is predicted once, for both ways of averaging

    def predict(x: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(x.tobytes()).digest()
        if key not in answers_of:
            answers_of[key] = network.predict(x, batch_size=1000, verbose=0)
        return answers_of[key]

    log_predict = lambda x: np.log(np.maximum(predict(x), 1e-30))  # noqa: E731
    table = ["| test-time views | validation | contribution |", "|---|---|---|"]
    previous = None
    for name, flip, translate, views_predict in (
        ("1: the image", False, False, predict),
        ("2: + mirror image", True, False, predict),
        ("6: + one-pixel shifts, each mirrored (airbench94's multi-crop)", True, True, predict),
        (
            "6, their log-probabilities averaged instead (ranks classes as airbench94's mean of logits "
            "does; the runs average probabilities)",
            True,
            True,
            log_predict,
        ),
    ):
        answers = tta.averaged(views_predict, images, flip, translate)
        accuracy = float(np.mean(answers.argmax(axis=1) == labels))
        step = "–" if previous is None else f"**{100 * (accuracy - previous):+.2f} pts**"
        table.append(f"| {name} | {percent(accuracy)} | {step} |")
        previous = accuracy
    return table


def main() -> None:
    from cifar.assets import load_cifar10

    data = load_cifar10()
    try:
        reference = load_run(RUN)
    except RunError as error:
        raise SystemExit(error) from None
    runs = records()
    if stale := set(SHARED_CORES) - {run.run_id for run in runs}:
        raise SystemExit(f"SHARED_CORES names no record: {', '.join(sorted(stale))}")
    command = reference.config.get("command", "")
    curve = curve_table(runs, reference, data.y_test)  # RECIPE.md's and the README's
    lines = [
        "# baseline-best's recipe, part by part",
        "",
        "Made by `bench/recipe.py` from `artifacts/runs/baseline-best` and the training records in "
        "`bench/recipe/runs` (each made with the CLI on this 2-core machine, with the cores otherwise idle "
        "unless its seconds say otherwise). "
        f"`baseline-best` was trained with `{command}`. Target (#19): >= 94.0 % test in <= 10 epochs.",
        "",
        "## The runs",
        "",
        *runs_table(runs, reference, data.y_test),
        "",
        "## Each option's contribution on the validation split",
        "",
        bases_line(runs, reference, data.y_test),
        "",
        *ablation_table(runs, reference, data.y_test),
        "",
        "## Test-time views on the validation split",
        "",
        *view_table(reference, data),
        "",
        "## Accuracy by epochs",
        "",
        "The same recipe with its schedules stretched or squeezed to the number of epochs (the "
        "learning-rate triangle counts the run's own steps), grouped by the precision it computed in.",
        "",
        *curve,
        "",
    ]
    (ROOT / "bench" / "RECIPE.md").write_text("\n".join(lines))
    summary = [*curve, "", contributions_line(runs, reference, data.y_test)]
    replace_block(ROOT / "README.md", "recipe", "\n".join(summary), indent="  ")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
