"""Command line: `python -m cifar fetch | extract | features | train | calibrate | ensemble | evaluate
| runs | predict | jobs`.

Hyperparameters are given as `--key value` pairs and go through the same typed config as the
dashboard, e.g. `python -m cifar train transfer --resize bilinear --epochs 20`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from cifar import __version__
from cifar.cli_runs import add_commands_on_finished_runs, whole_number
from cifar.cli_tables import add_run_table_commands, no_runs_message
from cifar.config import CONFIG_TYPES, MOST_SEEDS, ConfigError, allowed_range, field_table, parse_config
from cifar.store import run_folder
from cifar.terminal import quiet_tensorflow


def parse_overrides(tokens: Sequence[str], flags: frozenset[str] = frozenset()) -> dict[str, str]:
    """`--key value --other-key value` -> {"key": "value", "other_key": "value"}; a boolean field
    named in `flags` may stand alone (`--augment` is "true", `--no-augment` "false")."""
    overrides: dict[str, str] = {}
    tokens = list(tokens)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--"):
            raise ConfigError(f"expected --key value, got {token!r}")
        key, _, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if "=" in token:
            pass
        elif key in flags and not (tokens and tokens[0].lower() in ("true", "false")):
            value = "true"
        elif key.startswith("no_") and key[3:] in flags:
            key, value = key[3:], "false"
        elif tokens and not tokens[0].startswith("--"):
            value = tokens.pop(0)
        else:
            raise ConfigError(f"{token}: missing value")
        overrides[key] = value
    return overrides


def boolean_fields(model: str) -> frozenset[str]:
    return frozenset(row["name"] for row in field_table(model) if row["type"] == "bool")


LIMIT_HELP = "first N (>= 1) train and test images only; all of them without --limit"


def _fields_help(model: str) -> str:
    lines = [f"{model} hyperparameters (--key value; a true/false one may stand alone, or as --no-key):"]
    for row in field_table(model):
        bounds = allowed_range(row)
        choices = f" one of {row['choices']}" if row["choices"] else ""
        lines.append(f"  --{row['name'].replace('_', '-'):26} default {row['default']!r}{choices} {bounds}")
        if row["help"]:
            lines.append(f"{'':31}{row['help']}")
    return "\n".join(lines)


def cmd_fetch(args, _extra) -> int:
    """python -m cifar fetch  (downloads and verifies CIFAR-10 and the InceptionV3 weights)"""
    from cifar.sources.assets import (
        frost_textures_path,
        load_cifar10,
        load_frost_textures,
        load_inception_weights,
    )

    data = load_cifar10()
    print(f"CIFAR-10: {len(data.x_train)} train / {len(data.x_test)} test images, sha256 verified")
    weights = load_inception_weights(args.weights)
    print(f"InceptionV3 weights ({weights.source}): {weights.path} sha256 {weights.sha256[:16]}")
    textures = load_frost_textures()
    print(f"frost textures (robustness): {len(textures)} images in {frost_textures_path()}")
    return 0


def cmd_extract(args, extra) -> int:
    """python -m cifar extract --resize bilinear --architecture exact2015 [--tta-flip true]"""
    from cifar.modeling.features import extract_for_config

    config = parse_config("transfer", parse_overrides(extra, boolean_fields("transfer")))
    extract_for_config(config, limit=args.limit, log=print)
    return 0


def cmd_train(args, extra) -> int:
    """python -m cifar train baseline|transfer [--run-id NAME] [--limit N] [--seeds N] [--key value ...]"""
    from cifar.service.jobs import hold_slot, move_slot, seed_runs
    from cifar.store.runs import RunWriter, new_run_id

    config = parse_config(args.model, parse_overrides(extra, boolean_fields(args.model)))
    run_id = new_run_id(config.model) if args.run_id is None else args.run_id  # "" is refused
    seeds = seed_runs(run_id, config.seed, args.seeds)
    for seed_run_id in seeds.values():
        RunWriter(seed_run_id)  # a bad or taken run id fails now, before TensorFlow loads
    hold_slot(run_id)  # before TensorFlow: a refused train costs no import
    from cifar.training.train import train

    held = run_id  # the run the job slot names
    for seed, seed_run_id in seeds.items():
        move_slot(held, seed_run_id)  # the job the dashboard shows is the seed in training
        held = seed_run_id
        seed_config = parse_config(config.model, {**config.model_dump(), "seed": seed})
        run_dir = train(seed_config, run_id=seed_run_id, limit=args.limit, extract_missing=args.extract)
        if not (run_dir / run_folder.METRICS).exists():  # a non-chief worker of a distributed run
            print("worker finished; the chief (worker 0) writes the run folder")
            continue
        print(f"run written to {run_dir}")
        print(json.dumps(json.loads((run_dir / run_folder.METRICS).read_text()), indent=2))
    return 0


def cmd_tensorboard(args, _extra) -> int:
    """python -m cifar tensorboard [--port N] [--write-only]  (committed runs' curves and HParams)"""
    import subprocess

    from cifar.analysis.tensorboard_logs import write_logs
    from cifar.store.runs import list_runs, runs_root

    runs = list_runs()
    if not runs:
        print(no_runs_message())
        return 0
    for run in runs:
        print(f"{run.run_id}: wrote {', '.join(write_logs(run))}")
    if args.write_only:
        return 0
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(runs_root()),
        "--port",
        str(args.port),
    ]
    return subprocess.call(command, stderr=sys.stderr)  # its address and its errors: the terminal


def cmd_standby(args, _extra) -> int:
    """python -m cifar standby --ready-file F  (a job process waiting for its job;
    see cifar.service.standby)"""
    from cifar.service.standby import serve_standby

    return serve_standby(args.ready_file, args.idle_seconds, run=main)


