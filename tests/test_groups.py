"""Seed groups (`cifar.store.groups`, issue #32): runs that differ only in their seed are one group, anything
else splits them; the groups table is the mean, spread and t interval of the members' test accuracies;
`runs_table`'s interval and group columns; `group:RUN` on the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cifar.calibration import ece_estimate
from cifar.inference.ensemble import make_ensemble
from cifar.store import groups
from cifar.store.groups import CompareError, SeedGroup, group_of, groups_table, resolve, seed_groups
from cifar.store.runs import list_runs, load_run
from cifar.store.tables import hyperparameter_columns, runs_table
from tests.factory import write_run
from tests.test_stats import T_975, wilson

LABELS = np.arange(300) * 7 % 10
VAL_LABELS = np.arange(100) % 10


def set_config(root, run_id: str, **fields) -> None:
    """Change top-level fields of a published run's config.json (`limit`, `assets`)."""
    path = root / "runs" / run_id / "config.json"
    config = json.loads(path.read_text())
    config.update(fields)
    path.write_text(json.dumps(config))


def saved_accuracy(run_id: str) -> float:
    """metrics.json's test accuracy, read from the file."""
    return json.loads((load_run(run_id).path / "metrics.json").read_text())["test_accuracy"]


@pytest.fixture
def seeded(artifacts) -> dict[str, list[str]]:
    """A group of three seeds whose run ids do not sort by seed and whose accuracies differ; a group
    of two at another learning rate; a run alone."""
    # Written in an order that is neither by seed nor by name (list_runs sorts by finish time).
    write_run(artifacts, "alpha", "baseline", LABELS, 0.9, seed=3, training_seed=2)
    write_run(artifacts, "zeta", "baseline", LABELS, 0.5, seed=1, training_seed=0, val_labels=VAL_LABELS)
    write_run(artifacts, "mid", "baseline", LABELS, 0.7, seed=2, training_seed=1)
    write_run(artifacts, "slow-seed1", "baseline", LABELS, 0.65, seed=5, training_seed=1, learning_rate=5e-4)
    write_run(artifacts, "slow", "baseline", LABELS, 0.6, seed=4, training_seed=0, learning_rate=5e-4)
    write_run(artifacts, "lone", "transfer", LABELS, 0.8, seed=6, training_seed=0)
    return {"zeta": ["zeta", "mid", "alpha"], "slow": ["slow", "slow-seed1"]}


def members(group: SeedGroup) -> list[str]:
    return [run.run_id for run in group.runs]


# ----------------------------------------------------------------------------- forming groups


def test_runs_differing_only_in_seed_form_one_group_lowest_seed_first(seeded):
    runs = list_runs()
    found = seed_groups(runs)
    assert {group.name: members(group) for group in found} == seeded
    zeta = next(group for group in found if group.name == "zeta")
    assert zeta.seeds == [0, 1, 2] and zeta.model == "baseline"
    assert zeta.label == "group:zeta (3 seeds)"
    assert seed_groups(list(reversed(runs))) == found  # whatever order the runs come in
    assert [group.name for group in found] == ["slow", "zeta"]


def test_group_of_finds_a_run_s_group_and_none_for_a_run_alone(seeded):
    runs = list_runs()
    found = seed_groups(runs)
    by_id = {run.run_id: run for run in runs}
    assert group_of(by_id["alpha"], found).name == "zeta"
    assert group_of(by_id["slow-seed1"], found).name == "slow"
    assert group_of(by_id["lone"], found) is None


SPLITS = {
    "learning rate": {"learning_rate": 1e-4},
    "epochs": {"epochs": 4},
    "augment": {"augment": True},
    "architecture": {"architecture": "airbench"},
}


