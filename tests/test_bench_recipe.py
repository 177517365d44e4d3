"""bench/recipe.py: which training record measures which option of the recipe (#19's figures), each
figure with its interval and each option's paired test on the test images (#32); and the committed
bench/RECIPE.md against the committed records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bench import blocks, recipe
from cifar import stats
from cifar.store.groups import SeedGroup, compare, right
from cifar.store.runs import load_run
from tests.factory import REPO, write_run
from tests.test_bench_results import table_rows

LABELS = np.arange(2000) % 10
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
            ("no-label-smoothing", 0.895, {**RECIPE, "label_smoothing": 0.0}),
            ("two-off", 0.60, {**BF16, "lookahead": False, "dirac_init": False}),
            ("bf16-epochs-12", 0.95, {**BF16, "epochs": 12}),
            ("bf16-seed-1", 0.91, {**BF16, "training_seed": 1}),
        ],
        start=1,
    ):
        write_run(records, run_id, "baseline", LABELS, accuracy, seed=seed, **options)
    monkeypatch.setattr(recipe, "RECORDS", records)
    return load_run(recipe.RUN), {run.run_id: run for run in recipe.records()}


def float32_seeds(artifacts, accuracies=(0.905, 0.91)) -> None:
    """`baseline-best-seed1`, `-seed2`...: the float32 recipe trained again with other seeds."""
    for seed, accuracy in enumerate(accuracies, start=1):
        write_run(artifacts, f"baseline-best-seed{seed}", "baseline", LABELS, accuracy, seed=10 + seed,
                  training_seed=seed, **RECIPE)  # fmt: skip


def wilson(run) -> str:
    """The run's test accuracy with its interval, counted here from its files."""
    right = run.test_predictions.argmax(axis=1) == run.test_labels
    return stats.proportion(int(right.sum()), right.size).percent()


def test_an_ablation_is_tested_against_the_recipe_in_its_own_precision(recorded):
    reference, runs = recorded
    found = {a.option: a for a in recipe.ablations(list(runs.values()), reference, LABELS)}
    assert set(found) == {"lookahead", "label_smoothing"}
    lookahead, smoothing = found["lookahead"], found["label_smoothing"]
    assert (lookahead.run.run_id, lookahead.value, lookahead.base.run_id) == (
        "bf16-no-lookahead",
        False,
        "bfloat16",
    )
    assert (smoothing.run.run_id, smoothing.value, smoothing.base.run_id) == (
        "no-label-smoothing",
        0.0,
        recipe.RUN,
    )
    base, off = runs["bfloat16"], runs["bf16-no-lookahead"]
    expected = stats.compare_scores("bfloat16", right(base), "bf16-no-lookahead", right(off))
    assert lookahead.test == expected
    assert expected.a_only == np.sum((right(base) == 1) & (right(off) == 0))
    assert expected.p_value == stats.mcnemar_p(int(expected.a_only), int(expected.b_only))


def test_the_ablation_table_gives_intervals_and_the_paired_test(recorded):
    reference, runs = recorded
    found = recipe.ablations(list(runs.values()), reference, LABELS)
    assert [a.run.run_id for a in found] == ["bf16-no-lookahead", "no-label-smoothing"]  # largest first
    rows = {row["switched (record)"]: row for row in table_rows("\n".join(recipe.ablation_table(found)))}
    row = rows["True → False (`bf16-no-lookahead`)"]
    base, off = runs["bfloat16"], runs["bf16-no-lookahead"]
    assert row["test (95 %): base; switched"] == f"{wilson(base)}; {wilson(off)}"
    comparison = compare(base, off)
    assert (
        row["base minus record on test (paired bootstrap, 95 %)"] == f"**{comparison.difference.points()}**"
    )
    assert row["McNemar"] == stats.p_text(comparison.p_value)
    assert comparison.significant and row["on this test set"] == "**separable**: the recipe in full is better"
    val = [stats.proportion(round(r.metrics["val_accuracy"] * 5000), 5000) for r in (base, off)]
    assert row["validation, one view (95 %): base; switched"] == f"{val[0].percent()}; {val[1].percent()}"
    assert row["contribution on validation"] == f"{100 * (val[0].value - val[1].value):+.2f} pts"
    close = rows["0.2 → 0.0 (`no-label-smoothing`)"]  # 90 % against 89.5 %: too close to tell
    assert close["on this test set"] == "not separable from chance on this test set"
    assert "1 of 2 records differ from their recipe in full beyond chance" in recipe.separable_count(found)


