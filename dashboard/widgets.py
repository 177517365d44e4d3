"""Shared widgets and page sections. Pages call these in order; no work happens at import time.

Widget keys are passed in by the pages (each page uses its own prefix), so two pages never share
a widget's state by accident.
"""

from __future__ import annotations

import math
import os

import pandas as pd
import streamlit as st

from cifar import plots, views
from cifar.config import REFERENCE_FIGURES
from cifar.runs import Run
from dashboard import cache

FETCH = "python -m cifar fetch"
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]


def percent(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2%}"


# ----------------------------------------------------------------------------- guards


def require_runs(runs: list[Run]) -> None:
    """The empty state: no run folders yet. Stops the page."""
    if runs:
        return
    st.info(
        "**No runs yet.** This page shows trained runs from `artifacts/runs/`. Train one on the "
        "**Train** page, or from a terminal:"
    )
    st.code(
        "python -m cifar fetch\n"
        "python -m cifar train baseline --run-id baseline-reference\n"
        "python -m cifar train transfer --run-id transfer-reference",
        language="bash",
    )
    st.stop()


def run_problems() -> None:
    problems = cache.run_problems()
    if problems:
        with st.expander(f"{len(problems)} run folder(s) could not be read", icon=":material/warning:"):
            for problem in problems:
                st.text(problem)


def run_picker(
    runs: list[Run],
    key: str,
    label: str = "Runs",
    default: list[str] | None = None,
    help: str | None = None,
    max_selections: int | None = None,
) -> list[Run]:
    """A multiselect of runs (shown with model and test accuracy); returns the chosen runs."""
    by_id = {run.run_id: run for run in runs}
    default = [rid for rid in (default or views.default_selection(runs)) if rid in by_id]
    default = default[:max_selections] if max_selections else default
    chosen = st.multiselect(
        label,
        options=list(by_id),
        default=default,
        format_func=lambda rid: views.describe_run(by_id[rid]),
        key=key,
        help=help,
        max_selections=max_selections,
    )
    return [by_id[rid] for rid in chosen]


def chart(figure, key: str) -> None:
    st.plotly_chart(figure, key=key, config={"displaylogo": False})


# ----------------------------------------------------------------------------- overview


def headline(runs: list[Run]) -> None:
    """Headline accuracy of each model beside the write-up's figures."""
    table = views.headline_table(runs)
    columns = st.columns(len(views.MODELS))
    for column, (_, row) in zip(columns, table.iterrows(), strict=True):
        model = row["model"]
        reference = REFERENCE_FIGURES[model]
        with column, st.container(border=True):
            st.markdown(f"**{views.MODEL_TITLES[model]}**")
            if pd.isna(row["run"]):
                st.info(
                    f"No {model} run yet. Write-up: {percent(reference['test_accuracy'])} test.\n\n"
                    f"`python -m cifar train {model} --run-id {views.REFERENCE_RUN_IDS[model]}`"
                )
                continue
            test = row["test_accuracy"]
            delta = (
                f"{(test - reference['test_accuracy']) * 100:+.2f} pp vs write-up"
                if test is not None
                else None
            )
            st.metric("Test accuracy", percent(test), delta=delta, delta_color="off")
            write_up_train = reference["train_accuracy"]
            st.caption(
                f"Run `{row['run']}` · train {percent(row['train_accuracy'])} · write-up: "
                f"{percent(write_up_train) + ' train / ' if write_up_train else ''}"
                f"{percent(reference['test_accuracy'])} test"
            )
            best = views.best_run(runs, model)
            if best is not None and best.run_id != row["run"]:
                best_test = views.test_accuracy(best)
                st.metric(
                    f"Best run: {best.run_id}",
                    percent(best_test),
                    delta=f"{(best_test - reference['test_accuracy']) * 100:+.2f} pp vs write-up",
                    delta_color="off",
                )
    if table["run"].notna().any():
        chart(plots.headline_bars(table), key="overview-headline-chart")


