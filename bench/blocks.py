"""What the bench scripts share. Generated blocks of the markdown files: what stands between
`<!-- NAME:start -->` and `<!-- NAME:end -->` in the README or bench/PERFORMANCE.md is written by
one bench script. Seed groups: the runs of one configuration that differ in their seed alone, and
their tables (bench/RESULTS.md and bench/RECIPE.md show them).
"""

from __future__ import annotations

import re
import textwrap
from itertools import combinations
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cifar import stats
from cifar.groups import SeedGroup, compare


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
    in for the options one of them predates, which `cifar.groups.seed_groups` does not), lowest
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
