"""The run folder is declared once (`cifar.store.run_folder`): the code names its files only through the
declaration, the docs list exactly the declared files, the committed runs hold only declared files,
and the dashboard's one cached reader reads a run again when any declared result changes."""

from __future__ import annotations

import ast
import json
import re

import pytest

from cifar import atomic
from cifar.store import run_files, run_folder
from cifar.store.runs import load_run, run_path
from tests.factory import REPO

DECLARED = {file.name for file in run_folder.FILES}


def _string_literals(path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


ALLOWED = {"cli.py": {run_folder.TENSORBOARD}}  # the `tensorboard` subcommand's name
CODE = sorted(
    path
    for folder in ("cifar", "dashboard", "app_pages")
    for path in (REPO / folder).rglob("*.py")
    if path.name != "run_folder.py"
)


@pytest.mark.parametrize("path", CODE, ids=lambda path: str(path.relative_to(REPO)))
def test_no_module_spells_a_run_file_name_itself(path):
    """A run file's name is written once, in `cifar.store.run_folder`; a second spelling is how the run
    folder came to be described in three places that disagree."""
    spelled = _string_literals(path) & DECLARED - ALLOWED.get(path.name, set())
    assert not spelled, f"{path.name} names {sorted(spelled)}: use cifar.store.run_folder's constants"


def test_docs_list_exactly_the_declared_files():
    text = (REPO / "docs/run-folders.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    listed = {name.rstrip("/") for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}
    assert listed == DECLARED


def test_the_committed_runs_hold_only_declared_files():
    for folder in sorted((REPO / "artifacts/runs").iterdir()):
        names = {path.name for path in folder.iterdir()}
        assert names <= DECLARED, f"{folder.name}: {sorted(names - DECLARED)} not in cifar.store.run_folder"
        assert set(run_folder.REQUIRED) <= names


def test_every_json_file_has_its_schema_and_required_files_are_the_core():
    for file in run_folder.FILES:
        assert (file.schema is not None) == (file.name.endswith(".json")), file.name
        assert file.schema is None or issubclass(file.schema, run_files._File)
    assert set(run_folder.REQUIRED) == {
        run_folder.CONFIG,
        run_folder.HISTORY,
        run_folder.METRICS,
        run_folder.TEST_PREDICTIONS,
        run_folder.TEST_LABELS,
    }


def test_the_signature_changes_with_each_result_file_but_not_the_log(runs):
    folder = run_path(runs[0])
    before = run_folder.signature(folder)
    (folder / run_folder.TRAIN_LOG).write_text("one more line\n")
    assert run_folder.signature(folder) == before, "the training log is no result"
    changed = set()
    for file in run_folder.FILES:
        if file.name in run_folder.NOT_RESULTS:
            continue
        (folder / file.name).touch()
        after = run_folder.signature(folder)
        changed.add(after != before)
        before = after
    assert changed == {True}


def test_the_dashboards_cached_reader_reads_a_run_again_when_a_result_is_written(runs):
    from dashboard import cache

    calls = []

    def read(run):
        calls.append(run.run_id)
        return len(calls)

    run = load_run(runs[0])
    assert cache.of_run(read, run) == cache.of_run(read, run) == 1
    atomic.write_json(run.path / run_folder.PROJECTION_RECORD, {"written": "now"})
    assert cache.of_run(read, run) == 2


def test_a_result_added_later_does_not_reload_the_model_but_retraining_does(runs, monkeypatch):
    """Models (seconds to load) are keyed on what they are made of, not on every result file."""
    import cifar.inference.predict
    from dashboard import cache

    loads = []
    monkeypatch.setattr(
        cifar.inference.predict, "load_predictor", lambda run: loads.append(run.run_id) or object()
    )
    run = load_run(runs[0])
    first = cache.predictor(run)
    atomic.write_json(run.path / run_folder.PROJECTION_RECORD, {"written": "now"})
    assert cache.predictor(run) is first and loads == [runs[0]]
    atomic.write_json(run.path / run_folder.METRICS, json.loads((run.path / run_folder.METRICS).read_text()))
    assert cache.predictor(run) is not first and loads == [runs[0], runs[0]]
