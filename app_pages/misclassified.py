"""Misclassified samples: test images a model gets wrong, with every chosen run's prediction."""

import math

import streamlit as st

from cifar.analysis.evaluate import MistakeFilter, misclassified
from cifar.sources.assets import cifar10_available
from dashboard import cache
from dashboard.explain_sections import explanation_row
from dashboard.text import FETCH, plain
from dashboard.widgets import require_runs, run_picker, upscale

PER_ROW = 6

st.title("Misclassified samples")
runs = cache.runs()
require_runs(runs)

# ----------------------------------------------------------------------------- the cached test set
if not cifar10_available():
    st.info(
        "The gallery shows CIFAR-10 test images, which are not cached on this machine. "
        f"Run `{FETCH}` once (it downloads and verifies about 170 MB), then reload this page."
    )
    st.stop()
try:
    data = cache.cifar10()
except Exception as error:  # noqa: BLE001 (a broken cache is reported, never a traceback)
    st.error(f"Could not read the cached CIFAR-10: {plain(error)}. Run `{FETCH}` again.")
    st.stop()

chosen = []
for run in run_picker(runs, key="misclassified-runs", label="Runs", max_selections=4):
    n = len(run.test_labels)
    if n <= len(data.y_test) and (run.test_labels == data.y_test[:n]).all():
        chosen.append(run)
    else:
        st.warning(f"`{run.run_id}` was tested on other images than the cached test set; left out.")
if not chosen:
    st.info("Choose at least one run tested on the cached test set.")
    st.stop()
ids = [run.run_id for run in chosen]
classes = chosen[0].class_names

# ----------------------------------------------------------------------------- filters
first, second, third = st.columns(3)
true_classes = first.multiselect("True class", classes, key="misclassified-filter-true")
mistakes_of = second.selectbox(
    "Mistakes of",
    [None, *ids],
    format_func=lambda rid: "any chosen run" if rid is None else rid,
    key="misclassified-filter-model",
)
predicted = third.multiselect("Predicted class", classes, key="misclassified-filter-predicted")
left, right = st.columns(2)
only_one = left.toggle(
    "Only images exactly one run gets wrong", key="misclassified-filter-only-one", disabled=len(ids) < 2
)
sort = right.radio(
    "Order",
    ["loss", "index"],
    horizontal=True,
    key="misclassified-filter-sort",
    format_func=lambda s: "highest loss first" if s == "loss" else "test-set order",
)
spec = MistakeFilter(tuple(true_classes), tuple(predicted), mistakes_of, only_one and len(ids) > 1, sort)
table = misclassified(cache.per_image_table(chosen, len(data.x_test)), ids, spec)

# ----------------------------------------------------------------------------- gallery
if table.empty:
    st.info("No misclassified test image matches these filters.")
    st.stop()
left, right = st.columns(2)
size = left.selectbox("Images per page", [24, 48, 96], key="misclassified-gallery-page-size")
pages = max(1, math.ceil(len(table) / size))
page = right.number_input(f"Page (of {pages})", 1, pages, 1, key="misclassified-gallery-page")
st.caption(f"{len(table):,} images match; showing {size * (page - 1) + 1}–{min(len(table), size * page)}.")
shown = table.iloc[size * (page - 1) : size * page]
for start in range(0, len(shown), PER_ROW):
    for column, (_, row) in zip(
        st.columns(PER_ROW), shown.iloc[start : start + PER_ROW].iterrows(), strict=False
    ):
        with column:
            st.image(upscale(data.x_test[int(row["index"])], 96), width=96)
            lines = [f"#{int(row['index'])} · true **{plain(row['true'])}**"]  # class names: any text
            for rid in ids:
                mark = ":green[✓]" if row[f"correct:{rid}"] else ":red[✗]"
                predicted_class = plain(row[f"predicted:{rid}"])
                lines.append(f"{mark} {rid}: {predicted_class} {row[f'confidence:{rid}']:.0%}")
            st.caption("  \n".join(lines))

st.subheader("Why: open an image")
index = st.selectbox(
    "Test image", list(shown["index"].astype(int)), format_func=lambda i: f"#{i}", key="misclassified-open"
)
st.image(upscale(data.x_test[index], 96), caption=f"#{index}: {plain(classes[int(data.y_test[index])])}")
for run in chosen:
    explanation_row(run, data.x_test[index], "cifar", None)
