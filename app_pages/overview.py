"""Overview: each model's headline accuracy beside the write-up's, the assets, what to do next."""

import os

import pandas as pd
import streamlit as st

from cifar.analysis import plots
from cifar.config import REFERENCE_FIGURES, keras_home
from cifar.modeling.feature_cache import cache_inventory
from cifar.service.jobs import active_job
from cifar.sources.assets import DATASET_OVERRIDE_ENV, cifar10_available, weights_available
from cifar.store.groups import group_of, seed_groups
from cifar.store.runs import REFERENCE_RUN_IDS, headline_table, test_accuracy
from dashboard import cache, text
from dashboard.widgets import chart, interval, percent

st.title("CIFAR-10 classifiers")
st.caption(
    "A from-scratch baseline CNN and an InceptionV3 transfer model, trained on CIFAR-10 "
    "(50,000 training / 10,000 test images, 10 classes)."
)
runs = cache.runs()
if problems := cache.run_problems():  # reported here once; every page skips those folders
    with st.expander(f"{len(problems)} run folder(s) could not be read", icon=":material/warning:"):
        for problem in problems:
            st.text(problem)
job = active_job()
if job is not None:
    st.info(f"Training job `{job.run_id}` is running ({job.progress:.0%}): see the **Train** page.")

# ----------------------------------------------------------------------------- headline cards
st.subheader("Best runs")
table = headline_table(runs)
groups = seed_groups(runs)
by_id = {run.run_id: run for run in runs}
for column, (_, row) in zip(st.columns(len(table)), table.iterrows(), strict=True):
    model = row["model"]
    write_up = REFERENCE_FIGURES.get(model, {})
    with column, st.container(border=True):
        st.markdown(f"**{text.MODEL_TITLES[model]}**")
        if pd.isna(row["run"]):
            st.info(
                f"No {model} run yet. Write-up: {percent(write_up['test_accuracy'])} test.\n\n"
                f"`python -m cifar train {model} --run-id {REFERENCE_RUN_IDS[model]}`"
            )
            continue
        best = by_id[row["run"]]
        test = row["test_accuracy"]
        known = write_up and test is not None and pd.notna(test)
        delta = f"{(test - write_up['test_accuracy']) * 100:+.2f} pp vs write-up" if known else None
        st.metric(f"Best: {best.run_id}", percent(test), delta=delta, delta_color="off")
        st.caption(f"95 % interval {interval(best.test_accuracy_estimate)}")
        if model == "ensemble":
            st.caption(f"Pools {', '.join(f'`{m}`' for m in best.ensemble.get('members', []))}")
        else:
            train = f"{percent(write_up['train_accuracy'])} train / " if write_up["train_accuracy"] else ""
            st.caption(
                f"Train {percent(row['train_accuracy'])} · write-up: {train}"
                f"{percent(write_up['test_accuracy'])} test"
            )
        if group := group_of(best, groups):
            st.caption(
                f"Trained with {len(group.runs)} seeds: mean {percent(group.accuracy.value)} ± "
                f"{group.spread:.2%} (the mean's 95 % interval {interval(group.accuracy)})"
            )
        reference = by_id.get(row["reference_run"]) if pd.notna(row["reference_run"]) else None
        if reference is not None and reference.run_id != best.run_id:
            st.caption(
                f"The write-up's recipe, rerun: `{reference.run_id}` {percent(test_accuracy(reference))} "
                f"({interval(reference.test_accuracy_estimate)})"
            )
        cost = text.cost_line(best.metrics)
        st.caption(
            f"`{best.run_id}` costs {cost}"
            if cost
            else f"Cost not measured: `python -m cifar cost {best.run_id}`"
        )
if table["run"].notna().any():
    chart(plots.headline_bars(table), key="overview-headline-chart")

# ----------------------------------------------------------------------------- data and weights
st.subheader("Data and weights")
data_cached, weights_cached = cifar10_available(), weights_available()
left, right = st.columns(2)
if data_cached and os.environ.get(DATASET_OVERRIDE_ENV):
    left.warning(f"CIFAR-10 replaced by a small test set (`{DATASET_OVERRIDE_ENV}` is set).")
elif data_cached:
    left.success("CIFAR-10 is cached and verified.")
else:
    left.warning(f"CIFAR-10 is not cached: the gallery needs it. Run `{text.FETCH}`.")
if weights_cached:
    right.success("InceptionV3 ImageNet weights are cached.")
else:
    right.warning(f"InceptionV3 weights are not cached: the transfer model needs them. Run `{text.FETCH}`.")

feature_sets = cache_inventory(check_chunks=False)
obsolete = [s for s in feature_sets if s.obsolete]
summary = f"Feature cache: {len(feature_sets) - len(obsolete)} feature set(s), "
summary += f"{sum(s.megabytes for s in feature_sets) / 1000:.1f} GB in "
summary += f"`{text.home_relative(keras_home() / 'features')}`."
if obsolete:
    summary += f" {len(obsolete)} obsolete: `python -m cifar features --prune` removes them."
st.caption(summary)

# ----------------------------------------------------------------------------- next steps
st.subheader("What to do next")
steps = text.next_steps(runs, data_cached=data_cached, weights_cached=weights_cached)
st.code("\n\n".join(f"# {what}\n{command}" for what, command in steps), language="bash")
