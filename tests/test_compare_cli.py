"""Two classifiers on the same test images (`cifar.store.groups.compare`, `python -m cifar compare`), and
seed groups trained by `python -m cifar train ... --seeds N` (issue #32).

The discordant counts are recounted here from the runs' saved predictions; the p-values of the
fixtures are worked by hand (McNemar's exact test: tests/test_stats.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cifar import cli
from cifar.config import MOST_SEEDS, BaselineConfig, parse_config
from cifar.service import jobs
from cifar.store import processes
from cifar.store.groups import CompareError, compare, resolve, seed_groups
from cifar.store.runs import RunError, list_runs, load_run, run_path, runs_root
from tests.factory import REPO, labels_of, write_run
from tests.test_cli import no_work, refused  # noqa: F401 (a fixture)

LABELS = np.arange(2000) * 3 % 10


def right(run_id: str) -> np.ndarray:
    """Recounted from the files: where the run's top class is the label."""
    folder = run_path(run_id)
    return np.load(folder / "test_predictions.npy").argmax(axis=1) == np.load(folder / "test_labels.npy")


def saved_accuracy(run_id: str) -> float:
    return json.loads((run_path(run_id) / "metrics.json").read_text())["test_accuracy"]


def edit_predictions(run_id: str, to_wrong=(), to_right=()) -> None:
    """Make the run wrong on images `to_wrong` and right on `to_right` (metrics.json follows)."""
    folder = run_path(run_id)
    probabilities = np.load(folder / "test_predictions.npy")
    labels = np.load(folder / "test_labels.npy")
    for i in to_wrong:
        assert probabilities[i].argmax() == labels[i]
        probabilities[i] = np.roll(probabilities[i], 1)  # the top class moves one on: not the label
    for i in to_right:
        top = probabilities[i].argmax()
        probabilities[i, [top, labels[i]]] = probabilities[i, [labels[i], top]]
    np.save(folder / "test_predictions.npy", probabilities)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["test_accuracy"] = float(np.mean(probabilities.argmax(axis=1) == labels))
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def pair(artifacts):
    """ "weak" and "strong" (asked for 60 and 90 %, 54 and 78 % drawn) on the same 2,000 test images."""
    write_run(artifacts, "weak", "baseline", LABELS, 0.6, seed=1)
    write_run(artifacts, "strong", "transfer", LABELS, 0.9, seed=2)
    assert 0.5 < saved_accuracy("weak") < 0.6 and 0.75 < saved_accuracy("strong") < 0.8


@pytest.fixture
def close(artifacts):
    """ "near" is "base" except 3 images only base gets right and 1 only near gets right:
    McNemar's p = 2 (1 + 4) / 16 = 0.625."""
    write_run(artifacts, "base", "baseline", LABELS, 0.7, seed=3)
    write_run(artifacts, "near", "baseline", LABELS, 0.7, seed=3, learning_rate=5e-4)
    base = right("base")
    edit_predictions("near", to_wrong=np.flatnonzero(base)[:3], to_right=np.flatnonzero(~base)[:1])
    assert (int((base & ~right("near")).sum()), int((right("near") & ~base).sum())) == (3, 1)


def compare_cli(*argv: str, capsys) -> tuple[int, str, str]:
    status = cli.main(["compare", *argv])
    out, err = capsys.readouterr()
    return status, out, err


# ----------------------------------------------------------------------------- two runs


def test_discordant_counts_are_those_of_the_saved_predictions(pair):
    weak, strong = right("weak"), right("strong")
    result = compare(load_run("weak"), load_run("strong"))
    assert result.a_only == int((weak & ~strong).sum()) > 0
    assert result.b_only == int((strong & ~weak).sum()) > result.a_only
    assert result.accuracy_a.value == saved_accuracy("weak") and result.accuracy_b.value == saved_accuracy(
        "strong"
    )
    assert result.difference.value == pytest.approx(saved_accuracy("weak") - saved_accuracy("strong"))
    assert result.test == "McNemar's exact test" and result.p_value < 1e-6