def test_a_record_changing_two_options_measures_neither(recorded):
    reference, runs = recorded
    found = recipe.ablations(list(runs.values()), reference, LABELS)
    assert "two-off" not in "\n".join(recipe.ablation_table(found) + recipe.summary_table(found))


def test_the_bf16_seeds_are_a_group_and_the_float32_seeds_not_trained_yet(recorded):
    reference, runs = recorded
    float32, bf16 = recipe.recipe_seeds(list(runs.values()), reference)
    assert float32.group is None and bf16.group is not None
    assert [run.run_id for run in bf16.group.runs] == ["bfloat16", "bf16-seed-1"]
    table = table_rows("\n".join(blocks.seeds_table([float32, bf16])))
    assert "`baseline-best` (seed 0) only: other seeds not trained yet" in table[0]["seeds: test accuracy"]
    accuracies = [runs[name].metrics["test_accuracy"] for name in ("bfloat16", "bf16-seed-1")]
    mean = stats.seed_mean(accuracies)
    assert table[1]["mean, 95 % t interval"] == mean.percent()
    assert (
        table[1]["mean ± std"]
        == f"{100 * np.mean(accuracies):.2f} ± {100 * np.std(accuracies, ddof=1):.2f} %"
    )
    [pair] = table_rows("\n".join(blocks.seed_pairs_table([float32, bf16])))
    assert pair["two seeds of one configuration"] == "`bfloat16`, `bf16-seed-1`"
    comparison = compare(runs["bfloat16"], runs["bf16-seed-1"])
    assert pair["McNemar"] == stats.p_text(comparison.p_value)


def test_seed_runs_in_the_artifacts_make_the_float32_group_tested_against_airbench94(recorded, artifacts):
    reference, runs = recorded
    float32_seeds(artifacts)
    config = artifacts / "runs" / recipe.RUN / "config.json"  # baseline-best predates `precision`
    saved = json.loads(config.read_text())
    del saved["config"]["precision"]
    config.write_text(json.dumps(saved))
    reference = load_run(recipe.RUN)
    float32, _ = recipe.recipe_seeds(list(runs.values()), reference)
    assert [run.run_id for run in float32.group.runs] == [
        recipe.RUN,
        "baseline-best-seed1",
        "baseline-best-seed2",
    ]
    assert float32.group.seeds == [0, 1, 2]
    accuracies = [load_run(run.run_id).metrics["test_accuracy"] for run in float32.group.runs]
    [row, _] = table_rows("\n".join(blocks.seeds_table(recipe.recipe_seeds(list(runs.values()), reference))))
    assert row["mean, 95 % t interval"] == stats.seed_mean(accuracies).percent()
    p_value = scipy_stats.ttest_1samp(accuracies, recipe.AIRBENCH94_MEAN).pvalue
    assert p_value < 0.05 and np.mean(accuracies) < recipe.AIRBENCH94_MEAN
    assert (
        row["against the published mean (one-sample t test)"]
        == f"94.01 %: {stats.p_text(p_value)}, **below** it"
    )
    assert len(blocks.seed_pairs_table([float32])) == 2 + 3  # every two of the three seeds


def test_a_mean_near_the_published_one_is_consistent_with_it(artifacts):
    runs = [write_run(artifacts, f"r{i}", "baseline", LABELS, a, seed=i, training_seed=i) for i, a in
            enumerate((0.935, 0.945, 0.94))]  # fmt: skip
    group = SeedGroup(tuple(load_run(path.name) for path in runs))
    target = float(np.mean(group.test_accuracies) + np.std(group.test_accuracies) / 2)
    p_value = stats.mean_test(group.test_accuracies, target)
    assert p_value == pytest.approx(scipy_stats.ttest_1samp(group.test_accuracies, target).pvalue)
    assert p_value > 0.05
    expected = f"{100 * target:.2f} %: {stats.p_text(p_value)}, consistent with it"
    assert blocks.against(group, target) == expected
    assert blocks.against(group, None) == "–"


