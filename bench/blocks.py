"""What the bench scripts share. Generated blocks of the markdown files: what stands between
`<!-- NAME:start -->` and `<!-- NAME:end -->` in README.md, a page of docs/ or bench/PERFORMANCE.md
is written by one bench script (`replace_block`; tests/test_docs.py checks that every block a
script names is in the file it writes to). Seed groups: the runs of one configuration that differ
in their seed alone, and their tables (bench/RESULTS.md and bench/RECIPE.md show them). The
README's short results table (`headline`): each committed run's test accuracy with its interval,
and the paired tests between them.
"""

from __future__ import annotations

import re
import textwrap
from itertools import combinations
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cifar import stats
from cifar.store.groups import SeedGroup, compare


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_block(path: Path, name: str, body: str, indent: str = "") -> None:
    """Puts `body` between `path`'s `name` markers (its lines indented by `indent`, for a block
    inside a list item); refuses when the markers are not there."""
    start, end = markers(name)
    pattern = re.compile(f"{re.escape(start)}.*?{re.escape(end)}", flags=re.S)
    block = f"{start}\n{textwrap.indent(body, indent)}\n{indent}{end}"
    text, count = pattern.subn(lambda _: block, path.read_text(), count=1)
    if count != 1:
        raise SystemExit(f"{path} has no {start} ... {end} block for this script to fill")
    path.write_text(text)


# ----------------------------------------------------------------------------- seed groups


def options(run) -> dict:
    """The run's configuration with defaults filled in for the options it predates."""
    from cifar.config import load_config

    return load_config(run.hyperparameters).model_dump()


def differences(run, reference) -> dict:
    """The options in which `run` differs from `reference`, with `run`'s values."""
    mine, theirs = options(run), options(reference)
    return {k: mine.get(k) for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)}


class Seeds(NamedTuple):
    """A run (`base`), what to call it, its seed group (None: no other seed yet) and the published
    mean it should reach (None: none to test against)."""

    label: str
    base: object
    group: SeedGroup | None
    target: float | None


def seed_group(base, candidates: list) -> SeedGroup | None:
    """`base` and the runs among `candidates` that differ from it in `seed` alone (defaults filled
    in for the options one of them predates, which `cifar.store.groups.seed_groups` does not), lowest
    seed first, one run per seed (the first by id); None without another seed."""
    others = [r for r in candidates if r.run_id != base.run_id and set(differences(r, base)) == {"seed"}]
    by_seed = {}
    for run in sorted(others, key=lambda r: (options(r)["seed"], r.run_id)):
        by_seed.setdefault(options(run)["seed"], run)
    by_seed = {options(base)["seed"]: base, **by_seed}
    return SeedGroup(tuple(by_seed[seed] for seed in sorted(by_seed))) if len(by_seed) > 1 else None


def against(group: SeedGroup, target: float | None) -> str:
    """Whether the group's mean is consistent with `target`, by `mean_test`."""
    if target is None:
        return "–"
    p_value = stats.mean_test(group.test_accuracies, target)
    if np.isnan(p_value):
        return f"{100 * target:.2f} %: no spread to test with"
    side = "below" if group.accuracy.value < target else "above"
    verdict = f"**{side}** it" if p_value < stats.SIGNIFICANCE else "consistent with it"
    return f"{100 * target:.2f} %: {stats.p_text(p_value)}, {verdict}"


def seeds_table(rows: list[Seeds]) -> list[str]:
    """Per run: its seeds' test accuracies, mean ± std, the t interval of the mean, and whether
    the mean is consistent with the published one."""
    lines = [
        "| configuration | seeds: test accuracy | mean ± std | mean, 95 % t interval "
        "| against the published mean (one-sample t test) |",
        "|---|---|---|---|---|",
    ]
    for label, base, group, target in rows:
        if group is None:
            only = f"`{base.run_id}` (seed {options(base)['seed']}) only"
            lines.append(f"| {label} | {only}: other seeds not trained yet | | | |")
            continue
        each = ", ".join(
            f"`{run.run_id}` (seed {seed}) {100 * accuracy:.2f} %"
            for run, seed, accuracy in zip(group.runs, group.seeds, group.test_accuracies, strict=True)
        )
        lines.append(
            f"| {label} | {each} | {100 * group.accuracy.value:.2f} ± {100 * group.spread:.2f} % "
            f"| {group.accuracy.percent()} | {against(group, target)} |"
        )
    return lines


