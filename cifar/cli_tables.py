"""The commands that show what is there and how it compares: `python -m cifar evaluate | runs |
compare | jobs | features`."""

from __future__ import annotations

import json
import sys


def cmd_evaluate(args, _extra) -> int:
    """python -m cifar evaluate transfer-reference"""
    from cifar.analysis.evaluate import evaluate_run
    from cifar.store.runs import load_run

    report = evaluate_run(load_run(args.run))
    print(f"test accuracy {report.accuracy:.4f}\n")
    print(report.per_class.round(4).to_string())
    print("\nmost confused (true -> predicted, count):")
    print(report.most_confused.head(10).to_string(index=False))
    return 0


def cmd_runs(args, _extra) -> int:
    """python -m cifar runs [--format table|csv|json] [--all]  (csv and json: every column)"""
    from cifar.store.runs import list_runs
    from cifar.store.tables import COMPACT_COLUMNS, INTERVAL_FIELDS, runs_table

    runs = list_runs()  # read once: the table and the groups under it
    table = runs_table(runs)
    if args.format == "csv":
        table.to_csv(sys.stdout, index=False, lineterminator="\n")
    elif args.format == "json":
        print(table.to_json(orient="records", indent=2))
    elif table.empty:
        print(no_runs_message())
    else:
        shown = table.copy() if args.all else table[list(COMPACT_COLUMNS)].copy()
        for name in INTERVAL_FIELDS:  # a share with its 95 % interval, as the pages show it
            shown[name] = [
                _with_interval(*row) for row in table[[name, f"{name}_low", f"{name}_high"]].values
            ]
        print(shown.to_string(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-"))
        print("(95 % intervals: Wilson for accuracy, a BCa bootstrap over the test images for ECE)")
        print_groups(runs)
    return 0


def print_groups(runs) -> None:
    """The seed groups under the runs table (`cifar.store.groups.groups_table`): each group's mean,
    spread and the mean's interval."""
    from cifar.store.groups import groups_table

    groups = groups_table(runs)
    if not groups.empty:
        print("\nseed groups (runs differing only in their seed; `compare group:RUN ...` tests them):")
    for row in groups.itertuples():
        print(
            f"  {row.group}: {row.seeds} seeds, test accuracy mean {row.test_accuracy_mean:.2%} "
            f"± {row.test_accuracy_std:.2%} (the mean's 95 % interval {row.test_accuracy_low:.2%}-"
            f"{row.test_accuracy_high:.2%}, Student's t): {row.runs}"
        )


def _with_interval(value, low, high) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if low is None or low != low:
        return f"{value:.2%}"
    return f"{value:.2%} ({low * 100:.2f}-{high * 100:.2f})"


def cmd_compare(args, _extra) -> int:
    """python -m cifar compare A B [--format table|json]: two runs (or `group:RUN` seed groups) on
    the same test images: accuracies with intervals, McNemar's test, the difference's interval."""
    from cifar.stats import p_text
    from cifar.store.groups import compare, resolve
    from cifar.store.runs import list_runs

    runs = list_runs()
    result = compare(resolve(args.a, runs), resolve(args.b, runs))
    if args.format == "json":
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    rows = [
        ("", f"A: {result.a}", f"B: {result.b}"),
        ("test accuracy (95 %)", result.accuracy_a.percent(), result.accuracy_b.percent()),
        ("right where the other is wrong", f"{result.a_only:,.4g} images", f"{result.b_only:,.4g} images"),
    ]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width, strict=True)).rstrip())
    print(f"{result.test}: {p_text(result.p_value)}")
    print(f"A minus B: {result.difference.points()} ({result.difference.method}, 95 %)")
    print(result.verdict)
    return 0


def no_runs_message() -> str:
    """Where the runs were looked for, and how to make one or look elsewhere."""
    from cifar.store.runs import runs_root

    return (
        f"no runs yet in {runs_root()} (CIFAR_ARTIFACTS=/other/folder looks in /other/folder/runs): "
        "`python -m cifar train baseline` makes one"
    )


def cmd_jobs(args, _extra) -> int:
    """python -m cifar jobs  (training jobs, from the dashboard or the command line, and their state)"""
    from cifar.service.jobs import shown_jobs

    jobs = shown_jobs()
    for job in jobs:
        print(f"{job.run_id:40} {job.state:10} {job.progress:6.1%}  {job.message}")
    if not jobs:
        print("no background jobs (the dashboard's Train page starts them)")
    return 0


def cmd_features(args, _extra) -> int:
    """python -m cifar features [--prune]  (the feature cache; --prune removes obsolete sets)"""
    from cifar.modeling.feature_cache import cache_inventory, prune_cache

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


def add_run_table_commands(sub) -> None:
    """evaluate, runs, compare, jobs and features: what is there, and how it compares."""
    evaluate = sub.add_parser("evaluate", help="per-class metrics of a run")
    evaluate.add_argument("run", help="a run id (python -m cifar runs lists them)")
    evaluate.set_defaults(func=cmd_evaluate)

    runs = sub.add_parser("runs", help="table of runs (csv and json: every result and hyperparameter)")
    runs.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format")
    runs.add_argument("--all", action="store_true", help="the table with every column")
    runs.set_defaults(func=cmd_runs)
    compare = sub.add_parser(
        "compare",
        help="two runs or seed groups on the same test set: intervals, McNemar's test, the difference",
        description="Compare two classifiers on the same test images. A and B are run ids, or "
        "group:RUN for the seed group RUN belongs to (runs differing only in --seed).",
        epilog="example: python -m cifar compare baseline-best transfer-best",
    )
    compare.add_argument("a", metavar="A", help="a run id, or group:RUN")
    compare.add_argument("b", metavar="B", help="a run id, or group:RUN")
    compare.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    compare.set_defaults(func=cmd_compare)
    sub.add_parser("jobs", help="background jobs").set_defaults(func=cmd_jobs)
    cache = sub.add_parser("features", help="list the feature cache (--prune: remove obsolete sets)")
    cache.add_argument("--prune", action="store_true", help="remove the obsolete feature sets")
    cache.set_defaults(func=cmd_features)