@pytest.mark.parametrize("change", SPLITS.values(), ids=SPLITS.keys())
def test_any_other_difference_than_the_seed_splits_a_group(artifacts, change):
    write_run(artifacts, "one", "baseline", LABELS, 0.6, seed=1, training_seed=0)
    write_run(artifacts, "two", "baseline", LABELS, 0.7, seed=2, training_seed=1)
    write_run(artifacts, "other", "baseline", LABELS, 0.8, seed=3, training_seed=2, **change)
    assert [members(group) for group in seed_groups(list_runs())] == [["one", "two"]]
    write_run(artifacts, "other-too", "baseline", LABELS, 0.8, seed=4, training_seed=3, **change)
    assert sorted(members(group) for group in seed_groups(list_runs())) == [
        ["one", "two"],
        ["other", "other-too"],
    ]


def test_a_different_image_limit_splits_a_group(artifacts):
    write_run(artifacts, "one", "baseline", LABELS, 0.6, seed=1, training_seed=0)
    write_run(artifacts, "two", "baseline", LABELS, 0.7, seed=2, training_seed=1)
    write_run(artifacts, "quick", "baseline", LABELS, 0.8, seed=3, training_seed=2)
    set_config(artifacts, "quick", limit=500)
    assert load_run("quick").config["limit"] == 500
    assert [members(group) for group in seed_groups(list_runs())] == [["one", "two"]]
    set_config(artifacts, "two", limit=500)
    assert [members(group) for group in seed_groups(list_runs())] == [["two", "quick"]]


def test_one_run_alone_is_no_group(artifacts):
    write_run(artifacts, "one", "baseline", LABELS, 0.6, seed=1, training_seed=0)
    assert seed_groups(list_runs()) == [] and seed_groups([]) == []


def test_ensembles_are_never_grouped(artifacts):
    """Two ensembles of the same members have the same config: still no group (nor do they join one)."""
    write_run(artifacts, "m1", "baseline", LABELS, 0.6, seed=1, training_seed=0, val_labels=VAL_LABELS)
    write_run(artifacts, "m2", "baseline", LABELS, 0.7, seed=2, training_seed=1, val_labels=VAL_LABELS)
    make_ensemble("e1", ["m1", "m2"])
    make_ensemble("e2", ["m1", "m2"])
    assert load_run("e1").hyperparameters == load_run("e2").hyperparameters
    assert [members(group) for group in seed_groups(list_runs())] == [["m1", "m2"]]


# ----------------------------------------------------------------------------- the groups table


def test_groups_table_is_the_mean_spread_and_t_interval_of_the_members_accuracies(seeded):
    table = groups_table(list_runs()).set_index("group")
    assert list(table.index) == ["slow", "zeta"]
    accuracies = [saved_accuracy(run_id) for run_id in seeded["zeta"]]
    assert len(set(accuracies)) == 3  # the seeds differ: a spread of 0 would hide a wrong formula
    mean = sum(accuracies) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in accuracies) / 2)
    half = T_975[2] * std / math.sqrt(3)
    row = table.loc["zeta"]
    assert row["model"] == "baseline" and row["seeds"] == 3 and row["runs"] == "zeta, mid, alpha"
    assert row["test_accuracy_mean"] == pytest.approx(mean, abs=1e-12)
    assert row["test_accuracy_std"] == pytest.approx(std, abs=1e-12)
    assert (row["test_accuracy_low"], row["test_accuracy_high"]) == pytest.approx(
        (mean - half, mean + half), abs=1e-6
    )
    pair = [saved_accuracy(run_id) for run_id in seeded["slow"]]
    half = T_975[1] * abs(pair[0] - pair[1]) / math.sqrt(2) / math.sqrt(2)
    assert (table.loc["slow", "test_accuracy_low"], table.loc["slow", "test_accuracy_high"]) == pytest.approx(
        (sum(pair) / 2 - half, sum(pair) / 2 + half), abs=1e-6
    )


