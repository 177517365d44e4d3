"""Sections of the Train page: one form input per hyperparameter, the feature-cache note, the
Start button's call, and the live job monitor (a fragment that reruns every 2 s)."""

from __future__ import annotations

import math

import streamlit as st

from cifar.analysis import plots
from cifar.config import allowed_range, field_table
from cifar.modeling.distribute import bfloat16_unit
from cifar.store.runs import RunError
from dashboard import cache, text
from dashboard.pages import page_file

LAST_JOB = "train-last-job"


def form_fields(model: str) -> list[dict]:
    """`field_table` rows, switches last (the grid stays aligned), with a step for float fields and
    what this machine would compute bfloat16 with in `precision`'s help."""
    rows = []
    for row in field_table(model):
        row = dict(row)
        if row["name"] == "precision" and (unit := bfloat16_unit()):
            row["help"] = f"{row['help']} · {text.BFLOAT16_HERE[unit]}"
        if row["type"] == "float":
            default = float(row["default"])
            row["step"] = 10 ** math.floor(math.log10(default)) if default > 0 else 0.01
        rows.append(row)
    return sorted(rows, key=lambda row: row["type"] == "bool")


def _typed(row: dict, value):
    """A config value as its input widget holds it."""
    kinds = {"bool": bool, "int": int, "float": float}
    return kinds[row["type"]](value) if row["type"] in kinds else value


def field_input(row: dict, key: str):
    """One input for one hyperparameter, starting at the config's default (or a preset's value,
    `apply_preset`), with its allowed range in the help."""
    label, name = row["name"].replace("_", " "), row["name"]
    limits = allowed_range(row)
    help_text = " · ".join(part for part in (row["help"], limits and f"allowed: {limits}") if part) or None
    key = f"{key}-{name}"
    st.session_state.setdefault(key, _typed(row, row["default"]))  # the widgets take their value from here
    if row["type"] == "choice":
        return st.selectbox(label, row["choices"], key=key, help=help_text)
    if row["type"] == "bool":
        return st.toggle(label, key=key, help=help_text)
    # Numbers get no min/max: Streamlit would silently keep the last valid value for an out-of-range
    # one; the typed value goes to parse_config, whose error names the field and disables Start.
    if row["type"] == "int":
        return st.number_input(label, step=1, key=key, help=help_text)
    return st.number_input(label, step=float(row["step"]), format="%g", key=key, help=help_text)


DEFAULTS = "the defaults (the write-up's recipe)"


def preset_picker(model: str, key: str, runs: list) -> None:
    """'Start from': the defaults, or any finished run of this family (its settings fill the form)."""
    from cifar.store.runs import describe_run

    by_id = {run.run_id: run for run in runs if run.model == model and not run.config_problem}
    st.selectbox(
        "Start from",
        [DEFAULTS, *by_id],
        key=f"{key}-preset",
        format_func=lambda name: name if name == DEFAULTS else f"the settings of {describe_run(by_id[name])}",
        on_change=apply_preset,
        args=(model, key, by_id),
        help="fills the form with a committed recipe or any run's settings; change any field after",
    )


def apply_preset(model: str, key: str, by_id: dict) -> None:
    """Set every field of the form to the chosen run's config (today's defaults for a field it
    predates), or to the defaults."""
    from cifar.config import load_config

    chosen = st.session_state[f"{key}-preset"]
    values = {} if chosen == DEFAULTS else load_config(by_id[chosen].hyperparameters).model_dump()
    for row in form_fields(model):
        st.session_state[f"{key}-{row['name']}"] = _typed(row, values.get(row["name"], row["default"]))


def command_line(config, run_id: str, seeds: int = 1) -> str:
    """The CLI command that trains `config`: only the fields that differ from the defaults."""
    defaults = type(config)().model_dump()
    changed = [f"--{k} {v}" for k, v in config.model_dump().items() if v != defaults[k]]
    options = [*(["--run-id", run_id] if run_id else []), *(["--seeds", str(seeds)] if seeds > 1 else [])]
    return " ".join([f"python -m cifar train {config.model}", *changed, *options])


