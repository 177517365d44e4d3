"""Command line: `python -m cifar fetch | extract | features | train | calibrate | ensemble | evaluate
| runs | predict | jobs`.

Hyperparameters are given as `--key value` pairs and go through the same typed config as the
dashboard, e.g. `python -m cifar train transfer --resize bilinear --epochs 20`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Sequence

from cifar import __version__
from cifar.config import CLASS_NAMES, CONFIG_TYPES, ConfigError, allowed_range, field_table, parse_config


def parse_overrides(tokens: Sequence[str]) -> dict[str, str]:
    """`--key value --other-key value` -> {"key": "value", "other_key": "value"}."""
    overrides: dict[str, str] = {}
    tokens = list(tokens)
    while tokens:
        key = tokens.pop(0)
        if not key.startswith("--"):
            raise ConfigError(f"expected --key value, got {key!r}")
        key = key[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif tokens and not tokens[0].startswith("--"):
            value = tokens.pop(0)
        else:
            raise ConfigError(f"--{key}: missing value")
        overrides[key.replace("-", "_")] = value
    return overrides


LIMIT_HELP = "first N (>= 1) train and test images only; all of them without --limit"


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: an int in low..high (no upper bound if high is None), else a usage error."""
    expected = f"a whole number >= {low}" if high is None else f"a whole number in {low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def _fields_help(model: str) -> str:
    lines = [f"{model} hyperparameters (--key value):"]
    for row in field_table(model):
        bounds = allowed_range(row)
        choices = f" one of {row['choices']}" if row["choices"] else ""
        lines.append(f"  --{row['name'].replace('_', '-'):26} default {row['default']!r}{choices} {bounds}")
    return "\n".join(lines)


def cmd_fetch(args, _extra) -> int:
    """python -m cifar fetch  (downloads and verifies CIFAR-10 and the InceptionV3 weights)"""
    from cifar.assets import load_cifar10, load_inception_weights

    data = load_cifar10()
    print(f"CIFAR-10: {len(data.x_train)} train / {len(data.x_test)} test images, sha256 verified")
    weights = load_inception_weights(args.weights)
    print(f"InceptionV3 weights ({weights.source}): {weights.path} sha256 {weights.sha256[:16]}")
    return 0


def cmd_extract(args, extra) -> int:
    """python -m cifar extract --resize bilinear --architecture exact2015 [--tta-flip true]"""
    from cifar.features import extract_for_config

    config = parse_config("transfer", parse_overrides(extra))
    extract_for_config(config, limit=args.limit, log=print)
    return 0


def cmd_train(args, extra) -> int:
    """python -m cifar train baseline|transfer [--run-id NAME] [--limit N] [--key value ...]"""
    from cifar.jobs import hold_slot
    from cifar.runs import new_run_id

    config = parse_config(args.model, parse_overrides(extra))
    run_id = new_run_id(config.model) if args.run_id is None else args.run_id  # "" is refused
    hold_slot(run_id)  # before TensorFlow: a refused train costs no import
    from cifar.train import train

    run_dir = train(config, run_id=run_id, limit=args.limit, extract_missing=args.extract)
    if not (run_dir / "metrics.json").exists():  # a non-chief worker of a distributed run
        print("worker finished; the chief (worker 0) writes the run folder")
        return 0
    print(f"run written to {run_dir}")
    print(json.dumps(json.loads((run_dir / "metrics.json").read_text()), indent=2))
    return 0


def cmd_evaluate(args, _extra) -> int:
    """python -m cifar evaluate transfer-reference"""
    from cifar.evaluate import evaluate_run
    from cifar.runs import load_run

    report = evaluate_run(load_run(args.run))
    print(f"test accuracy {report.accuracy:.4f}\n")
    print(report.per_class.round(4).to_string())
    print("\nmost confused (true -> predicted, count):")
    print(report.most_confused.head(10).to_string(index=False))
    return 0


def cmd_runs(args, _extra) -> int:
    """python -m cifar runs"""
    from cifar.tables import runs_table

    table = runs_table()
    if table.empty:
        print("no runs yet: `python -m cifar train baseline` makes one")
    else:
        print(table.to_string(index=False))
    return 0


