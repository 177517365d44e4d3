"""Seed groups, and any two runs or groups compared on the same test images.

A seed group is every run of one configuration that differs only in its seed (what
`python -m cifar train ... --seeds N` makes, and what a user makes by hand with `--seed`): the same
model, hyperparameters and image limit. A group is named after its lowest seed's run; on the command
line `group:RUN` means the group that RUN belongs to.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from cifar import stats
from cifar.config import ConfigError, load_config
from cifar.store.runs import FAMILIES, Run, RunError, list_runs, load_run

GROUP_PREFIX = "group:"


class CompareError(ValueError):
    """Two classifiers that cannot be compared (different test sets, an unknown name)."""


@dataclass(frozen=True)
class SeedGroup:
    """Two or more runs of one configuration, lowest seed first."""

    runs: tuple[Run, ...]

    @property
    def name(self) -> str:
        return self.runs[0].run_id

    @property
    def label(self) -> str:
        return f"{GROUP_PREFIX}{self.name} ({len(self.runs)} seeds)"

    @property
    def model(self) -> str:
        return self.runs[0].model

    @property
    def seeds(self) -> list[int]:
        return [int(run.hyperparameters.get("seed", 0)) for run in self.runs]

    @property
    def test_accuracies(self) -> list[float]:
        return [float(run.metrics["test_accuracy"]) for run in self.runs]

    @property
    def accuracy(self) -> stats.Estimate:
        """Mean test accuracy over the seeds, Student's t interval."""
        return stats.seed_mean(self.test_accuracies)

    @property
    def spread(self) -> float:
        """Standard deviation of the seeds' test accuracies."""
        return float(np.std(self.test_accuracies, ddof=1))

    @cached_property
    def scores(self) -> np.ndarray:
        """Per test image, the share of the group's seeds that get it right."""
        return np.mean([right(run) for run in self.runs], axis=0)


def _configuration(run: Run) -> str:
    """The run's config with today's defaults filled in (a field added since, such as `precision`,
    is the default it trained with), minus its seed."""
    try:
        fields = load_config(run.hyperparameters).model_dump()
    except ConfigError:  # a config today's code refuses: as saved
        fields = dict(run.hyperparameters)
    fields.pop("seed", None)
    return json.dumps({"fields": fields, "limit": run.config.get("limit")}, sort_keys=True, default=str)


def seed_groups(runs: list[Run]) -> list[SeedGroup]:
    """Every group of two or more trained runs that differ only in their seed."""
    by_configuration: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.model in FAMILIES and isinstance(run.metrics.get("test_accuracy"), float | int):
            by_configuration[_configuration(run)].append(run)
    groups = [SeedGroup(members) for members in map(_one_per_seed, by_configuration.values())]
    return sorted((group for group in groups if len(group.runs) > 1), key=lambda group: group.name)


def _one_per_seed(runs: list[Run]) -> tuple[Run, ...]:
    """Lowest seed first; of runs with the same seed (a repeat, not another seed), the first by id."""
    by_seed: dict[int, Run] = {}
    for run in sorted(runs, key=lambda r: (int(r.hyperparameters.get("seed", 0)), r.run_id)):
        by_seed.setdefault(int(run.hyperparameters.get("seed", 0)), run)
    return tuple(by_seed.values())


def group_of(run: Run, groups: list[SeedGroup]) -> SeedGroup | None:
    return next((group for group in groups if run.run_id in {r.run_id for r in group.runs}), None)


def groups_table(runs: list[Run]) -> pd.DataFrame:
    """One row per seed group: its seeds, the mean test accuracy with its interval, and the spread."""
    rows = []
    for group in seed_groups(runs):
        accuracy = group.accuracy
        rows.append(
            {
                "group": group.name,
                "model": group.model,
                "seeds": len(group.runs),
                "test_accuracy_mean": accuracy.value,
                "test_accuracy_low": accuracy.low,
                "test_accuracy_high": accuracy.high,
                "test_accuracy_std": group.spread,
                "runs": ", ".join(run.run_id for run in group.runs),
            }
        )
    columns = ["group", "model", "seeds", "test_accuracy_mean", "test_accuracy_low", "test_accuracy_high"]
    return pd.DataFrame(rows, columns=[*columns, "test_accuracy_std", "runs"])


# ----------------------------------------------------------------------------- comparing


def right(run: Run) -> np.ndarray:
    """1.0 where the run's top answer is the test label, else 0.0."""
    return (run.test_predictions.argmax(axis=1) == run.test_labels).astype(float)


def _test_set(run: Run) -> tuple[int, str | None]:
    return len(run.test_labels), ((run.config.get("assets") or {}).get("cifar10_sha256") or {}).get("x_test")


def test_set_problem(a: Run, b: Run) -> str:
    """Why two runs were not scored on the same test images ("" when they were)."""
    (size_a, images_a), (size_b, images_b) = _test_set(a), _test_set(b)
    if size_a != size_b:
        return (
            f"{a.run_id} was tested on {size_a:,} images and {b.run_id} on {size_b:,}: not the same test set"
        )
    if images_a and images_b and images_a != images_b:
        return f"{a.run_id} and {b.run_id} were tested on different images (their x_test checksums differ)"
    if not np.array_equal(a.test_labels, b.test_labels):
        return f"{a.run_id} and {b.run_id} have different test labels: not the same test set"
    return ""


Contender = Run | SeedGroup


def _members(contender: Contender) -> tuple[Run, ...]:
    return contender.runs if isinstance(contender, SeedGroup) else (contender,)


def _name(contender: Contender) -> str:
    return contender.label if isinstance(contender, SeedGroup) else contender.run_id


def compare(a: Contender, b: Contender) -> stats.Comparison:
    """A against B on the same test images (`cifar.stats.compare_scores`); CompareError if the
    test sets differ."""
    first = _members(a)[0]
    for run in (*_members(a), *_members(b)):
        if problem := test_set_problem(first, run):
            raise CompareError(problem)
    scores = [
        contender.scores if isinstance(contender, SeedGroup) else right(contender) for contender in (a, b)
    ]
    if len(scores[0]) < 2:
        raise CompareError(f"{_name(a)} was tested on {len(scores[0])} image: too few to compare")
    return stats.compare_scores(_name(a), scores[0], _name(b), scores[1])


def resolve(name: str, runs: list[Run] | None = None) -> Contender:
    """A run id, or `group:RUN` for the seed group RUN belongs to; CompareError if there is none."""
    runs = list_runs() if runs is None else runs
    if not name.startswith(GROUP_PREFIX):
        known = next((run for run in runs if run.run_id == name), None)
        try:
            return known or load_run(name)
        except RunError as error:
            raise CompareError(str(error)) from None
    run_id = name.removeprefix(GROUP_PREFIX)
    run = next((run for run in runs if run.run_id == run_id), None)
    if run is None:
        raise CompareError(f"no run {run_id!r}: {GROUP_PREFIX}RUN names the seed group RUN belongs to")
    group = group_of(run, seed_groups(runs))
    if group is None and run.model not in FAMILIES:
        raise CompareError(f"{run_id} is an {run.model}: only trained runs form seed groups")
    if group is None:
        raise CompareError(
            f"{run_id} has no seed group (no other run differs from it only in its seed): "
            f"`python -m cifar train {run.model} --seeds 3 ...` makes one"
        )
    return group
