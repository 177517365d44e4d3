"""The commands that take finished runs: predict, calibrate, cost, ensemble, robustness."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable

import numpy as np

from cifar.config import CLASS_NAMES


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


REPLACE_HELP = "replace a run's {} (without it, a run that has one is refused)"


def cmd_predict(args, _extra) -> int:
    """python -m cifar predict RUN PATH [PATH ...] [--resolution full|cifar] [--top-k K]
    [--format table|csv|json]: every image named or found in a folder, the model loaded once."""
    from cifar.inference.predict import load_predictor, run_resolutions
    from cifar.sources.images import ImageError, image_paths
    from cifar.store.runs import load_run

    images, problems = image_paths(args.paths)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not images:
        return 1
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
    """python -m cifar calibrate RUN [RUN ...] [--overwrite]  (back-fill val_predictions.npy and
    calibration.json)"""
    from cifar.modeling.validation import backfill, check_replace_calibration
    from cifar.store.runs import load_run

    for run_id in args.runs:  # every run checked first: nothing is replaced unasked
        check_replace_calibration(load_run(run_id), args.overwrite)
    for run_id in args.runs:
        record = backfill(run_id, overwrite=args.overwrite)
        test = record["test"]
        print(
            f"{run_id}: T = {record['temperature']:.3f}, test ECE {test['ece_before']:.2%} -> "
            f"{test['ece_after']:.2%}" + (f" ({record['message']})" if record["message"] else "")
        )
    return 0


def cmd_cost(args, _extra) -> int:
    """python -m cifar cost RUN [RUN ...] [--overwrite]  (add size, FLOPs, latency, total time to
    metrics.json)"""
    from cifar.analysis.cost import check_replace_cost, measure
    from cifar.store.runs import load_run

    runs = sorted((load_run(run_id) for run_id in args.runs), key=lambda run: run.model == "ensemble")
    for run in runs:
        check_replace_cost(run, args.overwrite)
    for run in runs:  # (an ensemble sums its members' figures: they go first)
        cost = measure(run.run_id, overwrite=args.overwrite)
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
    from cifar.analysis.cost import measure_if_enabled
    from cifar.inference.ensemble import make_ensemble
    from cifar.store.runs import load_run

    command = " ".join(["python -m cifar ensemble --run-id", args.run_id, *args.runs])
    run = load_run(make_ensemble(args.run_id, args.runs, overwrite=args.overwrite, command=command).name)
    members = ", ".join(f"{rid} {acc:.2%}" for rid, acc in run.metrics["member_test_accuracy"].items())
    print(f"{run.run_id}: test accuracy {run.metrics['test_accuracy']:.2%} (members: {members})")
    measure_if_enabled(run.run_id, lambda message: print(message, file=sys.stderr))
    return 0


def cmd_robustness(args, _extra) -> int:
    """python -m cifar robustness RUN [RUN ...] [--images N]  (CIFAR-10-C corruptions; an ensemble
    pools its members' results, so it goes after them)"""
    from cifar.analysis.robustness import check_replace_results, evaluate_robustness
    from cifar.store.runs import load_run

    runs = sorted((load_run(run_id) for run_id in args.runs), key=lambda run: run.model == "ensemble")
    for run in runs:  # (every run checked first: a typo, or a result not to replace, fails now)
        check_replace_results(run, args.overwrite)
    for run_id in [run.run_id for run in runs]:
        record = evaluate_robustness(run_id, images=args.images, seed=args.seed, overwrite=args.overwrite)
        print(
            f"{run_id}: {record['images']} test images, clean {record['clean_accuracy']:.2%}, "
            f"mean over {len(record['sets'])} corruption sets {record['mean_corruption_accuracy']:.2%}"
        )
    return 0


def cmd_export(args, _extra) -> int:
    """python -m cifar export RUN --format keras|saved_model|onnx|tflite --out PATH"""
    from cifar.inference.export import check_export
    from cifar.store.runs import load_run

    check_export(args.format, args.out, args.overwrite)  # before TensorFlow loads
    load_run(args.run)
    from cifar.inference.export import export_run

    out = export_run(args.run, args.format, args.out, args.overwrite)
    print(
        f"{args.run}: {args.format} model written to {out} (uint8 32 x 32 x 3 pixels in, probabilities out)"
    )
    return 0


def cmd_explain(args, _extra) -> int:
    """python -m cifar explain RUN IMAGE [--resolution full|cifar] [--class NAME] --out FILE.png
    [--overwrite]"""
    from pathlib import Path

    from cifar import atomic
    from cifar.analysis.feature_space import check_features_run
    from cifar.inference.explain import check_class
    from cifar.inference.predict import run_resolutions
    from cifar.sources.images import open_image
    from cifar.store.runs import load_run

    out = Path(args.out)  # everything is checked before TensorFlow loads
    if out.suffix.lower() != ".png" or not out.parent.is_dir():
        raise ValueError(f"--out must be a .png file in an existing folder, not {args.out!r}")
    atomic.check_replace(out, args.overwrite)
    image = open_image(Path(args.image))
    run = load_run(args.run)
    check_features_run(run)
    class_index = check_class(args.class_name, run.class_names)
    if args.resolution and args.resolution not in run_resolutions(run):
        raise ValueError(
            f"{run.run_id} takes {' and '.join(run_resolutions(run))} images, not {args.resolution}"
        )
    from PIL import Image

    from cifar.inference.explain import Explainer

    explanation = Explainer(run).explain(image, args.resolution, class_index)
    with atomic.atomic_write(out) as tmp:
        Image.fromarray(explanation.overlay).save(tmp, format="PNG")
    ranked = np.argsort(explanation.probabilities)[::-1][:3]
    top = ", ".join(f"{run.class_names[i]} {explanation.probabilities[i]:.1%}" for i in ranked)
    print(f"{run.run_id}: Grad-CAM of {explanation.class_name!r} at {explanation.layer} -> {out} ({top})")
    return 0


def cmd_project(args, _extra) -> int:
    """python -m cifar project RUN [RUN ...]  (a 2-D map of each run's test-set features)"""
    from cifar.analysis.feature_space import check_features_run, check_replace_map, project
    from cifar.store.runs import load_run

    for run in [load_run(run_id) for run_id in args.runs]:  # every run checked first
        check_features_run(run)
        check_replace_map(run, args.overwrite)
    say = lambda message: print(message, file=sys.stderr)  # noqa: E731
    for run_id in args.runs:
        record = project(run_id, log=say, overwrite=args.overwrite)
        seconds = record["seconds"]
        print(f"{run_id}: map of {record['images']} test images in its {record['space']} ({seconds:.0f} s)")
    return 0


def add_commands_on_finished_runs(sub) -> None:
    """What takes finished runs: results added to their folders, then their models at work."""
    _add_result_commands(sub)
    _add_model_commands(sub)


def _add_result_commands(sub) -> None:
    """calibrate, cost, ensemble, robustness, project: results written into run folders."""
    calibrate = sub.add_parser(
        "calibrate", help="fit a finished run's temperature on its validation split (from its weights)"
    )
    calibrate.add_argument("runs", nargs="+", metavar="RUN", help="run ids")
    calibrate.add_argument("--overwrite", action="store_true", help=REPLACE_HELP.format("calibration"))
    calibrate.set_defaults(func=cmd_calibrate)

    cost = sub.add_parser("cost", help="measure finished runs' size, FLOPs, latency and total training time")
    cost.add_argument("runs", nargs="+", metavar="RUN", help="run ids")
    cost.add_argument("--overwrite", action="store_true", help=REPLACE_HELP.format("measured cost"))
    cost.set_defaults(func=cmd_cost)

    ensemble = sub.add_parser(
        "ensemble", help="combine finished runs, weights fitted on their validation split, into a run"
    )
    ensemble.add_argument("--run-id", required=True, help="folder name under artifacts/runs/")
    ensemble.add_argument("--overwrite", action="store_true", help="replace a run of that id")
    ensemble.add_argument("runs", nargs="+", metavar="RUN", help="the member runs (two to eight)")
    ensemble.set_defaults(func=cmd_ensemble)

    robustness = sub.add_parser(
        "robustness", help="evaluate finished runs on CIFAR-10-C's 15 corruptions at 5 severities"
    )
    robustness.add_argument("runs", nargs="+", metavar="RUN", help="run ids")
    robustness.add_argument(
        "--images",
        type=whole_number(10, 10000),
        default=None,
        help="class-stratified test images per set (default 1000 on a CPU, all 10000 on a GPU)",
    )
    robustness.add_argument(
        "--seed", type=whole_number(0), default=0, help="the subset and the corruptions' seed"
    )
    robustness.add_argument(
        "--overwrite", action="store_true", help=REPLACE_HELP.format("robustness results")
    )
    robustness.set_defaults(func=cmd_robustness)

    projection = sub.add_parser("project", help="map each run's test set in 2-D (UMAP) into its folder")
    projection.add_argument("runs", nargs="+", metavar="RUN", help="run ids")
    projection.add_argument("--overwrite", action="store_true", help=REPLACE_HELP.format("map"))
    projection.set_defaults(func=cmd_project)


def _add_model_commands(sub) -> None:
    """export, explain, predict: a run's model on images, or out of the product."""
    export = sub.add_parser("export", help="save a run's whole model (pixels in, probabilities out)")
    export.add_argument("run", help="a run id (not an ensemble)")
    export.add_argument(
        "--format", choices=["keras", "saved_model", "onnx", "tflite"], default="keras", help="file format"
    )
    export.add_argument(
        "--out", required=True, help="a .keras, .onnx or .tflite file, or a SavedModel folder"
    )
    export.add_argument("--overwrite", action="store_true", help="replace what is at --out")
    export.set_defaults(func=cmd_export)

    explain = sub.add_parser("explain", help="Grad-CAM of an image: where a run's model looks (a PNG)")
    explain.add_argument("run", help="a run id")
    explain.add_argument("image", help="an image file")
    explain.add_argument(
        "--resolution",
        choices=["full", "cifar"],
        default=None,
        help="what the model sees: the photo at full resolution (transfer runs) or 32 x 32",
    )
    explain.add_argument(
        "--class", dest="class_name", default=None, help="a class name (default: the run's answer)"
    )
    explain.add_argument("--out", required=True, help="the overlay, a .png file")
    explain.add_argument("--overwrite", action="store_true", help="replace the .png at --out")
    explain.set_defaults(func=cmd_explain)

    predict = sub.add_parser("predict", help="classify images (files or folders) with a run's model")
    predict.add_argument("run", help="a run id (or an ensemble's)")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="an image, or a folder of images")
    predict.add_argument(
        "--resolution",
        choices=["full", "cifar"],
        default=None,
        help="full: the photo itself (transfer runs' default); cifar: squeezed to 32 x 32 (baseline runs)",
    )
    predict.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format")
    predict.add_argument(
        "--top-k",
        type=whole_number(1, len(CLASS_NAMES)),
        default=3,
        help=f"print the k most likely classes (1..{len(CLASS_NAMES)}, default 3)",
    )
    predict.set_defaults(func=cmd_predict)
