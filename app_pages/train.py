"""Train: start a background training job from a form and watch it; one job at a time.

The form's values are validated once, by `parse_config`; the typed config goes to `start_job`.
"""

import streamlit as st

from cifar.config import ConfigError, parse_config
from cifar.runs import FAMILIES, RunError, check_run_id, run_path
from dashboard import train_sections
from dashboard.text import MODEL_TITLES

COLUMNS = 3

st.title("Train a model")
st.caption(
    "Each job is `python -m cifar train ...` in the background; it keeps running if you leave this "
    "page. A finished run appears in Comparison."
)
train_sections.job_monitor()

for tab, model in zip(st.tabs([MODEL_TITLES[m] for m in FAMILIES]), FAMILIES, strict=True):
    key = f"train-{model}"
    with tab:
        # ------------------------------------------------------------------------- the form
        fields = train_sections.form_fields(model)
        values = {}
        for first in range(0, len(fields), COLUMNS):
            cells = st.columns(COLUMNS, vertical_alignment="bottom")
            for cell, row in zip(cells, fields[first : first + COLUMNS], strict=False):
                with cell:
                    values[row["name"]] = train_sections.field_input(row, key)
        run_id = st.text_input(
            "Run id (optional)",
            key=f"{key}-run-id",
            placeholder=f"{model}-<date>-<time>",
            help="the folder name under artifacts/runs/; letters, digits, '.', '_' or '-'",
        ).strip()

        # ------------------------------------------------------------------------- checks
        problems = []
        try:
            config = parse_config(model, values)
        except ConfigError as error:
            config = None
            problems.append(str(error))
        if run_id:
            try:
                if run_path(check_run_id(run_id)).exists():
                    problems.append(f"run id: a run {run_id!r} exists already; choose another")
            except RunError as error:
                problems.append(f"run id: {error}")
        for problem in problems:
            st.error(problem)
        if config is not None:
            st.code(train_sections.command_line(config, run_id), language="bash")
            if model == "transfer":
                train_sections.feature_status(config)

        # ------------------------------------------------------------------------- start
        if (
            st.button("Start training", key=f"{key}-start", type="primary", disabled=bool(problems))
            and not problems
        ):
            train_sections.start(config, run_id or None)
