"""`python -m cifar`'s own arguments (`--limit`, `--top-k`): refused by argparse, naming the flag and
its range, before any work and before TensorFlow loads. Hyperparameter flags are tests/test_config.py's
and tests/robustness/'s; `--run-id` is tests/test_jobs.py's. Then the quiet mode and `runs --format`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from cifar import cli
from cifar.config import CLASS_NAMES
from cifar.store.runs import runs_root
from tests.factory import REPO


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    """`cli.main(argv)` in a fresh interpreter; its last line says whether TensorFlow was imported."""
    code = (
        "import sys\nfrom cifar.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
        "except SystemExit as exit:\n    rc = exit.code\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\nsys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def no_work(monkeypatch):
    """Training, extraction and prediction fail the test if a refused command reaches them."""
    import cifar.inference.predict
    import cifar.modeling.features
    import cifar.training.train

    def started(*args, **kwargs):
        raise AssertionError("a refused command must not start any work")

    monkeypatch.setattr(cifar.training.train, "train", started)
    monkeypatch.setattr(cifar.modeling.features, "extract_for_config", started)
    monkeypatch.setattr(cifar.inference.predict, "load_predictor", started)


def refused(argv: list[str], flag: str, capsys) -> str:
    """`cli.main(argv)` exits 2 through argparse; returns its message, which names `flag`."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and "Traceback" not in err, err
    return err


def nothing_written() -> None:
    root = runs_root()
    assert not root.exists() or not any(root.iterdir()), sorted(p.name for p in root.iterdir())


# ----------------------------------------------------------------------------- --limit (defect 8)

LIMIT_COMMANDS = [["train", "baseline"], ["train", "transfer"], ["extract"]]


