"""The few widgets that several pages share: guards, the run picker, charts, percentages.

A widget used by one page lives in that page. Keys are passed in by the pages (each page uses its
own prefix), so two pages never share a widget's state by accident.
"""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

from cifar.store.runs import Run, default_selection, describe_run, runs_root


def percent(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2%}"


def interval(estimate) -> str:
    """'93.42-94.36 %': a `cifar.stats.Estimate`'s 95 % interval, as the pages show it."""
    return f"{estimate.low:.2%}".removesuffix("%") + f"-{estimate.high:.2%}"


def require_runs(runs: list[Run]) -> None:
    """The empty state: no run folders yet. Stops the page."""
    if runs:
        return
    st.info(
        f"**No runs yet** in `{runs_root()}` (`CIFAR_ARTIFACTS` names another artifacts folder). "
        "Train one on the **Train** page, or from a terminal:"
    )
    st.code(
        "python -m cifar fetch\n"
        "python -m cifar train baseline --run-id baseline-reference\n"
        "python -m cifar train transfer --run-id transfer-reference",
        language="bash",
    )
    st.stop()


CHOSEN_RUNS = "chosen-runs"  # session state: the runs a person chose last, on any page


def run_picker(
    runs: list[Run],
    key: str,
    label: str = "Runs",
    default: list[str] | None = None,
    help: str | None = None,
    max_selections: int | None = None,
    carry: bool = True,
) -> list[Run]:
    """A multiselect of runs (shown with model and test accuracy); returns the chosen runs.

    With `carry`, it starts from the runs chosen last on another page (those of them it offers),
    and what is chosen here is carried on: a person picks the runs once."""
    by_id = {run.run_id: run for run in runs}
    carried = [rid for rid in st.session_state.get(CHOSEN_RUNS, []) if rid in by_id] if carry else []
    default = carried or [rid for rid in (default or default_selection(runs)) if rid in by_id]
    default = default[:max_selections] if max_selections else default
    chosen = st.multiselect(
        label,
        options=list(by_id),
        default=default,
        format_func=lambda rid: describe_run(by_id[rid]),
        key=key,
        help=help,
        max_selections=max_selections,
    )
    if carry:
        st.session_state[CHOSEN_RUNS] = chosen
    return [by_id[rid] for rid in chosen]


def chart(figure, key: str) -> None:
    st.plotly_chart(figure, key=key, config={"displaylogo": False})


def upscale(image: np.ndarray, side: int = 96) -> np.ndarray:
    """Nearest-neighbour upscaling of a small image (every pixel becomes a block): the browser
    would blur a 32 x 32 image shown large."""
    factor = max(1, side // image.shape[0])
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