def test_swapping_a_and_b_negates_the_difference_and_keeps_p_and_the_verdict(pair):
    ab = compare(load_run("weak"), load_run("strong"))
    ba = compare(load_run("strong"), load_run("weak"))
    assert (ba.a_only, ba.b_only) == (ab.b_only, ab.a_only)
    assert ba.p_value == ab.p_value
    assert ba.difference.value == pytest.approx(-ab.difference.value)
    assert (ba.difference.low, ba.difference.high) == pytest.approx((-ab.difference.high, -ab.difference.low))
    for result in (ab, ba):
        assert result.significant
        assert result.verdict.startswith("strong is better than weak: 95 % sure the gain is between ")


def test_close_runs_get_no_verdict_in_either_order(close):
    ab = compare(load_run("base"), load_run("near"))
    ba = compare(load_run("near"), load_run("base"))
    assert (ab.a_only, ab.b_only, ba.a_only, ba.b_only) == (3, 1, 1, 3)
    assert ab.p_value == ba.p_value == pytest.approx(0.625)
    assert ab.difference.value == pytest.approx(2 / 2000) and ba.difference.value == pytest.approx(-2 / 2000)
    for result in (ab, ba):
        assert result.verdict.startswith("No difference this test set can see: McNemar's exact test p = 0.62")


def test_runs_on_different_test_sets_are_refused_naming_both(pair, artifacts):
    write_run(artifacts, "fewer", "baseline", LABELS[:1999], 0.6, seed=4)
    write_run(artifacts, "other-labels", "baseline", (LABELS + 1) % 10, 0.6, seed=5)
    write_run(artifacts, "other-images", "baseline", LABELS, 0.6, seed=6)
    for run_id, checksum in (("weak", "a" * 64), ("other-images", "b" * 64)):
        folder = run_path(run_id)
        config = json.loads((folder / "config.json").read_text())
        config["assets"] = {"cifar10_sha256": {"x_test": checksum}}
        (folder / "config.json").write_text(json.dumps(config))
    expected = {
        "fewer": "weak was tested on 2,000 images and fewer on 1,999: not the same test set",
        "other-labels": "weak and other-labels have different test labels: not the same test set",
        "other-images": "weak and other-images were tested on different images "
        "(their x_test checksums differ)",
    }
    for run_id, message in expected.items():
        with pytest.raises(CompareError) as error:
            compare(load_run("weak"), load_run(run_id))
        assert str(error.value) == message
        with pytest.raises(CompareError, match=f"{run_id}.*weak|weak.*{run_id}"):
            compare(load_run(run_id), load_run("weak"))


def test_cli_refuses_different_test_sets_with_status_1(pair, artifacts, capsys):
    write_run(artifacts, "fewer", "baseline", LABELS[:1999], 0.6, seed=4)
    status, out, err = compare_cli("weak", "fewer", capsys=capsys)
    assert status == 1 and out == ""
    assert err == "error: weak was tested on 2,000 images and fewer on 1,999: not the same test set\n"


def test_cli_compare_table(close, capsys):
    status, out, err = compare_cli("base", "near", capsys=capsys)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["A:", "base", "B:", "near"]
    accuracy_base, accuracy_near = saved_accuracy("base"), saved_accuracy("near")
    assert f"{accuracy_base * 100:.2f} % (" in lines[1] and f"{accuracy_near * 100:.2f} % (" in lines[1]
    assert lines[2].split()[-4:] == ["3", "images", "1", "images"]
    assert lines[3] == "McNemar's exact test: p = 0.62"  # 0.625 to two digits
    assert lines[4].startswith("A minus B: +0.10 pts (") and lines[4].endswith("(paired bootstrap, 95 %)")
    assert lines[5].startswith("No difference this test set can see")


