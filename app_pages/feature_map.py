"""Feature map: each run's test set in 2-D, coloured by true class, its mistakes marked."""

import numpy as np
import streamlit as st

from cifar.analysis import plots
from cifar.analysis.feature_space import projection_progress, read_projection, start_projection
from cifar.sources.assets import cifar10_available
from cifar.store.runs import best_runs
from dashboard import cache
from dashboard.text import plain
from dashboard.widgets import require_runs, run_picker, upscale

st.title("Feature map")
st.caption(
    "How each model arranges the 10,000 test images: a 2-D UMAP of its feature space (a baseline's "
    "penultimate layer, a transfer run's pooled InceptionV3 features). Colour: the true class; "
    "crosses: the images it gets wrong. Select points (box or lasso) to see them."
)
runs = cache.runs()
require_runs(runs)
maps = {run.run_id: result for run in runs if (result := cache.of_run(read_projection, run))}
missing = [run for run in runs if run.run_id not in maps and run.model != "ensemble" and run.has_weights]


@st.fragment(run_every=3)
def map_jobs() -> None:
    """A button per run without a map; a running one's progress, polled until its map is there."""
    for run in missing:
        progress = projection_progress(run)
        if progress and progress["running"]:
            seconds, line = progress["seconds"], plain(progress["last_line"])
            st.caption(f"Making the map of `{run.run_id}` ({seconds:.0f} s): {line}")
        elif cache.of_run(read_projection, run):
            st.rerun()  # done: the whole page shows it
        elif st.button(f"Make the map of {run.run_id}", key=f"feature-map-start-{run.run_id}"):
            start_projection(run)
            st.rerun(scope="fragment")


if missing:
    with st.expander(
        f"Runs without a map ({len(missing)}): make them here (a few minutes each on 2 CPU cores)"
    ):
        map_jobs()
if not maps:
    st.info("**No maps yet.** Make them above, or from a terminal: `python -m cifar project RUN ...`")
    st.stop()
mapped = [run for run in runs if run.run_id in maps]
chosen = run_picker(
    mapped, key="feature-map-runs", label="Runs (two side by side)", max_selections=2,
    default=[run.run_id for run in best_runs(mapped).values() if run is not None],  # the best first
)  # fmt: skip
if not chosen:
    st.info("Choose a run above.")
    st.stop()

selected: dict[str, list[int]] = {}
for column, run in zip(st.columns(len(chosen)), chosen, strict=False):
    record, coordinates = maps[run.run_id]
    labels, predicted = run.test_labels, run.test_predictions.argmax(axis=1)
    with column:
        figure = plots.feature_map(coordinates, labels, predicted, run.class_names, run.run_id)
        event = st.plotly_chart(
            figure, key=f"feature-map-{run.run_id}", on_select="rerun", selection_mode=("box", "lasso"),
            config={"displaylogo": False},
        )  # fmt: skip
        st.caption(
            f"{record['space']} ({record['dimensions']}-d), {record['method']}; "
            f"{np.mean(predicted != labels):.1%} of the points are crosses."
        )
        selected[run.run_id] = [int(point["customdata"][0]) for point in event.selection.points]

st.subheader("Selected images")
indices = sorted({i for chosen_points in selected.values() for i in chosen_points})[:24]
if not indices:
    st.info("Select points on a map to see their images here.")
    st.stop()
if not cifar10_available():
    st.info("The images need the cached CIFAR-10: `python -m cifar fetch`.")
    st.stop()
data = cache.cifar10()
for start in range(0, len(indices), 8):
    for column, index in zip(st.columns(8), indices[start : start + 8], strict=False):
        column.image(upscale(data.x_test[index], 64), width=64)
        answer = {run.run_id: run.class_names[int(run.test_predictions[index].argmax())] for run in chosen}
        truth = chosen[0].class_names[int(data.y_test[index])]
        said = "; ".join(f"{run_id}: {plain(label)}" for run_id, label in answer.items())
        column.caption(f"#{index}, a {plain(truth)} · {said}")