def cmd_predict(args, _extra) -> int:
    """python -m cifar predict RUN PATH [PATH ...] [--resolution full|cifar] [--top-k K]
    [--format table|csv|json]: every image named or found in a folder, the model loaded once."""
    from cifar.images import ImageError, image_paths
    from cifar.predict import load_predictor, run_resolutions
    from cifar.runs import load_run

    images, problems = image_paths(args.paths)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not images:
        return 2
    run = load_run(args.run)
    known = run_resolutions(run)  # before TensorFlow loads
    if args.resolution and args.resolution not in known:
        print(f"error: {args.run} takes {' and '.join(known)} images, not {args.resolution}", file=sys.stderr)
        return 2
    predictor = load_predictor(run)
    answers, failed = [], bool(problems)
    for image in images:
        try:
            answers.append((image, predictor.predict_file(image, args.top_k, resolution=args.resolution)))
        except ImageError as error:
            print(f"cannot read {image}: {error}", file=sys.stderr)
            failed = True
    probabilities = f"calibrated, T = {predictor.temperature:.3f}" if predictor.run.calibration else "raw"
    print_answers(answers, args.format, predictor.resolution(args.resolution), probabilities)
    return 1 if failed else 0


def print_answers(
    answers: list[tuple[str, list[tuple[str, float]]]], form: str, resolution: str, probabilities: str
) -> None:
    """Each image's ranked classes as a table, CSV (image,rank,label,probability) or JSON;
    `probabilities` says whether they are calibrated (with the temperature) or raw."""
    if form == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["image", "rank", "label", "probability"])
        for image, ranked in answers:
            writer.writerows([image, rank, label, f"{p:.6f}"] for rank, (label, p) in enumerate(ranked, 1))
    elif form == "json":
        records = [
            {
                "image": image,
                "resolution": resolution,
                "probabilities": probabilities,
                "top_k": [{"label": c, "probability": p} for c, p in top],
            }
            for image, top in answers
        ]
        print(json.dumps(records, indent=2))
    else:
        for image, ranked in answers:
            print(f"{image}  ({resolution} resolution; probabilities {probabilities})")
            for rank, (label, probability) in enumerate(ranked, 1):
                print(f"  {rank:2}. {label:12} {probability:7.2%}")


def cmd_calibrate(args, _extra) -> int:
    """python -m cifar calibrate RUN [RUN ...]  (back-fill val_predictions.npy and calibration.json)"""
    from cifar.validation import backfill

    for run_id in args.runs:
        record = backfill(run_id)
        test = record["test"]
        print(
            f"{run_id}: T = {record['temperature']:.3f}, test ECE {test['ece_before']:.2%} -> "
            f"{test['ece_after']:.2%}" + (f" ({record['message']})" if record["message"] else "")
        )
    return 0


def cmd_cost(args, _extra) -> int:
    """python -m cifar cost RUN [RUN ...]  (add size, FLOPs, latency, total time to metrics.json)"""
    from cifar.cost import measure
    from cifar.runs import load_run

    runs = sorted((load_run(run_id) for run_id in args.runs), key=lambda run: run.model == "ensemble")
    for run in runs:  # (an ensemble sums its members' figures: they go first)
        cost = measure(run.run_id)
        total = cost["total_seconds"]
        print(
            f"{run.run_id}: {cost['parameters']:,} parameters, {cost['flops_per_image'] / 1e9:.3f} GFLOPs "
            f"x {cost['views']} view(s), {cost['model_bytes'] / 2**20:.1f} MiB, latency "
            + ", ".join(f"{ms:.1f} ms at batch {batch}" for batch, ms in cost["latency_ms"].items())
            + (f", {total / 60:.1f} min in all" if total is not None else f" ({cost['total_seconds_note']})")
        )
    return 0


def cmd_ensemble(args, _extra) -> int:
    """python -m cifar ensemble --run-id ensemble-best baseline-best transfer-best"""
    from cifar.cost import measure_if_enabled
    from cifar.ensemble import make_ensemble
    from cifar.runs import load_run

    command = " ".join(["python -m cifar ensemble --run-id", args.run_id, *args.runs])
    run = load_run(make_ensemble(args.run_id, args.runs, overwrite=args.overwrite, command=command).name)
    members = ", ".join(f"{rid} {acc:.2%}" for rid, acc in run.metrics["member_test_accuracy"].items())
    print(f"{run.run_id}: test accuracy {run.metrics['test_accuracy']:.2%} (members: {members})")
    measure_if_enabled(run.run_id, lambda message: print(message, file=sys.stderr))
    return 0


def cmd_jobs(args, _extra) -> int:
    """python -m cifar jobs  (background jobs and their state)"""
    from cifar.jobs import list_jobs

    jobs = list_jobs()
    for job in jobs:
        print(f"{job.run_id:40} {job.state:10} {job.progress:6.1%}  {job.message}")
    if not jobs:
        print("no background jobs (the dashboard's Train page starts them)")
    return 0