def test_cli_compare_json_holds_the_fields(pair, capsys):
    status, out, _ = compare_cli("strong", "weak", "--format", "json", capsys=capsys)
    assert status == 0
    result = json.loads(out)
    weak, strong = right("weak"), right("strong")
    assert (result["a"], result["b"]) == ("strong", "weak")
    assert result["a_right_b_wrong"] == int((strong & ~weak).sum())
    assert result["b_right_a_wrong"] == int((weak & ~strong).sum())
    assert result["accuracy_a"]["value"] == saved_accuracy("strong")
    assert result["accuracy_a"]["low"] < result["accuracy_a"]["value"] < result["accuracy_a"]["high"]
    assert result["accuracy_b"]["method"] == "Wilson"
    assert result["test"] == "McNemar's exact test" and 0 <= result["p_value"] < 1e-6
    difference = result["difference"]
    assert difference["value"] == pytest.approx(saved_accuracy("strong") - saved_accuracy("weak"))
    assert 0 < difference["low"] < difference["value"] < difference["high"]
    assert difference["method"] == "paired bootstrap"
    assert result["verdict"].startswith("strong is better than weak")


@pytest.mark.parametrize("argv", [["weak"], ["weak", "strong", "--format", "csv"], ["weak", "strong", "--x"]])
def test_cli_compare_usage_errors(pair, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", *argv])
    assert exit_info.value.code == 2


def test_cli_compare_unknown_run(pair, capsys):
    status, _, err = compare_cli("weak", "nope", capsys=capsys)
    assert status == 1 and err.startswith("error: no run 'nope'")


# ----------------------------------------------------------------------------- seed groups


@pytest.fixture
def group(pair, artifacts):
    """Seeds 0, 1, 2 of one baseline config ("g", "g-seed1", "g-seed2"), at about 60, 70 and 80 %."""
    for seed, accuracy in enumerate((0.6, 0.7, 0.8)):
        run_id = "g" if seed == 0 else f"g-seed{seed}"
        write_run(
            artifacts, run_id, "baseline", LABELS, accuracy, seed=10 + seed, training_seed=seed, epochs=5
        )
    return ["g", "g-seed1", "g-seed2"]


def test_cli_compares_a_group_by_any_member_s_name(group, capsys):
    status, out, _ = compare_cli("group:g-seed1", "strong", "--format", "json", capsys=capsys)
    assert status == 0
    result = json.loads(out)
    share = np.mean([right(run_id) for run_id in group], axis=0)
    strong = right("strong").astype(float)
    assert result["a"] == "group:g (3 seeds)" and result["b"] == "strong"
    assert result["test"] == "paired permutation test"
    assert result["a_right_b_wrong"] == pytest.approx(np.clip(share - strong, 0, None).sum())
    assert result["b_right_a_wrong"] == pytest.approx(np.clip(strong - share, 0, None).sum())
    assert result["accuracy_a"]["value"] == pytest.approx(np.mean([saved_accuracy(r) for r in group]))
    assert result["p_value"] < 0.01 and result["verdict"].startswith(
        "strong is better than group:g (3 seeds)"
    )


def test_a_group_against_a_group(group, artifacts):
    for seed in (0, 1):
        write_run(
            artifacts, f"h{seed}", "baseline", LABELS, 0.62, seed=20 + seed, training_seed=seed, epochs=6
        )
    runs = list_runs()
    result = compare(resolve("group:g", runs), resolve("group:h1", runs))
    assert (result.a, result.b) == ("group:g (3 seeds)", "group:h0 (2 seeds)")
    g = np.mean([right(run_id) for run_id in group], axis=0)
    h = np.mean([right("h0"), right("h1")], axis=0)
    assert result.a_only == pytest.approx(np.clip(g - h, 0, None).sum())
    assert result.difference.value == pytest.approx(g.mean() - h.mean())


def test_a_group_with_a_member_on_another_test_set_is_refused(group, artifacts):
    write_run(artifacts, "g-seed3", "baseline", LABELS[:1999], 0.6, seed=13, training_seed=3, epochs=5)
    runs = list_runs()
    assert len(resolve("group:g", runs).runs) == 4
    with pytest.raises(CompareError, match="g was tested on 2,000 images and g-seed3 on 1,999"):
        compare(resolve("group:g", runs), load_run("strong"))


def test_cli_group_of_a_run_without_one_says_how_to_make_one(pair, capsys):
    status, out, err = compare_cli("group:weak", "strong", capsys=capsys)
    assert status == 1 and out == ""
    assert err.startswith("error: weak has no seed group")
    assert "`python -m cifar train baseline --seeds 3 ...` makes one" in err


# ----------------------------------------------------------------------------- train --seeds


def test_seed_runs_names():
    assert jobs.seed_runs("x", 5, 3) == {5: "x", 6: "x-seed6", 7: "x-seed7"}
    assert jobs.seed_runs("x", 0, 1) == {0: "x"}
    assert list(jobs.seed_runs("x", 0, MOST_SEEDS)) == list(range(MOST_SEEDS))
    for count in (0, MOST_SEEDS + 1):
        with pytest.raises(ValueError, match="seeds"):
            jobs.seed_runs("x", 0, count)
    with pytest.raises(RunError, match="invalid run id"):
        jobs.seed_runs("../x", 0, 2)
    with pytest.raises(RunError, match="invalid run id"):
        jobs.seed_runs("x" * 96, 0, 2)  # fits alone, not with -seed1


@pytest.mark.parametrize("seeds", ["0", "11", "-1", "abc", "2.5"])
def test_seeds_outside_one_to_ten_is_a_usage_error(seeds, no_work, capsys):  # noqa: F811
    err = refused(["train", "baseline", "--run-id", "x", "--seeds", seeds], "--seeds", capsys)
    assert f"expected a whole number in 1..10, got '{seeds}'" in err
    assert not runs_root().exists()


def test_seed_is_a_hyperparameter_not_an_abbreviation_of_seeds():
    """argparse takes a unique prefix of an option for the option: `--seed 5` must stay the
    config's seed, not become `--seeds 5`."""
    parser = cli.build_parser()
    for argv in (
        ["--seeds", "3", "--seed", "5"],
        ["--seed", "5", "--seeds", "3"],
        ["--seeds", "3", "--seed=5"],
    ):
        args, extra = parser.parse_known_args(["train", "baseline", *argv])
        assert args.seeds == 3, argv
        assert parse_config("baseline", cli.parse_overrides(extra)).seed == 5, argv
    args, extra = parser.parse_known_args(["train", "baseline", "--seed", "0"])
    assert args.seeds == 1 and cli.parse_overrides(extra) == {"seed": "0"}


def test_train_args_ask_for_seeds_only_for_a_group_and_parse_back():
    """What the dashboard's job runs: the CLI's own parser gives the same config and seed count."""
    config = BaselineConfig(epochs=2, seed=4, learning_rate=5e-4)
    assert "--seeds" not in jobs.train_args(config, "r")
    assert "--seeds" not in jobs.train_args(config, "r", 1)
    args = jobs.train_args(config, "r", 3)
    assert args[:6] == ["train", "baseline", "--run-id", "r", "--seeds", "3"]
    for seeds in (1, 3):
        parsed, extra = cli.build_parser().parse_known_args(jobs.train_args(config, "r", seeds))
        assert (parsed.run_id, parsed.seeds) == ("r", seeds)
        assert parse_config("baseline", cli.parse_overrides(extra, cli.boolean_fields("baseline"))) == config


def test_start_job_refuses_when_a_seed_s_run_exists(monkeypatch):
    monkeypatch.setattr(processes, "spawn", lambda *a, **k: pytest.fail("no process may start"))
    run_path("x-seed6").mkdir(parents=True)
    with pytest.raises(RunError, match="run 'x-seed6' exists already"):
        jobs.start_job(BaselineConfig(seed=5), run_id="x", seeds=3)
    assert processes.slot_holder() is None


# `python -m cifar train` in a fresh interpreter whose trainer is a stand-in: it prints the run id,
# the seed and the job named in the slot, and writes no run (so no TensorFlow, no data).
FAKE_TRAINER = """
import sys, types
from pathlib import Path
from cifar.store import processes

def train(config, run_id, limit=None, extract_missing=True):
    print("trained", run_id, config.seed, (processes.slot_holder() or {}).get("run_id"), flush=True)
    return Path("no-such-folder") / run_id

sys.modules["cifar.training.train"] = types.SimpleNamespace(train=train)
from cifar.cli import main
rc = main(sys.argv[1:])
print("tensorflow imported:", "tensorflow" in sys.modules)
sys.exit(rc)
"""


def cli_train(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", FAKE_TRAINER, "train", "baseline", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("taken", ["x", "x-seed6", "x-seed7"])
def test_train_seeds_refuses_a_taken_run_id_before_tensorflow_loads(artifacts, taken):
    run_path(taken).mkdir(parents=True)
    result = cli_train("--run-id", "x", "--seeds", "3", "--seed", "5", "--epochs", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == f"error: run '{taken}' exists already; choose another --run-id\n"
    assert "trained" not in result.stdout and "tensorflow imported: False" in result.stdout
    assert sorted(path.name for path in runs_root().iterdir()) == [taken]
    assert processes.slot_holder() is None


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--seeds", "3", "--seed", "5"], [("x", 5), ("x-seed6", 6), ("x-seed7", 7)]),
        (["--seeds", "3"], [("x", 0), ("x-seed1", 1), ("x-seed2", 2)]),
        (["--seed", "5"], [("x", 5)]),
    ],
    ids=["seeds-3-from-5", "seeds-3", "one-seed"],
)
def test_train_seeds_trains_each_seed_under_its_own_name_and_slot(argv, expected):
    result = cli_train("--run-id", "x", "--epochs", "1", *argv)
    assert result.returncode == 0, result.stderr
    trained = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("trained ")]
    # Each seed's config, and the job the slot names (the dashboard shows it) is the seed in training.
    assert trained == [[run_id, str(seed), run_id] for run_id, seed in expected]
    assert processes.slot_holder() is None  # the process has ended: the slot is free