def test_groups_table_without_groups_has_its_columns(artifacts):
    write_run(artifacts, "one", "baseline", LABELS, 0.6)
    table = groups_table(list_runs())
    assert table.empty and "test_accuracy_low" in table.columns and "runs" in table.columns


# ----------------------------------------------------------------------------- runs_table


def test_runs_table_accuracy_interval_comes_from_the_saved_predictions(seeded):
    table = runs_table().set_index("run")
    for run_id in ("zeta", "mid", "alpha", "lone"):
        folder = load_run(run_id).path
        probabilities, labels = np.load(folder / "test_predictions.npy"), np.load(folder / "test_labels.npy")
        right = int((probabilities.argmax(axis=1) == labels).sum())
        assert saved_accuracy(run_id) == right / len(labels)  # the fixture's metrics.json agrees
        row = table.loc[run_id]
        assert row["test_accuracy_low"] < row["test_accuracy"] < row["test_accuracy_high"]
        assert (row["test_accuracy_low"], row["test_accuracy_high"]) == pytest.approx(
            wilson(right, len(labels)), abs=1e-9
        )


def test_runs_table_ece_interval_only_for_a_calibrated_run(seeded):
    table = runs_table().set_index("run")
    assert load_run("zeta").calibration and not load_run("mid").calibration
    for run_id in ("mid", "alpha", "lone", "slow"):
        assert pd.isna(table.loc[run_id, "test_ece_low"]) and pd.isna(table.loc[run_id, "test_ece_high"])
        assert load_run(run_id).test_ece_estimate is None
    run = load_run("zeta")
    saved = json.loads((run.path / "calibration.json").read_text())["test"]
    row = table.loc["zeta"]
    assert [row["test_ece_low"], row["test_ece_high"]] == saved["ece_after_interval"]
    assert row["test_ece"] == saved["ece_after"]
    # The interval is the ECE's of the saved test predictions (calibrated), around the same ECE.
    expected = ece_estimate(run.calibrated_test_predictions, run.test_labels)
    assert (row["test_ece_low"], row["test_ece_high"]) == pytest.approx(
        (expected.low, expected.high), abs=1e-9
    )
    assert expected.value == pytest.approx(row["test_ece"], abs=1e-6)
    assert row["test_ece_low"] < row["test_ece_high"]
    estimate = run.test_ece_estimate
    assert (estimate.value, estimate.low, estimate.high) == (saved["ece_after"], *saved["ece_after_interval"])


def test_a_run_calibrated_before_intervals_has_none(artifacts):
    write_run(artifacts, "older", "baseline", LABELS, 0.6, seed=1, val_labels=VAL_LABELS)
    path = load_run("older").path / "calibration.json"
    calibration = json.loads(path.read_text())
    del calibration["test"]["ece_before_interval"], calibration["test"]["ece_after_interval"]
    path.write_text(json.dumps(calibration))
    row = runs_table().set_index("run").loc["older"]
    assert row["test_ece"] == calibration["test"]["ece_after"]
    assert pd.isna(row["test_ece_low"]) and pd.isna(row["test_ece_high"])
    assert load_run("older").test_ece_estimate is None


def test_runs_table_group_column(seeded):
    table = runs_table().set_index("run")
    assert {run: None if pd.isna(name) else name for run, name in table["group"].items()} == {
        "zeta": "zeta",
        "mid": "zeta",
        "alpha": "zeta",
        "slow": "slow",
        "slow-seed1": "slow",
        "lone": None,
    }
    columns = hyperparameter_columns(runs_table())
    assert "seed" in columns and "learning_rate" in columns
    for column in ("group", "test_accuracy_low", "test_accuracy_high", "test_ece_low", "test_ece_high"):
        assert column not in columns


def test_run_accuracy_estimate_recounts_the_predictions(artifacts):
    write_run(artifacts, "one", "baseline", LABELS, 0.6, seed=1)
    run = load_run("one")
    right = int((run.test_predictions.argmax(axis=1) == run.test_labels).sum())
    estimate = run.test_accuracy_estimate
    assert estimate.value == right / len(LABELS) == run.metrics["test_accuracy"]
    assert (estimate.low, estimate.high) == pytest.approx(wilson(right, len(LABELS)), abs=1e-9)