def assets_status() -> dict[str, bool]:
    from cifar.assets import DATASET_OVERRIDE_ENV, cifar10_available, weights_available

    data, weights = cifar10_available(), weights_available()
    left, right = st.columns(2)
    with left:
        if data and os.environ.get(DATASET_OVERRIDE_ENV):
            st.warning(f"CIFAR-10 replaced by a small test set (`{DATASET_OVERRIDE_ENV}` is set).")
        elif data:
            st.success("CIFAR-10 is cached and verified.")
        else:
            st.warning(f"CIFAR-10 is not cached: the gallery needs it. Run `{FETCH}`.")
    with right:
        if weights:
            st.success("InceptionV3 ImageNet weights are cached.")
        else:
            st.warning(f"InceptionV3 weights are not cached: the transfer model needs them. Run `{FETCH}`.")
    st.caption(feature_cache_summary())
    return {"data": data, "weights": weights}


def feature_cache_summary() -> str:
    from cifar.config import keras_home
    from cifar.features import cache_inventory

    sets = cache_inventory(check_chunks=False)
    obsolete = [s for s in sets if s.obsolete]
    folder = views.home_relative(keras_home() / "features")
    text = f"Feature cache: {len(sets) - len(obsolete)} feature set(s), "
    text += f"{sum(s.megabytes for s in sets) / 1000:.1f} GB in `{folder}`."
    if obsolete:
        text += f" {len(obsolete)} obsolete: `python -m cifar features --prune` removes them."
    return text


def next_steps(runs: list[Run], status: dict[str, bool]) -> None:
    lines = [f"# {what}\n{command}" for what, command in views.next_steps(runs, **_status_args(status))]
    st.code("\n\n".join(lines), language="bash")


def _status_args(status: dict[str, bool]) -> dict[str, bool]:
    return {"data_cached": status["data"], "weights_cached": status["weights"]}


def active_job_note() -> None:
    from cifar.jobs import active_job

    job = active_job()
    if job is not None:
        st.info(f"Training job `{job.run_id}` is running ({job.progress:.0%}): see the **Train** page.")


# ----------------------------------------------------------------------------- comparison


def runs_dataframe(chosen: list[Run], key: str) -> pd.DataFrame:
    from cifar.runs import runs_table

    table = runs_table(chosen)
    percent_column = st.column_config.NumberColumn(format="percent")
    st.dataframe(
        table,
        key=key,
        hide_index=True,
        column_config={
            "run": st.column_config.TextColumn(pinned=True),
            **{name: percent_column for name in ("train_accuracy", "val_accuracy", "test_accuracy")},
            "seconds": st.column_config.NumberColumn(format="%.0f s"),
        },
    )
    return table


def hyperparameter_chart(table: pd.DataFrame, key: str) -> None:
    parameters = views.hyperparameter_columns(table)
    if not parameters:
        return
    left, right = st.columns(2)
    default = parameters.index("learning_rate") if "learning_rate" in parameters else 0
    parameter = left.selectbox("Hyperparameter", parameters, index=default, key=f"{key}-parameter")
    metric = right.selectbox(
        "Result", ["test_accuracy", "train_accuracy", "val_accuracy", "seconds"], key=f"{key}-metric"
    )
    chart(plots.hyperparameter_scatter(table, parameter, metric), key=f"{key}-chart")


# ----------------------------------------------------------------------------- per class


def per_class_section(chosen: list[Run], key: str) -> None:
    reports = {run.run_id: cache.report(run) for run in chosen}
    metric = st.segmented_control(
        "Metric", ["precision", "recall", "f1"], default="f1", key=f"{key}-metric", required=True
    )
    chart(plots.per_class_bars({rid: r.per_class for rid, r in reports.items()}, metric), key=f"{key}-bars")
    table = pd.concat({rid: r.per_class for rid, r in reports.items()}, axis=1)
    st.dataframe(
        table.style.format("{:.3f}", subset=[c for c in table.columns if c[1] != "support"]), height="content"
    )


