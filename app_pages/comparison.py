"""Comparison: any runs side by side: accuracies, learning curves, calibration, every hyperparameter."""

from functools import partial

import streamlit as st

from cifar.analysis import plots
from cifar.analysis.cost import pareto_front
from cifar.analysis.evaluate import calibration_table, reliability
from cifar.inference.export import export_blocker, model_bytes
from cifar.store.tables import SHARE_COLUMNS, hyperparameter_columns, predictions_csv, runs_table
from dashboard import cache, comparison_sections, text
from dashboard.widgets import chart, require_runs, run_picker

st.title("Compare runs")
runs = cache.runs()
require_runs(runs)
chosen = run_picker(runs, key="comparison-runs", label="Runs to compare")
if not chosen:
    st.info("Choose at least one run above.")
    st.stop()
table = runs_table(chosen)
colours = plots.run_colours(run.run_id for run in runs)  # one colour per run, on every page
percent_column = st.column_config.NumberColumn(format="percent")

st.subheader("Train and test accuracy")
chart(plots.accuracy_bars(table), key="comparison-accuracy")

st.subheader("Is the difference real?")
comparison_sections.significance_card(runs, chosen)

st.subheader("Learning curves")
chart(plots.learning_curves({r.run_id: r.history for r in chosen}, None, colours), key="comparison-curves")

comparison_sections.seed_groups_section(runs)

st.subheader("Every hyperparameter and result")
st.dataframe(
    table,
    key="comparison-table",
    hide_index=True,
    column_config={
        "run": st.column_config.TextColumn(pinned=True),
        **{name: percent_column for name in SHARE_COLUMNS},
        "seconds": st.column_config.NumberColumn(format="%.0f s"),
        "total_seconds": st.column_config.NumberColumn(format="%.0f s"),
        "model_bytes": st.column_config.NumberColumn(format="bytes"),
        **{
            name: st.column_config.NumberColumn(format="%.1f ms")
            for name in ("latency_ms_1", "latency_ms_256")
        },
        **{
            name: st.column_config.NumberColumn(format="compact")
            for name in (
                "parameters",
                "trainable_parameters",
                "flops_per_image",
                "flops_per_prediction",
            )
        },
    },
)

st.subheader("A hyperparameter against accuracy")
parameters = hyperparameter_columns(table)
if parameters:
    left, right = st.columns(2)
    default = parameters.index("learning_rate") if "learning_rate" in parameters else 0
    parameter = left.selectbox("Hyperparameter", parameters, index=default, key="comparison-hparam-parameter")
    metric = right.selectbox(
        "Result",
        ["test_accuracy", "train_accuracy", "val_accuracy", "seconds"],
        key="comparison-hparam-metric",
    )
    chart(plots.hyperparameter_scatter(table, parameter, metric, colours), key="comparison-hparam-chart")

st.subheader("Calibration: does 80 % mean right 80 % of the time?")
calibration = calibration_table(chosen)
if calibration.empty:
    st.info("None of these runs is calibrated yet: `python -m cifar calibrate RUN` fits its temperature.")
else:
    calibrated = st.toggle(
        "Calibrated probabilities (what the pages show)", value=True, key="comparison-calibrated"
    )
    chart(plots.reliability_diagram(reliability(chosen, calibrated), colours), key="comparison-reliability")
    st.caption(
        "Temperature scaling (Guo et al. 2017): one number T per run, fitted on its validation split, "
        "divides the log-probabilities; accuracy does not change. ECE: the mean gap between confidence "
        "and accuracy over 15 equal-width bins, weighted by their images."
    )
    st.dataframe(
        calibration,
        key="comparison-calibration",
        hide_index=True,
        column_config={
            "temperature": st.column_config.NumberColumn(format="%.3f"),
            **{name: percent_column for name in calibration.columns if "_ece_" in name},
            **{
                name: st.column_config.NumberColumn(format="%.3f")
                for name in calibration.columns
                if "_nll_" in name
            },
        },
    )

st.subheader("Accuracy against cost")
if table["flops_per_image"].isna().all():
    st.info("None of these runs has its cost measured yet: `python -m cifar cost RUN ...` measures it.")
else:
    cost = st.selectbox(
        "Cost", list(text.COST_LABELS), format_func=text.COST_LABELS.get, key="comparison-cost"
    )
    front = pareto_front(table, cost)
    figure = plots.cost_scatter(table, front, cost, text.COST_LABELS[cost], colours)
    chart(figure, key="comparison-cost-chart")
    st.caption(
        f"On the dotted front: {', '.join(front['run'])}; every other run is beaten by one of them on both "
        "accuracy and cost. FLOPs are counted from each model's graph by TensorFlow's profiler (a "
        "multiply-add is 2; a transfer model's ImageNet base included); latency is one call of the "
        "classifier on the machine in each run's `latency_device`."
    )
    if unmeasured := list(table.loc[table[cost].isna(), "run"]):
        st.caption(f"Not shown (not measured): {', '.join(unmeasured)}.")

st.subheader("Downloads")
st.caption(text.DOWNLOADS)
for run in chosen:
    name, predictions, model = st.columns([2, 1, 1])
    name.markdown(f"`{run.run_id}` ({run.model})")
    predictions.download_button(
        "Test predictions (CSV)",
        data=partial(predictions_csv, run),
        file_name=f"{run.run_id}-test-predictions.csv",
        mime="text/csv",
        on_click="ignore",
        key=f"comparison-download-predictions-{run.run_id}",
    )
    why_not = export_blocker(run)
    model.download_button(
        "Model (.keras)",
        data=partial(model_bytes, run.run_id),
        file_name=f"{run.run_id}.keras",
        on_click="ignore",
        disabled=bool(why_not),
        help=why_not or None,
        key=f"comparison-download-model-{run.run_id}",
    )
    if why_not:  # a disabled button's tooltip shows only on hover: say it beside the button
        model.caption(why_not)