# ----------------------------------------------------------------------------- group:RUN


def test_group_name_resolves_from_any_member(seeded):
    runs = list_runs()
    for member in seeded["zeta"]:
        group = resolve(f"group:{member}", runs)
        assert isinstance(group, SeedGroup) and members(group) == seeded["zeta"]
    assert resolve("group:slow-seed1", runs).name == "slow"
    assert resolve("group:zeta").name == "zeta"  # without runs given: list_runs()
    run = resolve("mid", runs)
    assert run.run_id == "mid" and not isinstance(run, SeedGroup)


def test_a_run_without_a_group_says_how_to_make_one(seeded):
    with pytest.raises(CompareError) as error:
        resolve("group:lone", list_runs())
    message = str(error.value)
    assert "lone has no seed group" in message
    assert "python -m cifar train transfer --seeds 3" in message


@pytest.mark.parametrize("name", ["nope", "group:nope"])
def test_an_unknown_name_is_refused(seeded, name):
    with pytest.raises(CompareError, match="no run 'nope'"):
        resolve(name, list_runs())


def test_group_scores_are_the_share_of_seeds_right(seeded):
    group = resolve("group:zeta", list_runs())
    right = [load_run(run_id).test_predictions.argmax(axis=1) == LABELS for run_id in seeded["zeta"]]
    assert group.scores == pytest.approx(np.sum(right, axis=0) / 3)
    assert set(np.round(group.scores * 3).astype(int)) <= {0, 1, 2, 3}
    assert group.accuracy.value == pytest.approx(np.mean([saved_accuracy(r) for r in seeded["zeta"]]))
    assert group.test_accuracies == [saved_accuracy(r) for r in seeded["zeta"]]
    assert groups.right(load_run("mid")) == pytest.approx(right[1].astype(float))


