"""Writes bench/PHOTOS.md (and docs/photos.md's table): every committed run on the real photos of
bench/photos/, in each mode.

Each run's Predictor answers each photo of `bench/photos/manifest.csv` at every resolution it
takes ("full": the photo at the transfer base's input size; "cifar": the 32 x 32 thumbnail), with
calibrated probabilities; the per-photo answers go to bench/photos-predictions.csv. The photos are a
check of what people upload, never a validation set: no hyperparameter is chosen on them.
Run: `PYTHONPATH=. .venv/bin/python bench/photos.py` (a few minutes on 2 CPU cores; with
`--from-csv` it rewrites the tables from the committed bench/photos-predictions.csv in seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from bench.blocks import replace_block
from cifar import stats
from cifar.inference.predict import load_predictor, run_resolutions
from cifar.sources.images import open_image
from cifar.store.runs import RunError, load_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import RUNS  # noqa: E402 (the committed runs, one list for the bench's tables)

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "bench" / "photos"
MODE_NAMES = {"full": "full resolution", "cifar": "32 × 32"}


def answers(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, resolution, photo): the top label, its calibrated probability, right or not."""
    rows = []
    images = {name: open_image(PHOTOS / name) for name in manifest["file"]}
    for run_id in RUNS:
        try:
            run = load_run(run_id)
            predictor = load_predictor(run)
        except RunError as error:
            print(f"skipped {run_id}: {error}", file=sys.stderr)
            continue
        for resolution in run_resolutions(run):
            for name, label in zip(manifest["file"], manifest["label"], strict=True):
                probs = predictor.distribution(images[name], resolution)
                top = int(probs.argmax())
                answer = predictor.class_names[top]
                rows.append(
                    {
                        "run": run_id,
                        "resolution": resolution,
                        "file": name,
                        "label": label,
                        "answer": answer,
                        "probability": round(float(probs[top]), 4),
                        "right": answer == label,
                    }
                )
            print(f"{run_id} {resolution}: done", file=sys.stderr)
    return pd.DataFrame(rows)


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def accuracies(table: pd.DataFrame) -> dict[tuple[str, str], stats.Estimate]:
    """(run, resolution) -> its share of the photos right, with Wilson's interval."""
    return {
        key: stats.proportion(int(group["right"].sum()), len(group))
        for key, group in table.groupby(["run", "resolution"], sort=False)
    }


def summary_table(table: pd.DataFrame) -> str:
    n = table["file"].nunique()
    lines = [
        f"| run | photos seen at | right (of {n}) | accuracy (95 %) | mean confidence "
        "| CIFAR-10 test accuracy (95 %) |",
        "|---|---|---|---|---|---|",
    ]
    found = accuracies(table)
    for (run_id, resolution), group in table.groupby(["run", "resolution"], sort=False):
        test = load_run(run_id).test_accuracy_estimate.percent(1)
        lines.append(
            f"| `{run_id}` | {MODE_NAMES[resolution]} | {int(group['right'].sum())} "
            f"| **{found[run_id, resolution].percent(1)}** | {_percent(group['probability'].mean())} "
            f"| {test} |"
        )
    return "\n".join(lines)


def interval_line(table: pd.DataFrame) -> str:
    """How wide the photos' intervals are, measured on this table."""
    widths = [100 * (e.high - e.low) for e in accuracies(table).values()]
    tests = [load_run(run_id).test_accuracy_estimate for run_id in table["run"].unique()]
    test_width = max(100 * (e.high - e.low) for e in tests)
    return (
        f"Accuracy on {table['file'].nunique()} photos is known only roughly: its 95 % interval "
        f"(Wilson's) spans {min(widths):.0f} to {max(widths):.0f} points here, so runs whose intervals "
        "overlap are not told apart by these photos. The CIFAR-10 test figure, of 10,000 images, "
        f"spans at most {test_width:.1f} points."
    )


def per_class_table(table: pd.DataFrame) -> str:
    columns = list(dict.fromkeys(zip(table["run"], table["resolution"], strict=True)))
    header = " | ".join(f"`{run}` {MODE_NAMES[mode]}" for run, mode in columns)
    lines = [f"| class | photos | {header} |", "|---|---|" + "---|" * len(columns)]
    for label, group in table.groupby("label"):
        cells = []
        for run, mode in columns:
            rows = group[(group["run"] == run) & (group["resolution"] == mode)]
            cells.append(f"{int(rows['right'].sum())}/{len(rows)}")
        lines.append(f"| {label} | {group['file'].nunique()} | {' | '.join(cells)} |")
    return "\n".join(lines)


def confusions_table(table: pd.DataFrame) -> str:
    lines = ["| run | photos seen at | wrong answers (true → answer × photos) |", "|---|---|---|"]
    for (run_id, resolution), group in table.groupby(["run", "resolution"], sort=False):
        wrong = group[~group["right"]]
        counts = wrong.groupby(["label", "answer"]).size().sort_values(ascending=False)
        listed = ", ".join(f"{true} → {answer} × {n}" for (true, answer), n in counts.items()) or "none"
        lines.append(f"| `{run_id}` | {MODE_NAMES[resolution]} | {listed} |")
    return "\n".join(lines)


def main() -> None:
    manifest = pd.read_csv(PHOTOS / "manifest.csv")
    if "--from-csv" in sys.argv:  # the tables again from the committed answers, no model loaded
        table = pd.read_csv(ROOT / "bench" / "photos-predictions.csv")
    else:
        table = answers(manifest)
        table.to_csv(ROOT / "bench" / "photos-predictions.csv", index=False)
    counts = manifest["label"].value_counts().sort_index()
    count_line = ", ".join(f"{label} {n}" for label, n in counts.items())
    text = f"""# Real photos: what people upload

Generated by `bench/photos.py` from the {len(manifest)} photos of `bench/photos/` (where they come
from, their licences and labels: `bench/photos/manifest.csv` and `bench/photos/README.md`) and the
committed runs. Per class: {count_line}. The set is small and unbalanced (many birds, few
vehicles): read the per-class rows, not only the totals. No hyperparameter was chosen on it.

"Full resolution": the transfer base sees the photo itself (centre square, Lanczos resize to its
input size); "32 × 32": the photo squeezed to a CIFAR-10 thumbnail first. Baseline CNNs only know
32 × 32. Confidence: the calibrated probability of the answer. Every answer: `bench/photos-predictions.csv`.

## Accuracy

{summary_table(table)}

{interval_line(table)}

## Per class (right / photos)

{per_class_table(table)}

## Confusions

{confusions_table(table)}
"""
    (ROOT / "bench" / "PHOTOS.md").write_text(text)
    replace_block(ROOT / "docs" / "photos.md", "photos", f"{summary_table(table)}\n\n{interval_line(table)}")
    print(text)


if __name__ == "__main__":
    main()
