"""Plotly figures for the dashboard: plain data (from `cifar.analysis.evaluate`,
`cifar.store.runs`) in, Figure out.

Nothing here imports Streamlit or TensorFlow, so every figure can be built and checked in a test.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = px.colors.qualitative.Plotly
MODEL_COLORS = {
    "baseline": "#636EFA",
    "transfer": "#EF553B",
    "ensemble": "#00CC96",
    "reference": "#AB63FA",
    "write-up": "#7F7F7F",
}
SPLIT_COLORS = {"train": "#636EFA", "validation": "#00CC96", "test": "#EF553B"}
RUN_PALETTE = px.colors.qualitative.D3 + px.colors.qualitative.Dark24  # D3: ten hues far apart
MODEL_SYMBOLS = {"baseline": "circle", "transfer": "diamond", "ensemble": "star"}


def run_colours(run_ids) -> dict[str, str]:
    """One colour per run for every chart of the dashboard: the runs in name order along the
    palette, so a run keeps its colour from chart to chart and page to page (a seed group takes
    its first run's colour)."""
    return {run_id: RUN_PALETTE[i % len(RUN_PALETTE)] for i, run_id in enumerate(sorted(set(run_ids)))}


def _colour(colours: dict[str, str] | None, name: str, i: int) -> str:
    return (colours or {}).get(name) or PALETTE[i % len(PALETTE)]


def _layout(fig: go.Figure, title: str | None = None, height: int = 380) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "y": 0.98, "yanchor": "top"},
        height=height,
        margin={"l": 10, "r": 10, "t": 90 if title else 50, "b": 10},
        legend={
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.02,
            "x": 1,
            "xanchor": "right",
            "title": None,
        },
    )
    return fig


def headline_bars(table: pd.DataFrame) -> go.Figure:
    """Test accuracy per model: the best run, the write-up's recipe rerun, and the write-up's figure.

    `table`: rows from `runs.headline_table`.
    """
    fig = go.Figure()
    for source, column, color in (
        ("best run", "test_accuracy", None),
        ("the write-up's recipe, rerun", "reference_test_accuracy", MODEL_COLORS["reference"]),
        ("the write-up", "write_up_test_accuracy", MODEL_COLORS["write-up"]),
    ):
        values = [None if pd.isna(value) else float(value) for value in table[column]]
        fig.add_bar(
            name=source,
            x=list(table["model"]),
            y=values,
            text=["" if value is None else f"{value:.1%}" for value in values],
            textposition="outside",
            marker_color=color,
        )
    fig.update_layout(barmode="group", yaxis={"tickformat": ".0%", "range": [0, 1.08]})
    return _layout(fig, "Test accuracy: the best runs, the write-up's recipes rerun, the write-up")


def accuracy_bars(table: pd.DataFrame) -> go.Figure:
    """Train / validation / test accuracy per run, side by side (a `tables.runs_table`)."""
    fig = go.Figure()
    for split, color in SPLIT_COLORS.items():
        column = f"{'val' if split == 'validation' else split}_accuracy"
        values = pd.to_numeric(table[column], errors="coerce")
        fig.add_bar(
            name=split,
            x=table["run"],
            y=values,
            marker_color=color,
            error_y=_interval_bars(table, column),
            text=[f"{v:.1%}" if pd.notna(v) else "" for v in values],
            textposition="outside",
        )
    fig.update_layout(barmode="group", yaxis={"tickformat": ".0%", "range": [0, 1.08]})
    return _layout(fig, "Accuracy per run (test: with its 95 % interval)")


def _interval_bars(table: pd.DataFrame, column: str) -> dict | None:
    """Plotly error bars from a table's `<column>_low` / `_high` columns, if it has them."""
    if f"{column}_low" not in table:
        return None
    values = pd.to_numeric(table[column], errors="coerce")
    high = pd.to_numeric(table[f"{column}_high"], errors="coerce") - values
    low = values - pd.to_numeric(table[f"{column}_low"], errors="coerce")
    return {"type": "data", "symmetric": False, "array": high.tolist(), "arrayminus": low.tolist()}