def confusion_section(chosen: list[Run], key: str) -> None:
    normalized = st.toggle("Normalise each row (share of the true class)", key=f"{key}-normalized")
    for start in range(0, len(chosen), 2):
        for column, run in zip(st.columns(2), chosen[start : start + 2], strict=False):
            report = cache.report(run)
            matrix = report.confusion_normalized if normalized else report.confusion
            with column:
                chart(
                    plots.confusion_heatmap(matrix, normalized, title=run.run_id), key=f"{key}-{run.run_id}"
                )


def most_confused_section(chosen: list[Run], top: int = 10) -> None:
    columns = st.columns(len(chosen))
    for column, run in zip(columns, chosen, strict=True):
        with column:
            st.markdown(f"**{run.run_id}**")
            pairs = cache.report(run).most_confused.head(top)
            st.dataframe(pairs, hide_index=True, height="content")


def disagreement_section(a: Run, b: Run, key: str) -> None:
    from cifar.evaluate import agreement, disagreement_matrix

    if len(a.test_labels) != len(b.test_labels) or (a.test_labels != b.test_labels).any():
        st.info(f"`{a.run_id}` and `{b.run_id}` were tested on different images; nothing to compare.")
        return
    shares = agreement(a, b)
    columns = st.columns(5)
    for column, (name, label) in zip(
        columns,
        [
            ("agree", "Same prediction"),
            ("both_right", "Both right"),
            ("only_a_right", f"Only {a.run_id} right"),
            ("only_b_right", f"Only {b.run_id} right"),
            ("both_wrong", "Both wrong"),
        ],
        strict=True,
    ):
        column.metric(label, percent(shares[name]))
    chart(plots.disagreement_bars(disagreement_matrix(a, b)), key=f"{key}-chart")


# ----------------------------------------------------------------------------- misclassified


def require_test_set():
    """The cached CIFAR-10 data, or an info box saying how to fetch it (stops the page)."""
    from cifar.assets import cifar10_available

    if not cifar10_available():
        st.info(
            "The gallery shows CIFAR-10 test images, which are not cached on this machine. "
            f"Run `{FETCH}` once (it downloads and verifies about 170 MB), then reload this page."
        )
        st.stop()
    try:
        return cache.cifar10()
    except Exception as error:  # noqa: BLE001 (a broken cache is reported, never a traceback)
        st.error(f"Could not read the cached CIFAR-10: {error}. Run `{FETCH}` again.")
        st.stop()


def tested_on(chosen: list[Run], labels) -> list[Run]:
    """The runs whose test labels match the cached test set (a warning names the others)."""
    matching = []
    for run in chosen:
        n = len(run.test_labels)
        if n <= len(labels) and (run.test_labels == labels[:n]).all():
            matching.append(run)
        else:
            st.warning(f"`{run.run_id}` was tested on other images than the cached test set; left out.")
    return matching


def gallery_filters(chosen: list[Run], classes: list[str], key: str) -> views.GalleryFilter:
    ids = [run.run_id for run in chosen]
    first, second, third = st.columns(3)
    true_classes = first.multiselect("True class", classes, key=f"{key}-true")
    model = second.selectbox(
        "Mistakes of",
        [None, *ids],
        format_func=lambda rid: "any chosen run" if rid is None else rid,
        key=f"{key}-model",
    )
    predicted = third.multiselect("Predicted class", classes, key=f"{key}-predicted")
    left, right = st.columns(2)
    only_one = left.toggle(
        "Only images exactly one run gets wrong", key=f"{key}-only-one", disabled=len(ids) < 2
    )
    sort = right.radio(
        "Order",
        ["loss", "index"],
        horizontal=True,
        key=f"{key}-sort",
        format_func=lambda s: "highest loss first" if s == "loss" else "test-set order",
    )
    return views.GalleryFilter(tuple(true_classes), tuple(predicted), model, only_one and len(ids) > 1, sort)