def feature_status(config) -> None:
    """Before a transfer job starts: cached features (fast head retrain) or extraction time."""
    from cifar.sources.assets import cifar10_available, weights_available

    missing = [
        name
        for name, cached in (
            ("CIFAR-10", cifar10_available()),
            ("the InceptionV3 weights", weights_available(config.weights)),
        )
        if not cached
    ]
    if missing:
        st.warning(
            f"Not cached yet: {' and '.join(missing)}. The job downloads them first (or run "
            "`python -m cifar fetch`), then extracts the features, which is slow on a CPU."
        )
        return
    try:
        needed, seconds = cache.feature_plan(config)
    except Exception as error:  # noqa: BLE001 (the check is advice; a failure must not block training)
        st.warning(text.plain(f"Could not check the feature cache: {error}"))
        return
    (st.info if needed else st.success)(text.feature_plan(needed, seconds))


def start(config, run_id: str | None, seeds: int = 1) -> None:
    """Start the job (one at a time) and remember it for the monitor."""
    from cifar.service.jobs import JobBusy, start_job

    try:
        job = start_job(config, run_id=run_id, seeds=seeds)
    except JobBusy as error:
        st.warning(f"Only one training job runs at a time: {error}")
    except RunError as error:
        st.error(str(error))
    else:
        st.session_state[LAST_JOB] = job.run_id
        st.toast(f"Started {job.run_id}")
        st.rerun()


@st.fragment(run_every=2)
def job_monitor() -> None:
    """The running job's progress and curves, refreshed every 2 s; then failed / cancelled jobs."""
    from cifar.service.jobs import active_job, job_history, job_status
    from cifar.service.standby import warm_up

    job = active_job()
    if job is not None:
        with st.container(border=True):
            st.markdown(f"**Running: `{job.run_id}`**")
            st.progress(
                min(max(job.progress, 0.0), 1.0),
                text=text.plain(f"{job.phase or job.state}: {job.message or '…'}"),
            )
            history = job_history(job.run_id)
            if history is not None and not history.empty:
                st.plotly_chart(plots.learning_curves({job.run_id: history}, title=None), key="train-live")
            else:
                st.caption("Curves appear after the first epoch.")
            st.button("Cancel the job", key="train-cancel", on_click=_cancel, args=(job.run_id,))
    else:
        last = st.session_state.get(LAST_JOB)
        if last and job_status(last).state == "finished":
            finished_job(last)
        else:
            st.caption("No training job is running.")
        warm_up()  # a job process with TensorFlow imported, waiting for the next Start
    stopped_jobs()


def finished_job(run_id: str) -> None:
    """What a finished job made: its test accuracy with its interval, and where to look at it."""
    from cifar.store.runs import RunError, load_run

    try:
        accuracy = load_run(run_id).test_accuracy_estimate
    except RunError as error:  # replaced or removed since: say so rather than fail the monitor
        st.warning(text.plain(f"Run `{run_id}` finished, but it cannot be read now: {error}"))
        return
    st.success(
        f"Run `{run_id}` finished: test accuracy {accuracy.value:.2%} (95 % interval "
        f"{accuracy.low:.2%}-{accuracy.high:.2%}). It is listed in Comparison and offered on Classify."
    )
    left, right = st.columns(2)
    left.page_link(page_file("comparison"), label="Open Comparison", icon=":material/bar_chart:")
    right.page_link(page_file("classify"), label="Try it on Classify", icon=":material/image_search:")


def stopped_jobs() -> None:
    """Failed and cancelled jobs, with their message, the log's end and a discard button."""
    from cifar.service.jobs import discard_job, list_jobs, log_path

    stopped = [job for job in list_jobs() if job.state in ("failed", "cancelled")]
    if not stopped:
        return
    st.markdown("**Failed or cancelled jobs**")
    for job in stopped:
        with st.container(border=True):
            color = "orange" if job.state == "cancelled" else "red"
            st.markdown(
                f":{color}[**{job.state}**] `{job.run_id}`: {text.plain(job.message or 'no message')}"
            )
            log = log_path(job.run_id)
            if log.is_file():
                with st.expander("End of the job's log"):
                    st.code("\n".join(log.read_text(errors="replace").splitlines()[-25:]) or "(empty)")
            st.button("Discard", key=f"train-discard-{job.run_id}", on_click=discard_job, args=(job.run_id,))


def _cancel(run_id: str) -> None:
    from cifar.service.jobs import JobBusy, cancel_job

    try:
        cancel_job(run_id)
    except JobBusy as error:
        st.warning(text.plain(str(error)))