def group_curves(groups: dict[str, list[pd.DataFrame]], colours: dict[str, str] | None = None) -> go.Figure:
    """Per seed group, the mean accuracy per epoch over its seeds with a band of ± one standard
    deviation: training solid, validation dashed."""
    fig = go.Figure()
    for i, (name, histories) in enumerate(groups.items()):
        color = _colour(colours, name, i)
        for metric, dash, label in (("accuracy", "solid", "train"), ("val_accuracy", "dash", "validation")):
            columns = [h[metric].reset_index(drop=True) for h in histories if metric in h]
            if len(columns) < 2:
                continue
            frame = pd.concat(columns, axis=1)  # epochs x seeds (a run that stopped early: NaN)
            mean, spread = frame.mean(axis=1), frame.std(axis=1, ddof=1).fillna(0)
            epochs = list(range(1, len(frame) + 1))
            fig.add_scatter(
                x=epochs + epochs[::-1],
                y=list(mean + spread) + list((mean - spread)[::-1]),
                fill="toself",
                fillcolor=color,
                opacity=0.2,
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=name,
            )
            fig.add_scatter(
                x=epochs,
                y=mean,
                mode="lines+markers",
                name=f"{name} {label} (mean of {len(columns)} seeds)",
                legendgroup=name,
                line={"color": color, "dash": dash},
            )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="accuracy", tickformat=".0%")
    return _layout(fig, "Seed groups: mean ± one standard deviation", height=420)


def learning_curves(
    histories: dict[str, pd.DataFrame],
    title: str | None = "Learning curves",
    colours: dict[str, str] | None = None,
) -> go.Figure:
    """Accuracy and loss per epoch: training solid, validation dashed, one colour per run."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss"), horizontal_spacing=0.08)
    for i, (run_id, history) in enumerate(histories.items()):
        color = _colour(colours, run_id, i)
        epochs = _epochs(history)
        for col, metric in ((1, "accuracy"), (2, "loss")):
            for prefix, dash, label in (("", "solid", "train"), ("val_", "dash", "validation")):
                name = f"{prefix}{metric}"
                if name not in history:
                    continue
                fig.add_scatter(
                    x=epochs,
                    y=history[name],
                    mode="lines+markers",
                    name=f"{run_id} {label}",
                    legendgroup=run_id,
                    showlegend=col == 1,
                    line={"color": color, "dash": dash},
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    _layout(fig, title, height=420)
    fig.update_layout(legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"})
    return fig


def _epochs(history: pd.DataFrame) -> pd.Series:
    if "epoch" in history:
        return history["epoch"] + 1
    return pd.Series(range(1, len(history) + 1))


def hyperparameter_scatter(
    table: pd.DataFrame, parameter: str, metric: str = "test_accuracy", colours: dict[str, str] | None = None
) -> go.Figure:
    """One point per run: a hyperparameter against an accuracy, in the run's colour, its marker
    the model family's."""
    frame = table[["run", "model", parameter, metric]].copy()
    frame[parameter] = frame[parameter].map(lambda v: str(v) if isinstance(v, bool | list | dict) else v)
    fig = _runs_scatter(frame, parameter, metric, colours)
    if metric.endswith("accuracy"):
        fig.update_yaxes(tickformat=".1%")
    fig.update_xaxes(title_text=_words(parameter), type="log" if _spans_decades(frame[parameter]) else None)
    fig.update_yaxes(title_text=_words(metric))
    return _layout(fig, f"{_words(metric)} against {_words(parameter)}")


def _runs_scatter(frame: pd.DataFrame, x: str, y: str, colours: dict[str, str] | None, **options):
    """A point per run (`frame`'s "run" and "model"): the run's colour, its family's marker."""
    fig = px.scatter(
        frame, x=x, y=y, color="run", symbol="model", hover_name="run", color_discrete_map=colours or {},
        symbol_map=MODEL_SYMBOLS, **options,
    )  # fmt: skip
    return fig.update_traces(marker={"size": 12})


def _words(name: str) -> str:
    """A column name as axis text: 'test_accuracy' -> 'test accuracy'."""
    return name.replace("_", " ")