def test_a_second_run_of_one_seed_is_not_another_seed(recorded, artifacts):
    reference, runs = recorded
    float32_seeds(artifacts)
    write_run(artifacts, "baseline-best-again", "baseline", LABELS, 0.9, seed=30, training_seed=1, **RECIPE)
    group = recipe.recipe_seeds(list(runs.values()), reference)[0].group
    assert [run.run_id for run in group.runs] == [recipe.RUN, "baseline-best-again", "baseline-best-seed2"]


def test_a_seed_run_of_another_configuration_is_no_seed(recorded, artifacts):
    reference, runs = recorded
    write_run(artifacts, "other", "baseline", LABELS, 0.9, training_seed=1, **{**RECIPE, "epochs": 9})
    assert recipe.recipe_seeds(list(runs.values()), reference)[0].group is None


def test_more_epochs_of_the_recipe_are_the_curve(recorded):
    reference, runs = recorded
    curve = table_rows("\n".join(recipe.curve_table(list(runs.values()), reference, LABELS)))
    assert [row["run"] for row in curve] == ["`baseline-best`", "`bfloat16`", "`bf16-epochs-12`"]
    assert curve[2]["test, the run's views (95 %)"] == f"**{wilson(runs['bf16-epochs-12'])}**"


def test_the_view_table_tests_each_view_against_the_one_before():
    rng = np.random.default_rng(0)
    one = rng.random(5000) < 0.93
    two = np.where(rng.random(5000) < 0.1, True, one)
    rows = table_rows("\n".join(recipe.view_table([("1", one), ("2", two)])))
    assert rows[0]["validation (95 %)"] == stats.proportion(int(one.sum()), 5000).percent()
    step = stats.compare_scores("2", two, "1", one)
    assert rows[1]["minus the row above (paired bootstrap, 95 %)"] == f"**{step.difference.points()}**"
    assert rows[1]["McNemar"] == stats.p_text(step.p_value)


def test_kept_views_are_the_committed_section():
    kept = recipe.kept_views()
    assert kept[0].startswith("| test-time views |") and not any(line.startswith("## ") for line in kept)


# ----------------------------------------------------------------------------- the committed RECIPE.md


@pytest.fixture
def committed(monkeypatch):
    """The checkout's runs (read only) and bench/RECIPE.md's tables by their first header cell."""
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(REPO / "artifacts"))
    text = (REPO / "bench" / "RECIPE.md").read_text()
    return load_run(recipe.RUN), {run.run_id: run for run in recipe.records()}, text


def test_recipe_md_test_figures_are_counts_of_the_committed_predictions(committed):
    reference, runs, text = committed
    for row in table_rows(text, "| run | differs"):
        run = reference if row["run"] == f"`{recipe.RUN}`" else runs[row["run"].strip("`")]
        assert row["test, the run's views (95 %)"] == f"**{wilson(run)}**"
        val = recipe.val_accuracy(run)
        assert row["validation, one view (95 %)"] == (val.percent() if val else "–")


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_recipe_md_ablations_are_the_paired_tests_of_the_committed_predictions(committed):
    reference, runs, text = committed
    rows = table_rows(text, "| option (config)")
    assert len(rows) == len(recipe.ablations(list(runs.values()), reference, reference.test_labels)) >= 8
    every = {**runs, recipe.RUN: reference}
    for row in rows:
        base, off = (
            every[row["recipe in full (base)"].strip("`")],
            runs[row["switched (record)"].split("`")[1]],
        )
        comparison = stats.compare_scores(base.run_id, right(base), off.run_id, right(off))
        assert (
            row["base minus record on test (paired bootstrap, 95 %)"]
            == f"**{comparison.difference.points()}**"
        )
        assert row["McNemar"] == stats.p_text(comparison.p_value)
        assert (
            row["right only by base / by record (images)"]
            == f"{comparison.a_only:.0f} / {comparison.b_only:.0f}"
        )
        separable = row["on this test set"] != "not separable from chance on this test set"
        assert separable == (comparison.p_value < 0.05)


def test_recipe_md_seeds_are_the_committed_seed_runs(committed):
    reference, runs, text = committed
    rows = table_rows(text, "| configuration |")
    for row, seeds in zip(rows, recipe.recipe_seeds(list(runs.values()), reference), strict=True):
        if seeds.group is None:
            assert "other seeds not trained yet" in row["seeds: test accuracy"]
            continue
        accuracies = [stats.accuracy(r.test_labels, r.test_predictions).value for r in seeds.group.runs]
        assert row["mean, 95 % t interval"] == stats.seed_mean(accuracies).percent()