def gallery(table: pd.DataFrame, images, chosen: list[Run], key: str, per_row: int = 6) -> None:
    """A page of upscaled test images with the true label and every run's prediction."""
    if table.empty:
        st.info("No misclassified test image matches these filters.")
        return
    left, right = st.columns(2)
    size = left.selectbox("Images per page", [24, 48, 96], key=f"{key}-page-size")
    pages = max(1, math.ceil(len(table) / size))
    page = right.number_input(f"Page (of {pages})", 1, pages, 1, key=f"{key}-page")
    st.caption(
        f"{len(table):,} images match; showing {size * (page - 1) + 1}–{min(len(table), size * page)}."
    )
    shown = table.iloc[size * (page - 1) : size * page]
    for start in range(0, len(shown), per_row):
        columns = st.columns(per_row)
        for column, (_, row) in zip(columns, shown.iloc[start : start + per_row].iterrows(), strict=False):
            with column:
                st.image(views.upscale(images[int(row["index"])], 96), width=96)
                lines = [f"#{int(row['index'])} · true **{row['true']}**"]
                for run in chosen:
                    mark = ":green[✓]" if row[f"correct:{run.run_id}"] else ":red[✗]"
                    lines.append(
                        f"{mark} {run.run_id}: {row[f'predicted:{run.run_id}']} "
                        f"{row[f'confidence:{run.run_id}']:.0%}"
                    )
                st.caption("  \n".join(lines))


# ----------------------------------------------------------------------------- classify


def image_input(key: str):
    """An uploaded file or a camera photo, decoded; None before there is one. Errors: st.error."""
    from cifar.predict import ImageError, open_image

    if st.toggle("Use the camera", key=f"{key}-camera"):
        source = st.camera_input("Take a photo", key=f"{key}-camera-input")
    else:
        source = st.file_uploader(
            "Upload an image (PNG, JPEG, WebP, BMP, GIF, TIFF)", type=IMAGE_TYPES, key=f"{key}-upload"
        )
    if source is None:
        return None
    try:
        return open_image(source.getvalue())
    except ImageError as error:
        st.error(f"Cannot read {source.name}: {error}")
        st.stop()


def backbone_missing(run: Run) -> bool:
    from cifar.assets import weights_available

    if run.model != "transfer":
        return False
    return not weights_available(run.backbone_source)


def predict_all(chosen: list[Run], image, top_k: int) -> dict[str, list[tuple[str, float]]]:
    """Each run's top-k; a run whose model cannot load gets a warning, the others still answer."""
    from cifar.predict import ImageError

    results = {}
    for run in chosen:
        if backbone_missing(run):
            st.warning(
                f"`{run.run_id}`: the InceptionV3 backbone weights are not cached, so the transfer "
                f"model cannot classify. Run `{FETCH}` to download them."
            )
            continue
        if run.trained_on_faulty_resize:
            st.caption(
                f"`{run.run_id}` was trained before 2026-11-25 on features of XLA's faulty bilinear "
                "resize; the classifier now resizes correctly, so its answers can differ a little "
                "from its saved test predictions. Retraining it recomputes the features."
            )
        try:
            results[run.run_id] = cache.predictor(run).predict(image, top_k=top_k)
        except ImageError as error:
            st.error(f"Cannot classify this image: {error}")
        except Exception as error:  # noqa: BLE001 (one model failing must not hide the others)
            st.warning(f"`{run.run_id}` cannot classify: {error}")
    return results


def model_view(image):
    """The 32 x 32 pixels the model gets, upscaled (nearest) so a person can see them."""
    from cifar.predict import as_model_input

    return views.upscale(as_model_input(image), 224)


def top_k_table(predictions: dict[str, list[tuple[str, float]]]) -> None:
    frame = views.top_k_frame(predictions).pivot(
        index="rank", columns="model", values=["class", "probability"]
    )
    frame = frame.swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    frame.columns = [f"{model} {field}" for model, field in frame.columns]
    st.dataframe(
        frame,
        column_config={
            column: st.column_config.NumberColumn(format="percent")
            for column in frame.columns
            if column.endswith("probability")
        },
    )