@pytest.mark.parametrize("command", LIMIT_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("limit", ["0", "-5", "-49999", "abc", "2.5", ""])
def test_limit_below_one_or_not_a_number_is_refused(command, limit, no_work, capsys):
    err = refused([*command, "--limit", limit], "--limit", capsys)
    assert "whole number >= 1" in err
    nothing_written()


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("command", LIMIT_COMMANDS, ids=" ".join)
def test_limit_refused_before_tensorflow_loads(command):
    result = run_cli(*command, "--limit=-49999", "--epochs", "1")
    assert result.returncode == 2, result.stderr
    assert "argument --limit: expected a whole number >= 1, got '-49999'" in result.stderr
    assert "Traceback" not in result.stderr
    assert "tensorflow imported: False" in result.stdout


@pytest.mark.parametrize("command", LIMIT_COMMANDS, ids=" ".join)
def test_limit_of_one_and_more_is_accepted_and_absent_means_everything(command):
    parser = cli.build_parser()
    for limit in (1, 50000, 10**9):
        args, _ = parser.parse_known_args([*command, "--limit", str(limit)])
        assert args.limit == limit
    assert parser.parse_known_args(command)[0].limit is None


# ----------------------------------------------------------------------------- --top-k (defect 12)


@pytest.mark.parametrize("top_k", ["0", "-1", "11", "abc"])
def test_top_k_outside_one_to_ten_is_refused(top_k, no_work, capsys, tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(b"not read: the arguments are refused first")
    err = refused(["predict", "any-run", str(image), "--top-k", top_k], "--top-k", capsys)
    assert f"whole number in 1..{len(CLASS_NAMES)}" in err


def test_top_k_accepts_one_to_the_number_of_classes():
    parser = cli.build_parser()
    assert parser.parse_args(["predict", "r", "i.png"]).top_k == 3
    for top_k in (1, len(CLASS_NAMES)):
        assert parser.parse_args(["predict", "r", "i.png", "--top-k", str(top_k)]).top_k == top_k


@pytest.mark.parametrize(
    "command, says",
    [("jobs", "no background jobs"), ("features", "the feature cache is empty")],
)
def test_an_empty_listing_says_so(command, says, capsys):
    assert cli.main([command]) == 0
    assert says in capsys.readouterr().out


def test_version(capsys):
    import cifar

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip().endswith(cifar.__version__)


# ----------------------------------------------------------------------------- quiet, machine-readable


def _stderr_of(code: str, **env_changes) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_changes)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


QUIET_IMPORT = (
    "import sys\nfrom cifar.terminal import quiet_tensorflow\nquiet = quiet_tensorflow()\n"
    "import tensorflow as tf\ntf.constant(1.0) + 1\nprint('ours', quiet, file=sys.stderr)"
)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_no_tensorflow_log_line_reaches_the_terminal_in_quiet_mode():
    assert _stderr_of(QUIET_IMPORT) == "ours True\n"


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_a_user_s_own_tensorflow_log_level_wins():
    err = _stderr_of(QUIET_IMPORT, TF_CPP_MIN_LOG_LEVEL="0")
    assert err.endswith("ours False\n") and len(err.splitlines()) > 1  # TensorFlow's own lines too


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("level", ["1", "2", "3"])
def test_no_tensorflow_log_line_when_the_user_silences_tensorflow_too(level):
    """How most people silence TensorFlow (and how jobs start): its lines before absl's
    initialisation still reach descriptor 2 unless quiet mode takes it."""
    assert _stderr_of(QUIET_IMPORT, TF_CPP_MIN_LOG_LEVEL=level) == "ours True\n"


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_a_script_calling_load_run_model_sees_no_tensorflow_log_line_and_its_own_errors(trained_baseline):
    artifacts, run_id, _ = trained_baseline
    code = (
        "import sys\nimport numpy as np\nfrom cifar import load_run_model\n"
        f"model = load_run_model({run_id!r}, artifacts={str(artifacts)!r})\n"
        "model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)\n"
        "print('ours', file=sys.stderr)\n"
        "import os\nos.write(2, b'descriptor 2 is back\\n')"
    )
    assert _stderr_of(code) == "ours\ndescriptor 2 is back\n"


def test_runs_as_csv_and_json_hold_every_column(runs, capsys):
    import io

    from cifar.store.tables import COMPACT_COLUMNS, runs_table

    expected = runs_table()
    assert cli.main(["runs", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns) == list(expected.columns) and sorted(table["run"]) == sorted(runs)
    pd.testing.assert_series_equal(table["test_accuracy"], expected["test_accuracy"], check_dtype=False)
    assert cli.main(["runs", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["run"]: r["test_accuracy"] for r in records} == dict(
        zip(expected["run"], expected["test_accuracy"], strict=True)
    )
    assert cli.main(["runs"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == list(COMPACT_COLUMNS)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_a_reader_that_goes_away_ends_the_listing_quietly():
    """`cifar runs | head -1`: SIGPIPE's status and nothing on stderr (no "Exception ignored")."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line is written
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cifar", "runs"],
            cwd=REPO,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


@pytest.mark.parametrize("run_id", ["transfer-best", "transfer-reference", "baseline-best"])
def test_the_nearest_images_hint_is_a_command_the_cli_takes_for_that_run(run_id):
    """#33: the hint under a Grad-CAM map was not a command anyone could type."""
    from cifar.analysis.feature_space import train_features_command
    from cifar.cli import boolean_fields, build_parser, parse_overrides
    from cifar.config import load_config, parse_config
    from cifar.store.runs import Run
    from tests.factory import REPO

    folder = REPO / "artifacts" / "runs" / run_id
    config = json.loads((folder / "config.json").read_text())
    run = Run(run_id, folder, config, {"model": config["config"]["model"]})
    words = train_features_command(run).split()
    assert words[:3] == ["python", "-m", "cifar"]
    args, extra = build_parser().parse_known_args(words[3:])
    if args.command == "extract":
        parsed = parse_config("transfer", parse_overrides(extra, boolean_fields("transfer")))
        assert parsed == load_config(run.hyperparameters)
    else:
        assert (args.command, args.runs, args.overwrite) == ("project", [run_id], True) and not extra


def test_every_command_says_what_it_does_gives_an_example_that_parses_and_explains_each_argument():
    """`python -m cifar COMMAND --help`: a description, every argument's help, and an example the
    parser itself accepts (the hidden standby command excepted from the example)."""
    import argparse
    import shlex

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(cli.EXAMPLES) == set(commands) - {"standby"}
    for name, command in commands.items():
        assert command.description, name
        assert all(action.help for action in command._actions), name
        if name in cli.EXAMPLES:
            assert command.epilog.endswith(f"example: {cli.EXAMPLES[name]}"), name
            words = shlex.split(cli.EXAMPLES[name].split(" > ")[0])[3:]
            args, extra = parser.parse_known_args(words)
            assert args.command == name and (not extra or name in ("train", "extract")), name
            if extra:  # hyperparameters: checked by the typed config, as `train` checks them
                model = getattr(args, "model", "transfer")
                cli.parse_config(model, cli.parse_overrides(extra, cli.boolean_fields(model)))