def test_runs_listing_shows_each_share_with_its_interval(artifacts, capsys):
    from cifar import cli

    write_run(artifacts, "cal", "baseline", LABELS, 0.6, seed=1, val_labels=VAL_LABELS)
    write_run(artifacts, "raw", "baseline", LABELS, 0.6, seed=2, training_seed=1)
    assert cli.main(["runs"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    for run_id in ("cal", "raw"):
        right = int(round(saved_accuracy(run_id) * len(LABELS)))
        low, high = wilson(right, len(LABELS))
        assert f"{right / len(LABELS):.2%} ({low * 100:.2f}-{high * 100:.2f})" in lines[run_id]
    ece = load_run("cal").test_ece_estimate
    assert f"{ece.value:.2%} ({ece.low * 100:.2f}-{ece.high * 100:.2f})" in lines["cal"]
    assert lines["raw"].split()[5] == "-"  # no calibration: no ECE (after "53.00%", "(47.35-58.57)")
    assert lines["(95"].startswith("(95 % intervals: Wilson for accuracy")


def test_runs_listing_shows_each_seed_group_with_its_mean_spread_and_interval(seeded, capsys):
    from cifar import cli

    assert cli.main(["runs"]) == 0
    out = capsys.readouterr().out
    group = seed_groups(list_runs())[0]
    accuracy = group.accuracy
    line = next(line for line in out.splitlines() if line.startswith(f"  {group.name}: "))
    assert f"{len(group.runs)} seeds, test accuracy mean {accuracy.value:.2%} ± {group.spread:.2%}" in line
    assert f"{accuracy.low:.2%}-{accuracy.high:.2%}" in line
    assert line.endswith(", ".join(run.run_id for run in group.runs))


# ----------------------------------------------------------------------------- mutation survivors (#29)


def _edit_saved(root, run_id: str, file: str, edit) -> None:
    path = root / "runs" / run_id / file
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


def test_runs_whose_saved_config_today_refuses_still_group_by_what_they_saved(artifacts):
    """A retired choice: the configs are compared as saved (key order aside), minus the seed."""
    write_run(artifacts, "old", "baseline", LABELS, 0.6, seed=1, training_seed=0)
    write_run(artifacts, "old-seed1", "baseline", LABELS, 0.7, seed=2, training_seed=1)
    write_run(artifacts, "other", "baseline", LABELS, 0.65, seed=3, training_seed=2, learning_rate=5e-4)

    def retire(record, reverse=False):
        record["config"]["optimizer"] = "a-retired-optimizer"
        if reverse:
            record["config"] = dict(reversed(list(record["config"].items())))

    for run_id in ("old", "other"):
        _edit_saved(artifacts, run_id, "config.json", retire)
    _edit_saved(artifacts, "old-seed1", "config.json", lambda record: retire(record, reverse=True))
    runs = list_runs()
    assert {run.run_id for run in runs if run.config_problem} == {"old", "old-seed1", "other"}
    assert [members(group) for group in seed_groups(runs)] == [["old", "old-seed1"]]


def test_a_config_saved_without_a_seed_is_seed_0(artifacts):
    """...and comes first in its group, which it names (the ids sort the other way)."""
    write_run(artifacts, "zz-first", "baseline", LABELS, 0.6, seed=1, training_seed=0)
    write_run(artifacts, "aa-second", "baseline", LABELS, 0.7, seed=2, training_seed=1)
    _edit_saved(artifacts, "zz-first", "config.json", lambda record: record["config"].pop("seed"))
    [group] = seed_groups(list_runs())
    assert members(group) == ["zz-first", "aa-second"] and group.name == "zz-first"


def test_a_seed_without_a_test_accuracy_stays_out_of_its_group(seeded, artifacts):
    _edit_saved(artifacts, "alpha", "metrics.json", lambda record: record.pop("test_accuracy"))
    assert sorted(members(group) for group in seed_groups(list_runs())) == [
        ["slow", "slow-seed1"],
        ["zeta", "mid"],
    ]


def test_an_ensemble_has_no_seed_group_and_is_told_why(artifacts):
    write_run(artifacts, "m1", "baseline", LABELS, 0.6, seed=1, training_seed=0, val_labels=VAL_LABELS)
    write_run(artifacts, "m2", "baseline", LABELS, 0.7, seed=2, training_seed=1, val_labels=VAL_LABELS)
    make_ensemble("duo", ["m1", "m2"])
    with pytest.raises(CompareError, match="duo is an ensemble: only trained runs form seed groups"):
        resolve("group:duo")
    with pytest.raises(CompareError, match="m1 has no seed group"):
        resolve("group:m1", [load_run("m1")])


def test_two_test_images_are_enough_to_compare_and_one_is_not(artifacts):
    write_run(artifacts, "a", "baseline", np.array([0, 1]), 0.5, seed=1)
    write_run(artifacts, "b", "baseline", np.array([0, 1]), 0.5, seed=2)
    assert groups.compare(load_run("a"), load_run("b")).accuracy_a.value == saved_accuracy("a")
    write_run(artifacts, "c", "baseline", np.array([0]), 1.0, seed=3)
    write_run(artifacts, "d", "baseline", np.array([0]), 1.0, seed=4)
    with pytest.raises(CompareError, match="c was tested on 1 image: too few to compare"):
        groups.compare(load_run("c"), load_run("d"))


def test_a_group_comparison_gives_the_same_p_value_every_time(seeded):
    """The sign-flip test's resamples are seeded: a page shows the same p on every visit."""
    a, b = resolve("group:zeta"), resolve("group:slow")
    first, again = groups.compare(a, b), groups.compare(a, b)
    assert first.p_value == again.p_value and first.difference == again.difference
