"""Run folders on disk: half-written or hand-corrupted folders are reported and skipped, the
dashboard still renders beside them, and no run id can reach outside artifacts/runs/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cifar.config import artifacts_dir, parse_config
from cifar.service import jobs
from cifar.store import processes
from cifar.store.runs import (
    RunError,
    RunWriter,
    check_run_id,
    list_runs,
    load_run,
    partial_path,
    run_path,
    runs_root,
)
from tests.factory import PAGES, REPO, npz_cifar, plain_id, write_run

LABELS = npz_cifar().y_test  # the test set of the `cifar_npz` the pages read
N = len(LABELS)


def root() -> Path:
    return artifacts_dir()


def good(run_id: str = "good", **kwargs) -> Path:
    return write_run(root(), run_id, "baseline", LABELS, 0.3, epochs=2, **kwargs)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def edit_json(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def edit_hyperparameters(folder: Path, **fields) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit_json(folder / "config.json", config={**config["config"], **fields})


DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError in json.loads


# name: damage done to a good folder. Each must be reported by list_runs(with_problems=...).
HANDLED = {
    "invalid JSON in config.json": lambda f: (f / "config.json").write_text("{not json"),
    "invalid JSON in metrics.json": lambda f: (f / "metrics.json").write_text('{"model": "baseline",'),
    "empty config.json": lambda f: (f / "config.json").write_bytes(b""),
    "binary junk in metrics.json": lambda f: (f / "metrics.json").write_bytes(os.urandom(64)),
    "JSON list instead of object (metrics)": lambda f: (f / "metrics.json").write_text("[1, 2, 3]"),
    "JSON list instead of object (config)": lambda f: (f / "config.json").write_text('["baseline"]'),
    "JSON string instead of object": lambda f: (f / "config.json").write_text('"baseline"'),
    "missing config.json": lambda f: (f / "config.json").unlink(),
    "missing metrics.json": lambda f: (f / "metrics.json").unlink(),
    "missing history.csv": lambda f: (f / "history.csv").unlink(),
    "missing test_predictions.npy": lambda f: (f / "test_predictions.npy").unlink(),
    "config.json is a folder": lambda f: ((f / "config.json").unlink(), (f / "config.json").mkdir()),
    "everything missing (empty folder)": lambda f: [p.unlink() for p in f.iterdir()],
}

# Damage inside files that parse (arrays, fields of the wrong type or range): the reader checks
# every file when it loads the run (issue #13, defects 1 and 2: these crashed five pages).
NOT_HANDLED = {
    "class_names is a number": lambda f: edit_json(f / "config.json", class_names=5),
    "class_names has nine names": lambda f: edit_json(f / "config.json", class_names=list("abcdefghi")),
    "class_names repeat a name": lambda f: edit_json(f / "config.json", class_names=["cat"] * 10),
    "a class name is not a string": lambda f: edit_json(f / "config.json", class_names=[1, *"abcdefghi"]),
    "deeply nested array in config.json": lambda f: (f / "config.json").write_text(DEEP),
    "deeply nested array in metrics.json": lambda f: (f / "metrics.json").write_text(DEEP),
    "deeply nested value in a field": lambda f: edit_json(
        f / "metrics.json", device=json.loads("[" * 900 + "]" * 900)
    ),
    "metrics test_accuracy is a string": lambda f: edit_json(f / "metrics.json", test_accuracy="0.9"),
    "metrics test_accuracy is NaN": lambda f: (f / "metrics.json").write_text('{"test_accuracy": NaN}'),
    "metrics train_accuracy is a list": lambda f: edit_json(f / "metrics.json", train_accuracy=[0.5]),
    "metrics model is unknown": lambda f: edit_json(f / "metrics.json", model=["baseline"]),
    "a hyperparameter of the wrong type": lambda f: edit_hyperparameters(f, learning_rate="fast"),
    "an unknown model in config": lambda f: edit_hyperparameters(f, model="evil"),
    "an unknown weights source": lambda f: edit_json(f / "config.json", assets={"backbone_weights": "x"}),
    "config.json is UTF-16": lambda f: (f / "config.json").write_bytes('{"config": {}}'.encode("utf-16")),
    "config.json is a FIFO": lambda f: ((f / "config.json").unlink(), os.mkfifo(f / "config.json")),
    "empty predictions and labels": lambda f: (
        np.save(f / "test_predictions.npy", np.zeros((0, 10), np.float32)),
        np.save(f / "test_labels.npy", np.zeros(0, np.uint8)),
    ),
    "labels outside 0..9": lambda f: np.save(f / "test_labels.npy", (LABELS + 5).astype(np.uint8)),
    "negative labels": lambda f: np.save(f / "test_labels.npy", LABELS.astype(np.int8) - 1),
    "float labels": lambda f: np.save(f / "test_labels.npy", LABELS.astype(np.float32)),
    "NaN probabilities": lambda f: np.save(f / "test_predictions.npy", np.full((N, 10), np.nan, np.float32)),
    "probabilities beyond float32": lambda f: np.save(f / "test_predictions.npy", np.full((N, 10), 1e300)),
    "integer probabilities": lambda f: np.save(f / "test_predictions.npy", np.ones((N, 10), np.int64)),
    "truncated test_predictions.npy": lambda f: truncate(f / "test_predictions.npy"),
    "test_predictions.npy is 1-D": lambda f: np.save(f / "test_predictions.npy", np.zeros(N, np.float32)),
    "test_predictions.npy has 9 classes": lambda f: np.save(
        f / "test_predictions.npy", np.zeros((N, 9), np.float32)
    ),
    "test_predictions.npy holds pickled objects": lambda f: np.save(
        f / "test_predictions.npy", np.array([{"a": 1}] * N, dtype=object), allow_pickle=True
    ),
    "test_labels.npy shorter than the predictions": lambda f: np.save(
        f / "test_labels.npy", np.zeros(5, np.uint8)
    ),
    "missing test_labels.npy": lambda f: (f / "test_labels.npy").unlink(),
    "config field is a string": lambda f: (f / "config.json").write_text('{"config": "oops"}'),
    "metrics 'finished' is not a number": lambda f: (f / "metrics.json").write_text(
        json.dumps({"model": "baseline", "test_accuracy": 0.5, "finished": "yesterday"})
    ),
}


@pytest.mark.parametrize("damage", list(HANDLED))
def test_corrupt_run_is_reported_and_skipped(damage):
    good("good", finished=1.0)
    HANDLED[damage](good("broken", finished=2.0))
    problems: list[str] = []
    assert [run.run_id for run in list_runs(with_problems=problems)] == ["good"]
    assert len(problems) == 1 and "broken" in problems[0], problems
    with pytest.raises(RunError):
        load_run("broken")


@pytest.mark.parametrize("damage", list(NOT_HANDLED))
def test_corrupt_arrays_and_fields_are_reported_and_skipped(damage):
    good("good", finished=1.0)
    NOT_HANDLED[damage](good("broken", finished=2.0))
    problems: list[str] = []
    assert [run.run_id for run in list_runs(with_problems=problems)] == ["good"]
    assert len(problems) == 1 and "broken" in problems[0], problems
    with pytest.raises(RunError, match=r"'broken'.*(\.json|\.npy)"):  # names the run and the file
        load_run("broken")


# history.csv is a chart's data, not the run's result: a bad one leaves an empty (or partly NaN)
# history, and the run still shows (issue #13, defect 3: these crashed the Comparison page).
BAD_HISTORIES = {
    "empty": b"",
    "random bytes": bytes(range(256)) * 4,
    "only a header": b"epoch,loss,accuracy\n",
    "wrong columns": b"a,b\n1,2\n",
    "text in a number column": b"epoch,loss,accuracy\n0,high,0.5\nx,1.0,inf\n",
    "ragged rows": b"epoch,loss\n0,1,2,3\n1\n",
}


@pytest.mark.parametrize("content", list(BAD_HISTORIES))
def test_a_bad_history_leaves_the_run_with_an_empty_or_numeric_history(content):
    (good("broken") / "history.csv").write_bytes(BAD_HISTORIES[content])
    history = load_run("broken").history
    assert all(history[column].dtype == float for column in history.columns)
    assert not np.isinf(history.to_numpy()).any()
    assert jobs.job_history("broken") is None or not jobs.job_history("broken").empty


def test_leftovers_that_are_not_runs_are_ignored():
    good()
    (runs_root() / "notes.txt").write_text("not a run")
    (runs_root() / ".DS_Store").write_bytes(b"\0\0")
    (runs_root() / ".half.partial").mkdir()  # a job in progress or killed
    (runs_root() / ".half.partial" / "status.json").write_text("{broken")
    (runs_root() / "bad name with spaces").mkdir()
    problems: list[str] = []
    assert [run.run_id for run in list_runs(with_problems=problems)] == ["good"]
    assert len(problems) == 1 and "bad name with spaces" in problems[0]
    assert [job.state for job in jobs.list_jobs()] == ["failed"]


def test_missing_or_unreadable_runs_folder():
    assert list_runs() == []
    artifacts_dir().mkdir(parents=True)
    runs_root().write_text("a file where the folder should be")
    assert list_runs() == []


# ----------------------------------------------------------------------------- escaping artifacts/

ESCAPES = [
    "../x",
    "../../etc",
    "..",
    ".",
    "",
    "/etc",
    "/etc/x",
    "a/b",
    "a\\b",
    "~",
    ".hidden",
    "x/../../y",
    "ok\x00",
    "ok\n",
    "x" * 101,
    None,
    42,
    Path("x"),
]


@pytest.mark.parametrize("run_id", ESCAPES, ids=plain_id)
def test_run_id_cannot_escape_artifacts(run_id, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    for call in (
        load_run,
        run_path,
        partial_path,
        RunWriter,
        jobs.job_status,
        jobs.cancel_job,
        jobs.discard_job,
        lambda rid: jobs.start_job(parse_config("baseline", {"epochs": 1}), run_id=rid),
    ):
        if not run_id and call.__name__ == "<lambda>":
            continue  # start_job(run_id=None or "") means "choose an id"
        with pytest.raises(RunError):
            call(run_id)
    assert (victim / "keep").exists()
    assert processes.slot_holder() is None


def test_discard_of_a_symlinked_partial_folder_does_not_follow_it(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    runs_root().mkdir(parents=True)
    (runs_root() / ".evil.partial").symlink_to(outside, target_is_directory=True)
    jobs.discard_job("evil")
    assert (outside / "precious.txt").read_text() == "keep me"


def test_run_ids_that_are_valid_stay_inside():
    for run_id in ("a", "baseline-20250101-120000", "x.y_z-1", "A" * 100):
        assert run_path(run_id).parent == runs_root()
        assert partial_path(run_id).parent == runs_root()
        assert check_run_id(run_id) == run_id


# ----------------------------------------------------------------------------- the dashboard

APP = REPO / "streamlit_app.py"


def render_every_page() -> dict[str, list[str]]:
    """page -> the exceptions it showed (Streamlit's AppTest, no browser)."""
    from streamlit.testing.v1 import AppTest

    shown = {}
    for page in PAGES.values():
        app = AppTest.from_file(str(APP), default_timeout=120)
        app.switch_page(page)
        app.run()
        shown[page] = [exception.message for exception in app.exception]
    return shown


needs_app = pytest.mark.skipif(not APP.exists(), reason="streamlit_app.py does not exist yet")


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@needs_app
def test_pages_render_beside_unreadable_run_folders(cifar_npz):
    good("good", finished=1.0)
    for index, damage in enumerate(HANDLED):
        HANDLED[damage](good(f"broken-{index}", finished=2.0 + index))
    (runs_root() / ".killed.partial").mkdir()
    (runs_root() / "notes.txt").write_text("x")
    shown = render_every_page()
    assert shown == {page: [] for page in PAGES.values()}

    from streamlit.testing.v1 import AppTest

    overview = AppTest.from_file(str(APP), default_timeout=120).run()
    labels = [expander.label for expander in overview.expander]
    assert any(f"{len(HANDLED)} run folder(s) could not be read" in label for label in labels), labels


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@needs_app
def test_pages_render_beside_runs_with_damaged_arrays(cifar_npz):
    good("good", finished=1.0)
    for index, damage in enumerate(NOT_HANDLED):
        NOT_HANDLED[damage](good(f"damaged-{index}", finished=2.0 + index))
    for index, content in enumerate(BAD_HISTORIES.values()):  # shown, with their bad histories
        (good(f"history-{index}", finished=100.0 + index) / "history.csv").write_bytes(content)
    assert render_every_page() == {page: [] for page in PAGES.values()}


@needs_app
@pytest.mark.parametrize("content", ["empty", "random bytes"])
def test_comparison_shows_a_run_with_a_bad_history(content, cifar_npz):
    """Defect 3: an empty or random-bytes history.csv crashed the Comparison page."""
    from streamlit.testing.v1 import AppTest

    good("good", finished=1.0)
    (good("bad-history", finished=2.0) / "history.csv").write_bytes(BAD_HISTORIES[content])
    app = AppTest.from_file(str(APP), default_timeout=120)
    app.switch_page(PAGES["comparison"])
    app.run()
    assert not app.exception, [exception.message for exception in app.exception]
    assert app.multiselect(key="comparison-runs").value == ["bad-history", "good"]