def seed_pairs_table(rows: list[Seeds]) -> list[str]:
    """Every two seeds of one configuration compared on the test images: what chance alone moves."""
    lines = [
        "| two seeds of one configuration | lower seed minus higher seed on test (paired bootstrap, 95 %) "
        "| McNemar | on this test set |",
        "|---|---|---|---|",
    ]
    for row in rows:
        for a, b in combinations(row.group.runs if row.group else (), 2):
            result = compare(a, b)
            verdict = "separable" if result.significant else "not separable from chance"
            lines.append(
                f"| `{a.run_id}`, `{b.run_id}` | {result.difference.points()} "
                f"| {stats.p_text(result.p_value)} | {verdict} |"
            )
    return lines


# ----------------------------------------------------------------------------- the README's table

SHORT_NAMES = {  # what each committed run is, in a few words (docs/results.md has the configurations)
    "baseline-reference": "the write-up's CNN, rerun",
    "transfer-reference": "the write-up's InceptionV3 transfer, rerun",
    "baseline-best": "airbench94's recipe in Keras, from scratch",
    "transfer-best": "frozen InceptionV3, a better-read head",
    "ensemble-best": "the two best runs pooled",
}
DETAILS = "docs/results.md"  # where the README's table sends the reader for everything else
SEEDS_DETAILS = "bench/RECIPE.md#seeds-of-the-recipe-in-full"  # the recipe's seed groups


def headline(run_ids, seeds: list[Seeds], pairs) -> str:
    """The README's results: each run of `run_ids` with its test accuracy and Wilson interval; each
    two of `pairs` compared on the same test images, the better first (a run with a seed group as its
    group: `compare`); each run of `seeds` with its seeds' mean tested against its published mean,
    or the note that it has one seed so far."""
    from cifar.store.runs import RunError, load_run

    runs = []
    for run_id in run_ids:
        try:
            runs.append((run_id, load_run(run_id)))
        except RunError:
            runs.append((run_id, None))
    lines = ["| run | what it is | test accuracy (95 %) |", "|---|---|---|"]
    for run_id, run in sorted(runs, key=lambda pair: -pair[1].test_accuracy_estimate.value if pair[1] else 1):
        accuracy = f"**{run.test_accuracy_estimate.percent()}**" if run else "not trained yet"
        lines.append(f"| `{run_id}` | {SHORT_NAMES.get(run_id, run.model if run else '–')} | {accuracy} |")
    groups = {row.base.run_id: row.group for row in seeds if row.group}
    loaded = {run_id: run for run_id, run in runs if run}
    images = f"{len(next(iter(loaded.values())).test_labels):,}" if loaded else "the"
    lines += ["", f"Two of them on the same {images} test images (A minus B: paired bootstrap, 95 %):", ""]
    for names in pairs:
        a, b = (groups.get(name) or loaded.get(name) for name in names)
        if a is None or b is None:
            continue
        result = compare(a, b)
        if result.difference.value < 0:
            result = compare(b, a)
        verdict = f"**{result.a} is better**" if result.significant else "no difference this test set can see"
        lines.append(
            f"- `{result.a}` minus `{result.b}`: {result.difference.points()}; "
            f"{result.test}, {stats.p_text(result.p_value)}: {verdict}."
        )
    for row in seeds:
        if row.target is None:
            continue
        if row.group is None:
            lines.append(
                f"- `{row.base.run_id}` against its recipe's published mean, {100 * row.target:.2f} %: "
                f"seed {options(row.base)['seed']} only, not tested here "
                f"([the recipe's seeds]({SEEDS_DETAILS}))."
            )
            continue
        lines.append(
            f"- `{row.base.run_id}`, {len(row.group.runs)} seeds: mean {row.group.accuracy.percent()} "
            f"(Student's t) against its recipe's published mean, {against(row.group, row.target)} "
            "(one-sample t test)."
        )
    lines += ["", f"Configurations, train accuracy, calibration, seeds and cost: [{DETAILS}]({DETAILS})."]
    return "\n".join(lines)