@pytest.mark.slow
def test_train_two_seeds_for_real_makes_one_group(cifar_npz):
    command = [sys.executable, "-m", "cifar", "train", "baseline", "--run-id", "tiny", "--seeds", "2"]
    command += ["--seed", "3", "--epochs", "1", "--validation-size", "20", "--limit", "60"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in runs_root().iterdir() if not path.name.startswith(".")) == [
        "tiny",
        "tiny-seed4",
    ]
    first, second = load_run("tiny"), load_run("tiny-seed4")
    assert (first.hyperparameters["seed"], second.hyperparameters["seed"]) == (3, 4)
    assert first.config["limit"] == second.config["limit"] == 60
    assert len(first.test_labels) == 60
    assert np.array_equal(first.test_labels, labels_of(cifar_npz)[:60])
    assert not np.array_equal(first.test_predictions, second.test_predictions)  # another seed, other weights
    (found,) = seed_groups(list_runs())
    assert found.name == "tiny" and [run.run_id for run in found.runs] == ["tiny", "tiny-seed4"]
    assert resolve("group:tiny-seed4").name == "tiny"
    assert processes.slot_holder() is None


def test_seeds_past_the_largest_seed_are_refused_before_any_trains():
    from cifar.config import LARGEST_SEED

    assert list(jobs.seed_runs("x", LARGEST_SEED - 1, 2)) == [LARGEST_SEED - 1, LARGEST_SEED]
    with pytest.raises(ValueError, match="pass the largest seed"):
        jobs.seed_runs("x", LARGEST_SEED, 2)


def test_moving_the_slot_to_the_next_seed_keeps_the_job_s_log_found_under_its_name(artifacts):
    """A later seed that fails is listed under its own run id: its log is the group's one log."""
    import os

    from tests.factory import take_slot

    fd = take_slot("x", pid=os.getpid())
    try:
        jobs.log_path("x").parent.mkdir(parents=True, exist_ok=True)
        jobs.log_path("x").write_text("epoch 1/1\n")
        jobs.move_slot("x", "x-seed1")
        jobs.move_slot("x-seed1", "x-seed2")
        assert processes.slot_holder()["run_id"] == "x-seed2"
        assert jobs.log_path("x-seed2").read_text() == "epoch 1/1\n"
    finally:
        os.close(fd)
