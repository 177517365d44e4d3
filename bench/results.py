"""Writes bench/RESULTS.md (and the README's short results table, docs/results.md's and
docs/robustness.md's blocks) from the committed run folders.

Accuracy is recomputed from each run's `test_predictions.npy` and the real CIFAR-10 test labels
(not read from the logs), with its 95 % interval (`cifar.stats`: Wilson's for a count of images,
a bootstrap over the images for ECE and the corrupted images' accuracies); two runs (or seed
groups) are compared on the same test images (`cifar.store.groups.compare`); a seed group is every run
that differs from a headline run in its seed alone. No TensorFlow: everything comes from the
committed predictions. Run: `PYTHONPATH=. .venv/bin/python bench/results.py`
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

from bench.blocks import Seeds, headline, replace_block, seed_group, seed_pairs_table, seeds_table
from bench.recipe import AIRBENCH94_MEAN
from cifar import stats, tta
from cifar.calibration import ece_estimate, temperature_scaled
from cifar.config import REFERENCE_FIGURES
from cifar.sources.assets import load_cifar10
from cifar.store.groups import compare
from cifar.store.runs import RunError, list_runs, load_run

ROOT = Path(__file__).resolve().parent.parent
RUNS = ("baseline-reference", "baseline-best", "transfer-reference", "transfer-best", "ensemble-best")
TEST_IMAGES = 10_000  # CIFAR-10's test set, on which the write-up's figures were measured too
SEEDED = (("baseline-best", AIRBENCH94_MEAN), ("transfer-best", None))  # (run, published mean)
PAIRS = (("transfer-best", "baseline-best"), ("ensemble-best", "transfer-best"))
COST_NOTE = (
    "Measured by `python -m cifar cost RUN` (`cifar/analysis/cost.py`) on this machine: parameters of "
    "the whole model as it predicts (a transfer run's frozen base included); FLOPs of one 32 × 32 "
    "image through it, counted from its graph by TensorFlow's profiler (a multiply-add is 2; a "
    "transfer run's scaling to [-1, 1] included, its resize to the base's input not: the profiler "
    "has no count for resize ops, "
    "about 3 MFLOPs at 299 px), times the views a prediction averages (test-time flip: 2); the files a "
    "prediction loads (weights, and the backbone file); the median of three calls of the classifier "
    "on 1 and on 256 images, every view included; training time plus the extraction of the features "
    "it trained on, from the feature cache's manifests (unknown for features extracted before their "
    "time was recorded). An ensemble sums its members, its latency measured."
)


def summarize(config: dict, run=None) -> str:
    c = config
    if c["model"] == "ensemble":
        from cifar.inference.ensemble import ensemble_weights

        members, weights = ensemble_weights(run)
        pooled = " and ".join(f"`{m}` (weight {w:.2f})" for m, w in zip(members, weights, strict=True))
        return f"log-linear pooling of {pooled}, weights fitted on the validation split"
    if c["model"] == "baseline":
        parts = [f"{c['architecture']} CNN"]
        if c["architecture"] == "airbench":
            parts.append(f"width {c['width']}")
            recipe = {
                "whitening stem": c.get("stem") == "whiten",
                "BatchNorm without scale": c.get("bn_scale") is False,
                f"BatchNorm shifts at {c.get('bias_lr_scale', 1):g}x lr": c.get("bias_lr_scale", 1) != 1,
                "dirac init": c.get("dirac_init"),
            }
            parts += [name for name, on in recipe.items() if on]
        if c.get("lookahead"):
            parts.append("lookahead")
        if c.get("augment"):
            parts.append("alternating flip+translate" if c.get("alternating_flip") else "flip+translate")
        if c.get("tta_flip") or c.get("tta_translate"):
            views = len(tta.views(bool(c.get("tta_flip")), bool(c.get("tta_translate"))))
            parts.append("test-time flip" if views == 2 else f"test-time views: {views}")
    else:
        resize = "UpSampling2D(7)" if c["resize"] == "upsample7" else f"{c['resize']} resize"
        parts = [f"InceptionV3 ({c['architecture']}), {resize} to {c['input_size']} px"]
        if c.get("pooled_layers", "mixed10") != "mixed10":
            parts.append(f"pooled {c['pooled_layers']}")
        standardized = "standardized, " if c.get("standardize") else ""
        parts.append(f"{standardized}Dense({c['head_units']}) dropout {c['dropout']}")
        if c.get("flip_features"):
            parts.append("flip features")
        if c.get("tta_flip"):
            parts.append("test-time flip")
    schedule = {"onecycle": " one-cycle", "triangle": " triangle"}.get(c.get("lr_schedule"), "")
    momentum = (
        f" momentum {c['momentum']:g}" if c["optimizer"] == "sgd" and c.get("momentum", 0.9) != 0.9 else ""
    )
    parts.append(
        f"{c['optimizer']}{momentum} lr {c['learning_rate']:g}"
        + schedule
        + f", {c['epochs']} epochs, batch {c['batch_size']}"
    )
    if c.get("label_smoothing"):
        parts.append(f"label smoothing {c['label_smoothing']}")
    return "; ".join(parts)


def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def published(share: float | None) -> str:
    """A write-up figure on the 10,000 test images, as their count with Wilson's interval."""
    return "–" if share is None else stats.proportion(round(share * TEST_IMAGES), TEST_IMAGES).percent()


