"""bench/recipe.py: which training record measures which option of the recipe (#19's figures)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import recipe
from cifar.runs import load_run
from tests.factory import write_run

LABELS = np.arange(200) % 10
RECIPE = {  # baseline-best's options, as its command line sets them
    "architecture": "airbench",
    "stem": "whiten",
    "bn_scale": False,
    "bias_lr_scale": 64.0,
    "dirac_init": True,
    "lookahead": True,
    "augment": True,
    "alternating_flip": True,
    "optimizer": "sgd",
    "momentum": 0.85,
    "lr_schedule": "triangle",
    "label_smoothing": 0.2,
    "epochs": 10,
}
BF16 = {**RECIPE, "precision": "mixed_bfloat16"}


@pytest.fixture
def recorded(artifacts, tmp_path, monkeypatch):
    """`baseline-best` in the artifacts, and records of the recipe changed one way or another."""
    write_run(artifacts, recipe.RUN, "baseline", LABELS, 0.90, **RECIPE)
    records = tmp_path / "records"
    for seed, (run_id, accuracy, options) in enumerate(
        [
            ("bfloat16", 0.92, BF16),
            ("bf16-no-lookahead", 0.80, {**BF16, "lookahead": False}),
            ("no-label-smoothing", 0.85, {**RECIPE, "label_smoothing": 0.0}),
            ("two-off", 0.60, {**BF16, "lookahead": False, "dirac_init": False}),
            ("bf16-epochs-12", 0.95, {**BF16, "epochs": 12}),
            ("bf16-seed-1", 0.88, {**BF16, "training_seed": 1}),
        ],
        start=1,
    ):
        write_run(records, run_id, "baseline", LABELS, accuracy, seed=seed, **options)
    monkeypatch.setattr(recipe, "RECORDS", records)
    return load_run(recipe.RUN), {run.run_id: run for run in recipe.records()}


def val(run) -> float:
    """The record's validation accuracy, one view."""
    return run.metrics["val_accuracy"]


def test_an_ablation_is_measured_against_the_recipe_in_its_own_precision(recorded):
    reference, runs = recorded
    found = recipe.ablations(list(runs.values()), reference)
    [(run, value, base, contribution)] = found["lookahead"]
    assert (run.run_id, value, base.run_id) == ("bf16-no-lookahead", False, "bfloat16")
    assert contribution == pytest.approx(val(runs["bfloat16"]) - val(runs["bf16-no-lookahead"]))
    [(run, value, base, contribution)] = found["label_smoothing"]
    assert (run.run_id, value, base.run_id) == ("no-label-smoothing", 0.0, recipe.RUN)
    assert contribution == pytest.approx(val(reference) - val(runs["no-label-smoothing"]))


def test_the_ablation_table_sets_the_test_difference_beside_the_validation_one(recorded):
    reference, runs = recorded
    [row] = [r for r in recipe.ablation_table(list(runs.values()), reference, LABELS) if "lookahead" in r]
    base, off = (
        recipe.test_accuracy(runs["bfloat16"], LABELS),
        recipe.test_accuracy(runs["bf16-no-lookahead"], LABELS),
    )
    assert row.endswith(f"| {recipe.percent(base)}, {recipe.percent(off)} | {100 * (base - off):+.2f} pts |")
    contribution = 100 * (val(runs["bfloat16"]) - val(runs["bf16-no-lookahead"]))
    assert f"| **{contribution:+.2f} pts** |" in row


def test_a_record_changing_two_options_measures_neither(recorded):
    reference, runs = recorded
    found = recipe.ablations(list(runs.values()), reference)
    assert found["dirac_init"] == []
    assert [row[0].run_id for rows in found.values() for row in rows] == [
        "bf16-no-lookahead",
        "no-label-smoothing",
    ]
    table = "\n".join(recipe.ablation_table(list(runs.values()), reference, LABELS))
    assert "`dirac_init` = False | not measured yet" in table
    assert "two-off" not in table


def test_another_seed_measures_the_noise_on_test(recorded):
    reference, runs = recorded
    records = list(runs.values())
    [(run, option, seed, base)] = recipe.repeats(records, reference)
    assert (run.run_id, option, seed, base.run_id) == ("bf16-seed-1", "seed", 1, "bfloat16")
    moved = recipe.test_accuracy(base, LABELS) - recipe.test_accuracy(run, LABELS)
    noise = recipe.noise_sentence(records, reference, LABELS)
    assert f"`bfloat16` minus `bf16-seed-1` (seed 1) = {100 * moved:+.2f} pts on test" in noise
    assert noise in recipe.contributions_line(records, reference, LABELS)
    assert noise in recipe.bases_line(records, reference, LABELS)


def test_without_a_repeat_the_noise_is_said_to_be_unmeasured(recorded):
    reference, runs = recorded
    records = [run for run in runs.values() if run.run_id != "bf16-seed-1"]
    assert "not been repeated" in recipe.noise_sentence(records, reference, LABELS)


def test_more_epochs_of_the_recipe_are_the_curve(recorded):
    reference, runs = recorded
    curve = "\n".join(recipe.curve_table(list(runs.values()), reference, LABELS))
    assert [name for name in runs if f"`{name}`" in curve] == ["bf16-epochs-12", "bfloat16"]
    assert curve.index("`bfloat16`") < curve.index("`bf16-epochs-12`")  # by epochs within a precision
