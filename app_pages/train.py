"""Train: start a background training job from a form and watch it; one job at a time.

The form's values are validated once, by `parse_config`; the typed config goes to `start_job`.
"""

import streamlit as st

from cifar.config import MOST_SEEDS, ConfigError, parse_config
from cifar.service.jobs import seed_runs
from cifar.store.runs import FAMILIES, RunError, run_path
from dashboard import cache, train_sections
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
        train_sections.preset_picker(model, key, cache.runs())
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
        seeds = st.number_input(
            "Seeds",
            min_value=1,
            max_value=MOST_SEEDS,
            value=1,
            key=f"{key}-seeds",
            help="train the same settings with seeds seed, seed + 1, ... one after another: a seed group "
            "that Comparison shows as mean ± spread, and that `python -m cifar compare` can test",
        )

        # ------------------------------------------------------------------------- checks
        problems = []
        try:
            config = parse_config(model, values)
        except ConfigError as error:
            config = None
            problems.append(str(error))
        if run_id:
            try:
                seed = config.seed if config is not None else 0
                taken = [r for r in seed_runs(run_id, seed, seeds).values() if run_path(r).exists()]
                if taken:
                    problems.append(f"run id: a run {taken[0]!r} exists already; choose another")
            except (RunError, ValueError) as error:
                problems.append(f"run id: {error}")
        for problem in problems:
            st.error(problem)
        if config is not None:
            st.code(train_sections.command_line(config, run_id, seeds), language="bash")
            if model == "transfer":
                train_sections.feature_status(config)

        # ------------------------------------------------------------------------- start
        if (
            st.button("Start training", key=f"{key}-start", type="primary", disabled=bool(problems))
            and not problems
        ):
            train_sections.start(config, run_id or None, seeds)