def cmd_features(args, _extra) -> int:
    """python -m cifar features [--prune]  (the feature cache; --prune removes obsolete sets)"""
    from cifar.feature_cache import cache_inventory, prune_cache

    if args.prune:
        removed, freed = prune_cache()
        for path in removed:
            print(f"removed {path}")
        print(f"freed {freed:,.0f} MB")
        return 0
    inventory = cache_inventory()
    for cached in inventory:
        state = "obsolete" if cached.obsolete else ("complete" if cached.complete else "incomplete")
        images = "?" if cached.n_images is None else f"{cached.n_images:,}"
        print(f"{cached.name:90} {images:>7} images {cached.megabytes:8,.0f} MB  {state}")
    if not inventory:
        print("the feature cache is empty (python -m cifar extract fills it)")
    return 0


def cmd_standby(args, _extra) -> int:
    """python -m cifar standby --ready-file F  (a job process waiting for its job; see cifar.standby)"""
    from cifar.standby import serve_standby

    return serve_standby(args.ready_file, args.idle_seconds, run=main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cifar", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch", help="download, verify and cache the data and weights")
    fetch.add_argument("--weights", default="auto", choices=["auto", "keras", "google2015"])
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
        help="train a model and write a run folder",
        epilog="\n\n".join(_fields_help(m) for m in CONFIG_TYPES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("model", choices=sorted(CONFIG_TYPES))
    train.add_argument("--run-id", default=None, help="folder name under artifacts/runs/")
    train.add_argument("--limit", type=whole_number(1), default=None, help=LIMIT_HELP)
    train.add_argument(
        "--extract",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="extract missing features first (transfer)",
    )
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="per-class metrics of a run")
    evaluate.add_argument("run")
    evaluate.set_defaults(func=cmd_evaluate)

    sub.add_parser("runs", help="table of runs").set_defaults(func=cmd_runs)
    sub.add_parser("jobs", help="background jobs").set_defaults(func=cmd_jobs)
    cache = sub.add_parser("features", help="list the feature cache (--prune: remove obsolete sets)")
    cache.add_argument("--prune", action="store_true")
    cache.set_defaults(func=cmd_features)

    standby = sub.add_parser("standby", help="(internal) a job process waiting for its job")
    standby.add_argument("--ready-file", required=True)
    standby.add_argument("--idle-seconds", type=float, default=15 * 60, help="exit if no job comes")
    standby.set_defaults(func=cmd_standby)

    _add_commands_on_finished_runs(sub)
    return parser


def _add_commands_on_finished_runs(sub) -> None:
    """calibrate, ensemble and predict: what takes finished runs."""
    calibrate = sub.add_parser(
        "calibrate", help="fit a finished run's temperature on its validation split (from its weights)"
    )
    calibrate.add_argument("runs", nargs="+", metavar="RUN")
    calibrate.set_defaults(func=cmd_calibrate)

    cost = sub.add_parser("cost", help="measure finished runs' size, FLOPs, latency and total training time")
    cost.add_argument("runs", nargs="+", metavar="RUN")
    cost.set_defaults(func=cmd_cost)

    ensemble = sub.add_parser(
        "ensemble", help="combine finished runs, weights fitted on their validation split, into a run"
    )
    ensemble.add_argument("--run-id", required=True, help="folder name under artifacts/runs/")
    ensemble.add_argument("--overwrite", action="store_true", help="replace a run of that id")
    ensemble.add_argument("runs", nargs="+", metavar="RUN")
    ensemble.set_defaults(func=cmd_ensemble)

    predict = sub.add_parser("predict", help="classify images (files or folders) with a run's model")
    predict.add_argument("run")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="an image, or a folder of images")
    predict.add_argument(
        "--resolution",
        choices=["full", "cifar"],
        default=None,
        help="full: the photo itself (transfer runs' default); cifar: squeezed to 32 x 32 (baseline runs)",
    )
    predict.add_argument("--format", choices=["table", "csv", "json"], default="table")
    predict.add_argument(
        "--top-k",
        type=whole_number(1, len(CLASS_NAMES)),
        default=3,
        help=f"print the k most likely classes (1..{len(CLASS_NAMES)}, default 3)",
    )
    predict.set_defaults(func=cmd_predict)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("train", "extract"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from cifar.assets import AssetError
    from cifar.features import FeaturesMissing
    from cifar.jobs import JobBusy
    from cifar.runs import RunError

    try:
        return args.func(args, extra)
    except (ConfigError, RunError, AssetError, FeaturesMissing, JobBusy) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