def _spans_decades(values: pd.Series) -> bool:
    """Positive numbers over more than a factor of 20 (learning rates, weight decays): a log axis,
    where 0.001 and 0.01 do not stack at zero beside 1.5."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any() or (numbers <= 0).any() or numbers.empty:
        return False
    return bool(numbers.max() / numbers.min() > 20)


def per_class_bars(
    per_class: dict[str, pd.DataFrame], metric: str = "f1", colours: dict[str, str] | None = None
) -> go.Figure:
    """One bar per class and run for precision, recall or F1 (`Report.per_class`)."""
    fig = go.Figure()
    for i, (run_id, frame) in enumerate(per_class.items()):
        fig.add_bar(
            name=run_id,
            x=list(frame.index),
            y=frame[metric],
            marker_color=_colour(colours, run_id, i),
            error_y=_interval_bars(frame, metric),
        )
    fig.update_layout(barmode="group", yaxis={"tickformat": ".0%", "range": [0, 1]})
    return _layout(fig, f"{metric} per class, with its 95 % interval")


def confusion_heatmap(
    confusion: pd.DataFrame, normalized: bool = False, title: str | None = None
) -> go.Figure:
    """Rows: true class, columns: predicted class; counts or row shares."""
    values = confusion.to_numpy()
    text = [[f"{v:.0%}" if normalized else f"{int(v)}" for v in row] for row in values]
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=list(confusion.columns),
            y=list(confusion.index),
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1 if normalized else None,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="true class")
    fig.update_xaxes(title_text="predicted class", side="bottom", tickangle=-45)
    fig.update_traces(colorbar={"thickness": 12})
    _layout(fig, title, height=480)
    fig.update_layout(margin={"t": 40})
    return fig


def disagreement_bars(table: pd.DataFrame, colours: dict[str, str] | None = None) -> go.Figure:
    """Per true class: images only one of two runs gets right (`evaluate.disagreement_matrix`'s
    columns, "only RUN right"), each run in its colour."""
    fig = go.Figure()
    for i, column in enumerate(table.columns):
        colour = _colour(colours, column.removeprefix("only ").removesuffix(" right"), i)
        fig.add_bar(name=column, x=list(table.index), y=table[column], marker_color=colour)
    fig.update_layout(barmode="group", yaxis_title="test images")
    return _layout(fig, "Test images only one of the two runs gets right, per true class")


def top_k_bars(frame: pd.DataFrame, colours: dict[str, str] | None = None) -> go.Figure:
    """Each model's top-k class probabilities, grouped by class (`frame`: model, class,
    probability, rank; one row per model and rank)."""
    order = frame.groupby("class")["probability"].max().sort_values(ascending=False).index.tolist()
    models = list(dict.fromkeys(frame["model"]))  # as given: the order of the table beside it
    fig = px.bar(
        frame,
        x="probability",
        y="class",
        color="model",
        orientation="h",
        barmode="group",
        text=frame["probability"].map(lambda p: f"{p:.1%}"),
        category_orders={"class": order, "model": models},
        color_discrete_map=colours or {},
    )
    fig.update_xaxes(tickformat=".0%", range=[0, 1.12])
    fig.update_traces(textposition="outside")
    fig.update_layout(bargap=0.15, bargroupgap=0.05)
    return _layout(fig, "Top predictions", height=min(560, max(240, 80 + 18 * len(order) * len(models))))


def reliability_diagram(tables: dict[str, pd.DataFrame], colours: dict[str, str] | None = None) -> go.Figure:
    """Accuracy against mean confidence per confidence bin, one line per run (`tables`: run id ->
    `calibration.reliability_table`); the diagonal is a perfectly calibrated model."""
    fig = go.Figure()
    fig.add_scatter(
        x=[0, 1],
        y=[0, 1],
        mode="lines",
        name="perfect",
        line={"dash": "dot", "color": MODEL_COLORS["write-up"]},
    )
    for i, (run_id, table) in enumerate(tables.items()):
        shown = table[table["count"] > 0]
        fig.add_scatter(
            x=shown["confidence"],
            y=shown["accuracy"],
            mode="lines+markers",
            name=run_id,
            line={"color": _colour(colours, run_id, i)},
            customdata=shown["count"],
            hovertemplate="confidence %{x:.1%}<br>accuracy %{y:.1%}<br>%{customdata} images",
        )
    fig.update_xaxes(title="mean confidence of the top label", tickformat=".0%", range=[0, 1])
    fig.update_yaxes(title="accuracy", tickformat=".0%", range=[0, 1.02])
    return _layout(fig, "Reliability on the test set", height=420)


def cost_scatter(
    table: pd.DataFrame, front: pd.DataFrame, cost: str, label: str, colours: dict[str, str] | None = None
) -> go.Figure:
    """Test accuracy against a cost column (log scale), a point per run in its colour and its
    family's marker (named in the legend, not on the chart: labels of close runs overlapped),
    with the Pareto front (`cost.pareto_front`) drawn through the runs worth their cost."""
    shown = table.dropna(subset=[cost, "test_accuracy"])
    fig = _runs_scatter(shown, cost, "test_accuracy", colours, log_x=True)
    fig.add_scatter(
        x=front[cost], y=front["test_accuracy"], mode="lines", name="Pareto front",
        line={"dash": "dot", "color": MODEL_COLORS["write-up"], "shape": "hv"},
    )  # fmt: skip
    fig.update_xaxes(title=label)
    fig.update_yaxes(title="test accuracy", tickformat=".1%")  # runs a point apart: ".0%" repeated ticks
    return _layout(fig, None, height=440)  # (the page's subheader names it)


def robustness_lines(
    table: pd.DataFrame, clean: dict[str, float], colours: dict[str, str] | None = None
) -> go.Figure:
    """Accuracy against severity, one panel per corruption, one line per run (`table`:
    `robustness.robustness_table`); severity 0 is the same images uncorrupted (`clean`)."""
    rows = [{"run": run, "corruption": name, "severity": 0, "accuracy": clean[run]}
            for run in table["run"].unique() for name in table["corruption"].unique()]  # fmt: skip
    shown = pd.concat([pd.DataFrame(rows), table], ignore_index=True).sort_values(
        ["run", "corruption", "severity"]
    )
    fig = px.line(
        shown, x="severity", y="accuracy", color="run", facet_col="corruption", facet_col_wrap=5,
        facet_row_spacing=0.09, category_orders={"corruption": list(dict.fromkeys(table["corruption"]))},
        markers=True, color_discrete_map=colours or {},
    )  # fmt: skip
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1].replace("_", " ")))
    fig.update_yaxes(tickformat=".0%", range=[0, 1], title=None)
    fig.update_xaxes(tickvals=[0, 1, 2, 3, 4, 5], title=None)
    return _layout(fig, None, height=640)


def robustness_heatmap(table: pd.DataFrame) -> go.Figure:
    """Mean accuracy over the five severities, corruption x run."""
    matrix = table.pivot_table(
        index="corruption", columns="run", values="accuracy", aggfunc="mean", sort=False
    )
    fig = px.imshow(
        matrix.to_numpy(), x=list(matrix.columns), y=[name.replace("_", " ") for name in matrix.index],
        color_continuous_scale="Viridis", zmin=0, zmax=1, text_auto=".0%", aspect="auto",
    )  # fmt: skip
    fig.update_coloraxes(colorbar={"title": "accuracy", "tickformat": ".0%"})
    return _layout(fig, None, height=120 + 30 * len(matrix))


HOVER_POINT = "#%{customdata[0]}<br>true %{customdata[1]}<br>predicted %{customdata[2]}<extra></extra>"


def feature_map(coordinates, labels, predicted, class_names: list[str], title: str) -> go.Figure:
    """A run's test set in 2-D (`feature_space.project`), coloured by true class; mistakes are
    crosses. Each point's index, true and predicted class show on hover (customdata)."""
    fig = go.Figure()
    for k, name in enumerate(class_names):
        for wrong in (False, True):
            rows = (labels == k) & ((predicted != labels) == wrong)
            fig.add_scattergl(
                x=coordinates[rows, 0], y=coordinates[rows, 1], mode="markers", name=name,
                legendgroup=name, showlegend=not wrong,
                marker={"size": 7 if wrong else 4, "color": PALETTE[k % len(PALETTE)],
                        "symbol": "x" if wrong else "circle", "opacity": 1.0 if wrong else 0.55},
                customdata=[[int(i), name, class_names[int(predicted[i])]] for i in rows.nonzero()[0]],
                hovertemplate=HOVER_POINT,
            )  # fmt: skip
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    return _layout(fig, title, height=560)
