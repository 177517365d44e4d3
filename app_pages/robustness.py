"""Robustness: each run under CIFAR-10-C's 15 corruptions at 5 severities, and what they look like."""

import streamlit as st

from cifar.analysis import plots
from cifar.analysis.robustness import (
    REFERENCE_RUN,
    accuracy_intervals,
    corruption_errors,
    read_robustness,
    robustness_table,
)
from cifar.sources.assets import cifar10_available, frost_textures_available
from cifar.sources.corruptions import CORRUPTIONS, SEVERITIES
from dashboard import cache
from dashboard.widgets import chart, require_runs, run_picker, upscale

st.title("Robustness to corruptions")
st.caption(
    "CIFAR-10-C's 15 corruptions (Hendrycks and Dietterich, ICLR 2019) at its 5 severities, made "
    "here with its own constants on a fixed, class-stratified subset of the test set. Each image "
    "is seen once (no test-time flip), so every run is measured alike."
)
runs = cache.runs()
require_runs(runs)
results = {run.run_id: result for run in runs if (result := cache.of_run(read_robustness, run))}
if not results:
    st.info(
        "**No robustness results yet.** Evaluate runs from a terminal (a transfer run's first time "
        "extracts the corrupted images' features: about 25 minutes at 224 px on 2 CPU cores):"
    )
    st.code("python -m cifar robustness baseline-reference baseline-best", language="bash")
    st.stop()
chosen = run_picker(
    [run for run in runs if run.run_id in results],
    key="robustness-runs",
    label="Runs (those with robustness results)",
)
if not chosen:
    st.info("Choose at least one run above.")
    st.stop()
records = {run.run_id: results[run.run_id][0] for run in chosen}
subsets = {tuple(record["test_indices"]) for record in records.values()}
if len(subsets) > 1:
    st.warning("These runs were evaluated on different test images: their figures compare less well.")
table = robustness_table(chosen)
clean = {run_id: record["clean_accuracy"] for run_id, record in records.items()}

st.subheader("Summary")
# The reference's errors are the yardstick of mCE, whether or not it is among the chosen runs.
reference = [run for run in runs if run.run_id == REFERENCE_RUN and run.run_id in results]
measured = chosen + [run for run in reference if run not in chosen]
all_clean = {run.run_id: results[run.run_id][0]["clean_accuracy"] for run in measured}
summary = corruption_errors(robustness_table(measured), all_clean)
summary = summary[summary["run"].isin(records)]
summary.insert(1, "images", [records[run_id]["images"] for run_id in summary["run"]])
intervals = {run.run_id: accuracy_intervals(run, *results[run.run_id]) for run in chosen}
for position, (name, key) in enumerate((("clean", "clean"), ("corrupted", "corrupted"))):
    summary.insert(
        3 + 2 * position,
        f"{name}: 95 % interval",
        [f"{intervals[r][key].low:.1%}-{intervals[r][key].high:.1%}" for r in summary["run"]],
    )
st.dataframe(
    summary,
    hide_index=True,
    column_config={
        "clean accuracy": st.column_config.NumberColumn(format="%.2f %%"),
        "mean corruption accuracy": st.column_config.NumberColumn(format="%.2f %%"),
        "mCE": st.column_config.NumberColumn(format="%.1f", help="100 = as many errors as the reference"),
        "relative mCE": st.column_config.NumberColumn(format="%.1f"),
    },
)
st.caption(
    f"mCE: each corruption's errors summed over the severities, divided by `{REFERENCE_RUN}`'s, "
    "averaged over the 15 corruptions (100 = as many errors as the reference, lower is better). "
    "Relative mCE subtracts each model's clean error first: how much a model *loses* to "
    "corruptions, whatever its clean accuracy. Empty when the reference has no results. The subset is "
    "small (1,000 images by default), so each accuracy is known to about ± 1.5 points: its interval is "
    "Wilson's (clean) or a bootstrap over the images (corrupted)."
)

st.subheader("Accuracy by corruption")
chart(plots.robustness_heatmap(table), key="robustness-heatmap")
st.caption("Each cell: the mean accuracy over the five severities.")

st.subheader("Accuracy against severity")
colours = plots.run_colours(run.run_id for run in runs)  # one colour per run, on every page
chart(plots.robustness_lines(table, clean, colours), key="robustness-lines")
st.caption("Severity 0 is the same test images uncorrupted.")

st.subheader("What the corruptions look like")
if not (cifar10_available() and frost_textures_available()):
    st.info("The examples need CIFAR-10 and the frost textures: `python -m cifar fetch`.")
    st.stop()
indices = records[chosen[0].run_id]["test_indices"]
position = st.slider("Test image (of the evaluated subset)", 0, len(indices) - 1, 0, key="robustness-image")
index = int(indices[position])
examples = cache.corruption_examples(index)
labels = chosen[0].class_names
st.caption(
    f"Test image #{index} ({labels[int(chosen[0].test_labels[index])]}), clean and at severities 1-5; "
    "shown 3x enlarged, every pixel a block. Random corruptions draw anew for each image."
)
clean_image = cache.cifar10().x_test[index]
header = st.columns(len(SEVERITIES) + 2)
header[0].markdown("**corruption**")
header[1].markdown("**clean**")
for column, severity in zip(header[2:], SEVERITIES, strict=True):
    column.markdown(f"**{severity}**")
for name in CORRUPTIONS:
    row = st.columns(len(SEVERITIES) + 2)
    row[0].markdown(name.replace("_", " "))
    row[1].image(upscale(clean_image), width=96)
    for column, severity in zip(row[2:], SEVERITIES, strict=True):
        column.image(upscale(examples[name, severity]), width=96)