def build_parser() -> argparse.ArgumentParser:
    prog = "cifar" if os.path.basename(sys.argv[0]) == "cifar" else "python -m cifar"  # as it was called
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_training_commands(sub)
    add_run_table_commands(sub)
    _add_service_commands(sub)
    add_commands_on_finished_runs(sub)
    _describe(sub)
    return parser


# What each command's --help ends with (tests/test_cli.py parses every one).
EXAMPLES = {
    "fetch": "python -m cifar fetch",
    "extract": "python -m cifar extract --resize bilinear",
    "train": "python -m cifar train transfer --epochs 20 --run-id my-head",
    "evaluate": "python -m cifar evaluate transfer-best",
    "runs": "python -m cifar runs --format csv > runs.csv",
    "compare": "python -m cifar compare baseline-best transfer-best",
    "jobs": "python -m cifar jobs",
    "features": "python -m cifar features --prune",
    "tensorboard": "python -m cifar tensorboard --port 6006",
    "calibrate": "python -m cifar calibrate my-head --overwrite",
    "cost": "python -m cifar cost my-head",
    "ensemble": "python -m cifar ensemble --run-id duo baseline-best transfer-best",
    "robustness": "python -m cifar robustness my-head --images 1000",
    "project": "python -m cifar project my-head",
    "export": "python -m cifar export transfer-best --format onnx --out tb.onnx",
    "explain": "python -m cifar explain transfer-best photo.jpg --out cam.png",
    "predict": "python -m cifar predict transfer-best photo.jpg",
}


def _describe(sub) -> None:
    """Every command's --help opens with what it does (its one-line help) and ends with an example
    (argparse keeps a choice's help only on the subparsers action's `_choices_actions`)."""
    for choice in sub._choices_actions:
        command = sub.choices[choice.dest]
        command.description = command.description or choice.help
        if (example := EXAMPLES.get(choice.dest)) and "example:" not in (command.epilog or ""):
            command.epilog = (
                f"{command.epilog}\n\nexample: {example}" if command.epilog else f"example: {example}"
            )


def _add_training_commands(sub) -> None:
    """fetch, extract and train: from nothing to a run folder."""
    fetch = sub.add_parser("fetch", help="download, verify and cache the data and weights")
    fetch.add_argument(
        "--weights",
        default="auto",
        choices=["auto", "keras", "google2015"],
        help="InceptionV3 weights: Keras' own release or Google's 2015 one (auto: whichever is reachable)",
    )
    fetch.set_defaults(func=cmd_fetch)

    extract = sub.add_parser(
        "extract",
        help="cache the frozen base's features for a transfer config",
        epilog=_fields_help("transfer"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    extract.add_argument("--limit", type=whole_number(1), default=None, help=LIMIT_HELP)
    extract.set_defaults(func=cmd_extract)

    train = sub.add_parser(
        "train",
        allow_abbrev=False,  # `--seed 5` is the config's seed, not an abbreviation of `--seeds`
        help="train a model and write a run folder",
        epilog="\n\n".join(_fields_help(m) for m in CONFIG_TYPES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "model", choices=sorted(CONFIG_TYPES), help="the family: baseline CNN or InceptionV3 transfer"
    )
    train.add_argument("--run-id", default=None, help="folder name under artifacts/runs/")
    train.add_argument("--limit", type=whole_number(1), default=None, help=LIMIT_HELP)
    train.add_argument(
        "--seeds",
        type=whole_number(1, MOST_SEEDS),
        default=1,
        help="train the config N times, seeds --seed .. --seed + N - 1, one after another: a seed "
        "group (RUN_ID, RUN_ID-seedS, ...) that tables and `compare group:RUN_ID` show as one",
    )
    train.add_argument(
        "--extract",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="extract missing features first (transfer)",
    )
    train.set_defaults(func=cmd_train)


def _add_service_commands(sub) -> None:
    """TensorBoard, and the dashboard's standby process."""
    board = sub.add_parser("tensorboard", help="TensorBoard over every run: curves and the HParams table")
    board.add_argument("--port", type=whole_number(1, 65535), default=6006, help="TensorBoard's port")
    board.add_argument("--write-only", action="store_true", help="write the missing logs, start nothing")
    board.set_defaults(func=cmd_tensorboard)
    standby = sub.add_parser("standby", help="(internal) a job process waiting for its job")
    standby.add_argument("--ready-file", required=True, help="written once TensorFlow is loaded")
    standby.add_argument("--idle-seconds", type=float, default=15 * 60, help="exit if no job comes")
    standby.set_defaults(func=cmd_standby)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("train", "extract"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if argv is None:  # the real command line (not a call from Python code or a test)
        quiet_tensorflow()
    try:
        status = args.func(args, extra)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        return _reader_went_away()
    except ConfigError as error:  # a wrong hyperparameter: a usage error, as argparse's are
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if not _is_runtime_error(error) or os.environ.get("CIFAR_DEBUG"):  # CIFAR_DEBUG=1: the traceback
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1


def _reader_went_away() -> int:
    """`cifar runs | head`: stop quietly with SIGPIPE's status, as Unix tools do (the recipe of
    Python's "Note on SIGPIPE": point stdout at /dev/null so the exit flush cannot fail again)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + 13


def _is_runtime_error(error: Exception) -> bool:
    """An error the user can act on from its message (exit status 1, no traceback); the modules
    that define them are imported only now, so a command starts without them."""
    from cifar.modeling.features import FeaturesMissing
    from cifar.service.jobs import JobBusy
    from cifar.sources.assets import AssetError
    from cifar.store.runs import RunError

    return isinstance(error, RunError | AssetError | FeaturesMissing | JobBusy | ValueError | OSError)