def test_estimate(run, y_test: np.ndarray) -> stats.Estimate:
    """The run's test accuracy recounted from its predictions (Wilson interval), on the real labels."""
    if not np.array_equal(run.test_labels, y_test):
        sys.exit(f"{run.run_id}: test_labels.npy differ from the real CIFAR-10 test labels")
    return run.test_accuracy_estimate


def table() -> str:
    y_test = load_cifar10().y_test.astype(np.int64)
    rows = [
        "| run | model | configuration | train acc. | test acc. (recomputed, 95 %) | write-up test (95 %) "
        "| gap | test ECE raw → calibrated (95 %) | training time | device |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in (("baseline", "common CNN"), ("transfer", "InceptionV3 transfer")):
        ref = REFERENCE_FIGURES[name]
        rows.append(
            f"| write-up | {name} | {figures} (as reported) | {percent(ref['train_accuracy'])} | "
            f"{published(ref['test_accuracy'])} | | | | | |"
        )
    for run_id in RUNS:
        try:
            run = load_run(run_id)
        except RunError as error:
            rows.append(f"| {run_id} | – | not trained yet ({error}) | | | | | | | |")
            continue
        accuracy = test_estimate(run, y_test)
        reference = REFERENCE_FIGURES.get(run.model, {}).get("test_accuracy")
        gap = "–" if reference is None else f"{100 * (accuracy.value - reference):+.2f} pts"
        m = run.metrics
        timing = f"{m['seconds'] / 60:.1f} min"
        if m.get("extraction_seconds", 0) > 1:
            timing += " (+ features cached earlier)"
        rows.append(
            f"| `{run_id}` | {run.model} | {summarize(run.hyperparameters, run)} | "
            f"{percent(m.get('train_accuracy'))} | **{accuracy.percent()}** | {published(reference)} | "
            f"{gap} | {ece_change(run)} | {timing} | {m.get('device', '?')} |"
        )
    return "\n".join(rows)


@functools.cache
def ece(run_id: str, split: str, calibrated: bool) -> stats.Estimate:
    """ECE of a run's saved `split` ("test" or "validation") probabilities, raw or with its
    temperature, with a bootstrap interval over the images (computed once per script)."""
    run = load_run(run_id)
    probabilities, labels = (run.test_predictions, run.test_labels) if split == "test" else run.validation
    if calibrated:
        probabilities = temperature_scaled(probabilities, run.temperature)
    return ece_estimate(probabilities, labels)


def ece_change(run) -> str:
    """Test ECE of the saved probabilities, then of the calibrated ones (recomputed here)."""
    if not run.calibration:
        return "not calibrated"
    return f"{ece(run.run_id, 'test', False).percent()} → {ece(run.run_id, 'test', True).percent()}"


def cost_table() -> str:
    """Each run's cost, as `python -m cifar cost` measured it into metrics.json."""
    rows = [
        "| run | test acc. (95 %) | parameters | GFLOPs per image × views | model files | latency batch 1 | "
        "latency batch 256 | total training time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run_id in RUNS:
        if (run := _load(run_id)) is None:
            continue
        m, accuracy = run.metrics, run.test_accuracy_estimate.percent()
        if "flops_per_image" not in m:
            rows.append(f"| `{run_id}` | {accuracy} | not measured | | | | | |")
            continue
        total = m.get("total_seconds")
        rows.append(
            f"| `{run_id}` | {accuracy} | {m['parameters'] / 1e6:.2f} M "
            f"| {m['flops_per_image'] / 1e9:.3f} × {m['views']} | {m['model_bytes'] / 2**20:.1f} MiB "
            f"| {m['latency_ms']['1']:.1f} ms | {m['latency_ms']['256'] / 1000:.2f} s "
            f"| {f'{total / 60:.1f} min' if total is not None else 'unknown: ' + m['total_seconds_note']} |"
        )
    return "\n".join(rows)


def calibration_table() -> str:
    """Each run's calibration.json: the temperature and what it does on validation and test."""
    rows = [
        "| run | temperature T | fit | validation ECE before → after (95 %) "
        "| test ECE before → after (95 %) | test NLL before → after |",
        "|---|---|---|---|---|---|",
    ]
    for run_id in RUNS:
        try:
            record = load_run(run_id).calibration
        except RunError:
            continue
        if not record:
            rows.append(f"| `{run_id}` | – | not calibrated | | | |")
            continue
        val, test = record.get("validation") or {}, record.get("test") or {}
        if not (val and test):
            rows.append(f"| `{run_id}` | {record['temperature']:.3f} | incomplete calibration.json | | | |")
            continue
        fit = "converged" if record["converged"] else f"fell back to T = 1: {record['message']}"
        rows.append(
            f"| `{run_id}` | {record['temperature']:.3f} | {fit} "
            f"| {ece(run_id, 'validation', False).percent()} → {ece(run_id, 'validation', True).percent()} "
            f"| {ece(run_id, 'test', False).percent()} → **{ece(run_id, 'test', True).percent()}** "
            f"| {test['nll_before']:.3f} → {test['nll_after']:.3f} |"
        )
    return "\n".join(rows)


ROBUSTNESS_NOTE = (
    "Made by `python -m cifar robustness RUN` (`cifar/analysis/robustness.py`): CIFAR-10-C's 15 corruptions "
    "at its 5 severities, with its own constants (`cifar/sources/corruptions.py`), on the same "
    "class-stratified 1,000 test images for every run, one view per image (no test-time flip). "
    "Clean: those images uncorrupted. mCE: each corruption's errors summed over the severities, divided by "
    "`baseline-reference`'s, averaged over the corruptions (100 = the reference, lower is better); "
    "relative mCE subtracts each model's clean error first (Hendrycks and Dietterich 2019); no interval. "
    "Every accuracy here is of those 1,000 images only, so its 95 % interval is wide: Wilson's for the "
    "clean count; for a corrupted figure (each image's share of its corrupted versions answered right, "
    "averaged over the images) a bootstrap over the 1,000 images."
)


class Robustness:
    """A run's robustness files: the clean and mean corrupted accuracies with their intervals
    (`cifar.analysis.robustness.accuracy_intervals`), and right or wrong per corrupted set and image."""

    def __init__(self, run):
        from cifar.analysis.robustness import accuracy_intervals, read_robustness

        record, predictions = read_robustness(run)
        self.record, self.indices = record, np.asarray(record["test_indices"])
        self.intervals = accuracy_intervals(run, record, predictions)
        self.corrupted = predictions.argmax(axis=-1) == run.test_labels[self.indices]
        self.names = np.array([entry["corruption"] for entry in record["sets"]])

    def share(self, names) -> np.ndarray:
        """Per image, the share of its versions corrupted by one of `names` that it gets right."""
        return self.corrupted[np.isin(self.names, list(names))].mean(axis=0)

    def accuracy(self, names) -> stats.Estimate:
        """As `accuracy_intervals`' corrupted figure, over the sets of the corruptions `names`."""
        return stats.bootstrap(np.mean, self.share(names), vectorized=True)


def robustness_summary(results: dict) -> str:
    """Per run: clean and corrupted accuracy (with intervals), per family, and mCE."""
    from cifar.analysis.robustness import corruption_errors, robustness_table
    from cifar.sources.corruptions import FAMILIES

    table = robustness_table([_load(run_id) for run_id in results])
    clean = {run_id: result.record["clean_accuracy"] for run_id, result in results.items()}
    errors = corruption_errors(table, clean).set_index("run")
    rows = [
        "| run | images | clean (95 %) | mean corrupted (95 %) | noise | blur | weather | digital "
        "| mCE | relative mCE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run_id, result in results.items():
        family = " | ".join(result.accuracy(names).percent(1) for names in FAMILIES.values())
        e = errors.loc[run_id]
        rows.append(
            f"| `{run_id}` | {result.indices.size:,} | {result.intervals['clean'].percent(1)} "
            f"| **{result.intervals['corrupted'].percent(1)}** | {family} "
            f"| {e['mCE']:.1f} | {e['relative mCE']:.1f} |"
        )
    half = max(
        max(c.high - c.value, c.value - c.low) for c in (r.intervals["clean"] for r in results.values())
    )
    rows += ["", f"On these 1,000 images a clean accuracy is known to ± {100 * half:.1f} points at most."]
    return "\n".join(rows)


def robustness_detail(results: dict, a: str = "transfer-best", b: str = "baseline-best") -> str:
    """Accuracy per corruption per run, and `a` minus `b` paired on the same images."""
    from cifar.sources.corruptions import CORRUPTIONS

    paired = a in results and b in results and np.array_equal(results[a].indices, results[b].indices)
    rows = [
        "| corruption | " + " | ".join(f"`{i}`" for i in results) + f" | {a} − {b} (paired, 95 %) |",
        "|---|" + "---|" * (len(results) + 1),
    ]
    for name in CORRUPTIONS:
        cells = " | ".join(result.accuracy([name]).percent(1) for result in results.values())
        gap = "–"
        if paired:
            gap = stats.paired_difference(results[a].share([name]), results[b].share([name])).points(1)
        rows.append(f"| {name.replace('_', ' ')} | {cells} | {gap} |")
    return "\n".join(rows)


def robustness_tables() -> tuple[str, str]:
    """(summary per run, accuracy per corruption per run) of the runs with robustness results."""
    from cifar.analysis.robustness import read_robustness

    results = {run.run_id: Robustness(run) for run in map(_load, RUNS) if run and read_robustness(run)}
    if not results:
        return "(no robustness results yet)", ""
    return robustness_summary(results), robustness_detail(results)


def _load(run_id: str):
    try:
        return load_run(run_id)
    except RunError:
        return None


def headline_seeds() -> list[Seeds]:
    """The seed group of each run of SEEDED (its other seeds among the committed runs)."""
    runs = list_runs()
    return [
        Seeds(f"`{run_id}`", base, seed_group(base, runs), target)
        for run_id, target in SEEDED
        if (base := _load(run_id)) is not None
    ]


def comparisons_table(seeds: list[Seeds]) -> str:
    """Each pair of PAIRS compared on the same test images; a run with a seed group as its group."""
    groups = {row.base.run_id: row.group for row in seeds if row.group}
    rows = [
        "| A | B | A (95 %) | B (95 %) | right only by A / by B (images) "
        "| A minus B (paired bootstrap, 95 %) | test | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for names in PAIRS:
        a, b = (groups.get(name) or _load(name) for name in names)
        if a is None or b is None:
            continue
        c = compare(a, b)
        rows.append(
            f"| `{c.a}` | `{c.b}` | {c.accuracy_a.percent()} | {c.accuracy_b.percent()} "
            f"| {c.a_only:,.4g} / {c.b_only:,.4g} | {c.difference.points()} "
            f"| {c.test}, {stats.p_text(c.p_value)} | {c.verdict} |"
        )
    return "\n".join(rows)


NOTE = (
    "Train accuracy is the final model evaluated on its 45,000 training images (inference mode, "
    "no dropout), a count over those images themselves, not an estimate for new ones: no interval; "
    "5,000 training images are held out for validation. Test accuracy is recomputed here from "
    "`test_predictions.npy` against the real test labels, with Wilson's 95 % interval for 10,000 "
    "images (the write-up's figures as counts of the same 10,000; their answers per image are "
    "unknown, so the gap is not tested). ECE: expected calibration error, 15 equal-width bins of the "
    "top label's probability, with a bootstrap interval over the images; calibrated = "
    "softmax(log p / T) with the run's temperature T from `calibration.json`."
)
SEEDS_NOTE = (
    "A run's seed group: the committed runs that differ from it in `seed` alone (mean ± standard "
    "deviation, Student's t interval of the mean). Below, two classifiers on the same 10,000 test "
    "images (a seed group scores each image by the share of its seeds right): McNemar's exact test "
    "for two runs, a paired permutation test for a group, and the paired bootstrap interval of "
    "the difference."
)
CALIBRATION_NOTE = (
    "T is fitted on the run's 5,000 validation images by minimising the negative log-likelihood "
    "(Guo et al. 2017, temperature scaling); the test set is never used to fit it. T < 1 sharpens "
    "timid probabilities (label smoothing, flip averaging), T > 1 softens over-confident ones. "
    "The ensemble's weights are fitted on the same validation images, which leaves its T near 1. "
    "ECE intervals: a bootstrap over the validation or test images."
)


def seeds_section() -> str:
    seeds = headline_seeds()
    pairs = seed_pairs_table(seeds)
    tables = [*seeds_table(seeds), "", *(pairs + [""] if len(pairs) > 2 else [])]
    return "\n".join([*tables, SEEDS_NOTE, "", comparisons_table(seeds)])


def main() -> None:
    body, seeds = table(), seeds_section()
    summary, detail = robustness_tables()
    (ROOT / "bench" / "RESULTS.md").write_text(
        "# Results on the full CIFAR-10 data\n\nGenerated by `bench/results.py` from the run folders "
        f"under `artifacts/runs/`.\n\n{body}\n\n{NOTE}\n\n## Seeds and paired comparisons\n\n{seeds}\n\n"
        f"## Calibration\n\n{calibration_table()}\n\n{CALIBRATION_NOTE}\n\n## Cost\n\n{cost_table()}\n\n"
        f"{COST_NOTE}\n\n## Robustness to corruptions\n\n{summary}\n\n{ROBUSTNESS_NOTE}\n\n"
        f"Accuracy per corruption (mean over the five severities):\n\n{detail}\n"
    )
    replace_block(ROOT / "docs" / "results.md", "results", f"{body}\n\n{NOTE}\n\n{seeds}")
    replace_block(ROOT / "docs" / "robustness.md", "robustness", f"{summary}\n\n{ROBUSTNESS_NOTE}")
    replace_block(ROOT / "docs" / "robustness.md", "robustness-detail", detail)
    replace_block(ROOT / "README.md", "headline", headline(RUNS, headline_seeds(), PAIRS))
    print(body)


if __name__ == "__main__":
    main()
