"""Comparison's sections on uncertainty: two runs (or seed groups) tested against each other, and
the seed groups with their spread."""

from __future__ import annotations

import streamlit as st

from cifar.analysis import plots
from cifar.stats import p_text
from cifar.store.groups import GROUP_PREFIX, CompareError, groups_table, seed_groups
from cifar.store.runs import Run, describe_run
from dashboard import cache
from dashboard.widgets import chart

GROUP_PERCENTS = ("test_accuracy_mean", "test_accuracy_low", "test_accuracy_high", "test_accuracy_std")


def significance_card(runs: list[Run], chosen: list[Run]) -> None:
    """Pick A and B among the chosen runs and every seed group; show `cifar.store.groups.compare`."""
    groups = seed_groups(runs)
    labels = {run.run_id: describe_run(run) for run in chosen}
    labels |= {f"{GROUP_PREFIX}{group.name}": group.label for group in groups}
    names = list(labels)
    left, right = st.columns(2)
    name_a = left.selectbox("A", names, index=0, key="comparison-a", format_func=labels.get)
    name_b = right.selectbox(
        "B", names, index=min(1, len(names) - 1), key="comparison-b", format_func=labels.get
    )
    if name_a == name_b:
        st.info("Choose two different runs or seed groups.")
        return
    try:
        result = cache.comparison(name_a, name_b)
    except CompareError as error:
        st.warning(f"Not comparable: {error}.")
        return
    with st.container(border=True):
        first, second, third = st.columns(3)
        # A metric's value is cut short when long: the figure big, its interval under it.
        for column, name, estimate in (
            (first, f"A: {result.a}", result.accuracy_a),
            (second, f"B: {result.b}", result.accuracy_b),
        ):
            column.metric(name, f"{estimate.value:.2%}")
            column.caption(f"95 % interval {estimate.low:.2%}-{estimate.high:.2%}")
        difference = result.difference
        third.metric("A minus B", f"{difference.value * 100:+.2f} pts")
        third.caption(f"95 % interval {difference.low * 100:+.2f} to {difference.high * 100:+.2f} pts")
        (st.success if result.significant else st.info)(result.verdict)
        st.caption(
            f"Test images only A gets right: {result.a_only:,.4g}; only B: {result.b_only:,.4g}. "
            f"{result.test}: {p_text(result.p_value)}. The interval of the difference is a paired "
            "bootstrap over the test images (95 %). A seed group scores each image by the share of its "
            "seeds that get it right. Accuracies: Wilson's interval (a run), a bootstrap of the mean "
            "(a group); the same in `python -m cifar compare A B`."
        )


def seed_groups_section(runs: list[Run]) -> None:
    """Every seed group: mean, interval and spread of its seeds, and its mean learning curves."""
    groups = seed_groups(runs)
    if not groups:
        return
    st.subheader("Seed groups")
    st.caption(
        "Runs that differ only in their seed (`python -m cifar train ... --seeds N`): the mean over the "
        "seeds, the 95 % interval of that mean (Student's t), and the seeds' standard deviation."
    )
    percent = st.column_config.NumberColumn(format="percent")
    st.dataframe(
        groups_table(runs),
        key="comparison-groups",
        hide_index=True,
        column_config={name: percent for name in GROUP_PERCENTS},
    )
    chart(
        plots.group_curves(
            {group.name: [run.history for run in group.runs] for group in groups},
            plots.run_colours(run.run_id for run in runs),
        ),
        key="comparison-group-curves",
    )
