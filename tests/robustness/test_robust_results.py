"""Hostile result files and targets (issue #30): what commands add to a run folder (robustness,
calibration, the feature map, an ensemble's members) and where `export --overwrite` writes.

The classes of defect, not only the examples: any robustness.json is read only with its test
images inside the run's test set, at least 10 of them, each once; any temperature outside the
fit's range is refused; no reader of any run file waits on a FIFO or a device; an ensemble.json
naming anything but trained runs is refused by name; `export --overwrite` removes no folder but a
SavedModel of its own. Bounded: about 100 s on two cores (the FIFO cases wait for nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cifar import atomic
from cifar.analysis.feature_space import read_projection
from cifar.analysis.robustness import read_robustness, stratified_subset
from cifar.config import TEMPERATURE_RANGE
from cifar.inference.ensemble import make_ensemble, member_runs
from cifar.inference.export import check_export
from cifar.store import run_folder
from cifar.store.runs import RunError, list_runs, load_run
from tests.factory import artifacts_at, npz_cifar, write_robustness, write_run
from tests.pages.conftest import open_page  # noqa: F401 (the pages' AppTest fixture)

LABELS = npz_cifar().y_test  # the test set of the `cifar_npz` the pages read
N = len(LABELS)
FAST = settings(
    max_examples=100,
    derandomize=bool(os.environ.get("CI")),
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def template(tmp_path) -> Path:
    """Artifacts where run "r" has every result a command adds: calibration, robustness, a map;
    and "a", "b" are calibrated runs with robustness results, pooled by the ensemble "ab"."""
    root = tmp_path / "template"
    val = np.arange(N // 2) % 10
    with artifacts_at(root):
        write_run(root, "r", "baseline", LABELS, 0.6, seed=1, val_labels=val)
        write_run(root, "a", "baseline", LABELS, 0.6, seed=2, val_labels=val)
        write_run(root, "b", "transfer", LABELS, 0.7, seed=3, val_labels=val)
        make_ensemble("ab", ["a", "b"])
        indices = stratified_subset(LABELS, 50)
        for run_id, seed in (("r", 1), ("a", 2), ("b", 3), ("ab", 4)):
            write_robustness(run_id, LABELS, indices, 0.5, seed)
        atomic.write_npy(root / "runs" / "r" / run_folder.PROJECTION, np.zeros((N, 2), np.float32))
        record = {
            "method": "umap",
            "space": "penultimate layer",
            "dimensions": 8,
            "images": N,
            "seconds": 1.0,
        }
        atomic.write_json(root / "runs" / "r" / run_folder.PROJECTION_RECORD, record)
    return root


@contextlib.contextmanager
def copy_of(template: Path):
    with tempfile.TemporaryDirectory(dir=template.parent) as scratch:
        root = Path(scratch) / "artifacts"
        shutil.copytree(template, root, symlinks=True)
        with artifacts_at(root):
            yield root


def edit_json(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


# ----------------------------------------------------------------------------- robustness.json


def with_indices(folder: Path, indices: list[int], images: int | None = None) -> None:
    """A robustness result that says `indices` (and `images`), its predictions of the same shape
    and its checksum theirs: nothing but the indices tells it from a good one."""
    from cifar.sources.assets import sha256_bytes

    path = folder / run_folder.ROBUSTNESS
    predictions = np.full((75, len(indices), 10), 0.1, np.float32)
    atomic.write_npy(folder / run_folder.ROBUSTNESS_PREDICTIONS, predictions)
    edit_json(
        path,
        test_indices=indices,
        images=len(indices) if images is None else images,
        predictions_sha256=sha256_bytes(predictions.tobytes()),
    )


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@FAST
@given(
    indices=st.lists(st.integers(-5, 2 * N), max_size=30),
    images=st.none() | st.integers(0, 40),
    sort=st.booleans(),
)
def test_a_robustness_result_is_read_only_with_the_run_s_own_test_images(template, indices, images, sort):
    """#30 defect 2, as a class: whatever test_indices and images say."""
    with copy_of(template) as root:
        with_indices(root / "runs" / "r", sorted(indices) if sort else indices, images)
        result = read_robustness(load_run("r"))
        if result is not None:
            read = result[0]["test_indices"]
            assert 10 <= len(read) == result[0]["images"] and all(0 <= i < N for i in read)
            assert read == sorted(set(read))


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize(
    "indices",
    [[N + 5, *range(40, 49)], [7], [], [3, 3, *range(10, 20)], [-1, *range(10, 20)]],
    ids=["past the test set", "a single image", "none", "an image twice", "negative"],
)
def test_the_robustness_page_survives_any_test_indices(
    indices,
    template,
    cifar_npz,
    frost_textures,
    open_page,  # noqa: F811
):
    """#30 defect 2: indices past the test set, or a single one, crashed the page."""
    with copy_of(template) as root:
        for run_id in ("r", "a", "b", "ab"):
            with_indices(root / "runs" / run_id, indices)
        app = open_page("robustness", timeout=120)
        assert not app.exception, [exception.value for exception in app.exception]
        assert "No robustness results yet" in "".join(str(info.value) for info in app.info)


# ----------------------------------------------------------------------------- calibration.json


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@FAST
@given(
    temperature=st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
    | st.sampled_from([5e-324, 1e300, 0.0, -1.0, 0.049, 20.01, 0.05, 20.0])
)
def test_a_temperature_outside_the_fit_s_range_is_refused(template, temperature):
    """#30 defect 4, as a class: 5e-324 made NaN probabilities (Misclassified crashed), 1e300
    changed 88 % of top classes. Every temperature a run loads with keeps its answers."""
    with copy_of(template) as root:
        path = root / "runs" / "r" / run_folder.CALIBRATION
        path.write_text(json.dumps({**json.loads(path.read_text()), "temperature": temperature}))
        low, high = TEMPERATURE_RANGE
        try:
            run = load_run("r")
        except RunError as error:
            assert not low <= temperature <= high and "temperature" in str(error)
            return
        assert low <= run.temperature <= high
        calibrated = run.calibrated_test_predictions
        assert np.isfinite(calibrated).all()
        assert np.array_equal(calibrated.argmax(1), run.test_predictions.argmax(1))


# ----------------------------------------------------------------------------- FIFOs and devices


def every_reading(root: Path) -> None:
    """What the commands and pages read of a run folder, every optional file included."""
    for run in list_runs():
        read_robustness(run)
        read_projection(run)
        run.history  # noqa: B018
        with contextlib.suppress(RunError):  # (refused by name: what a page reports)
            run.validation  # noqa: B018
        with contextlib.suppress(RunError):
            member_runs(run) if run.model == "ensemble" else None


def _unblock(path: Path) -> None:
    """A reader waiting to open FIFO `path` gets a writer, then its end of file."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


RESULT_FILES = [
    ("r", run_folder.ROBUSTNESS),
    ("r", run_folder.ROBUSTNESS_PREDICTIONS),
    ("r", run_folder.PROJECTION),
    ("r", run_folder.PROJECTION_RECORD),
    ("r", run_folder.CALIBRATION),
    ("r", "val_predictions.npy"),
    ("r", "val_labels.npy"),
    ("r", run_folder.HISTORY),
    ("r", run_folder.TEST_PREDICTIONS),
    ("ab", "ensemble.json"),
]


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
@pytest.mark.parametrize("run_id, name", RESULT_FILES, ids=[name for _, name in RESULT_FILES])
def test_no_reader_waits_on_a_fifo_or_reads_a_device(template, run_id, name, kind):
    """#30 defect 3, as a class: a FIFO in place of robustness_predictions.npy or projection.npy
    hung the Robustness and Feature map pages forever."""
    with copy_of(template) as root:
        path = root / "runs" / run_id / name
        path.unlink()
        os.mkfifo(path) if kind == "fifo" else path.symlink_to("/dev/zero")
        done: list[object] = []
        worker = threading.Thread(target=lambda: done.append(every_reading(root)), daemon=True)
        worker.start()
        worker.join(timeout=30)
        if worker.is_alive():
            _unblock(path)
            worker.join(timeout=5)
            pytest.fail(f"reading the runs waited on {name} as a {kind}")
        assert done == [None]


def test_a_robustness_pooling_refuses_a_fifo_for_a_member_s_clean_predictions(template):
    from cifar.analysis.robustness import evaluate_robustness

    with copy_of(template) as root:
        path = root / "runs" / "b" / run_folder.ROBUSTNESS_CLEAN
        path.unlink()
        os.mkfifo(path)
        with pytest.raises(RunError, match="not a regular file"):
            evaluate_robustness("ab", overwrite=True)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize(
    "page, name", [("robustness", run_folder.ROBUSTNESS_PREDICTIONS), ("feature_map", run_folder.PROJECTION)]
)
def test_the_pages_render_beside_a_fifo(page, name, template, cifar_npz, open_page):  # noqa: F811
    with copy_of(template) as root:
        path = root / "runs" / "r" / name
        path.unlink()
        os.mkfifo(path)
        try:
            app = open_page(page, timeout=60)
        finally:
            _unblock(path)
        assert not app.exception, [exception.value for exception in app.exception]
        assert app.title


# ----------------------------------------------------------------------------- ensemble.json

MEMBER_NAMES = ["a", "b", "r", "ab", "missing", "../r", "", "a" * 101, ".hidden"]


@FAST
@given(members=st.lists(st.sampled_from(MEMBER_NAMES), min_size=0, max_size=4))
def test_an_ensemble_s_members_are_trained_runs_or_it_is_refused_by_name(template, members):
    """#30 defect 6, as a class: whatever ensemble.json names, reading it gives trained runs (each
    once, never the ensemble) or a RunError naming the problem."""
    from cifar.inference.predict import missing_backbone, run_resolutions

    with copy_of(template) as root:
        path = root / "runs" / "ab" / "ensemble.json"
        edit_json(path, members=members, weights=[1.0] * len(members), member_finished=None)
        run = load_run("ab")
        for read in (member_runs, run_resolutions, missing_backbone):
            try:
                result = read(run)
            except RunError as error:
                assert str(error).startswith(("run 'ab'", "no run", "invalid run id")), error
                continue
            if read is member_runs:
                assert [m.run_id for m in result] == members and len(set(members)) == len(members)
                assert all(m.model != "ensemble" for m in result) and "ab" not in members


# ----------------------------------------------------------------------------- export --overwrite

ENTRY_NAMES = [
    "saved_model.pb",
    "variables",
    "assets",
    "fingerprint.pb",
    "notes.txt",
    "runs",
    "variables.index",
]


@st.composite
def trees(draw, depth: int = 2) -> dict:
    """A folder: names to None (a file), "link" (a symlink) or a folder of the same kind."""
    names = draw(st.lists(st.sampled_from(ENTRY_NAMES), max_size=5, unique=True))
    tree = {}
    for name in names:
        kinds = [st.none(), st.just("link")] + ([trees(depth - 1)] if depth else [])
        tree[name] = draw(st.one_of(kinds))
    return tree


def build(folder: Path, tree: dict) -> None:
    folder.mkdir()
    for name, inner in tree.items():
        if inner is None:
            (folder / name).write_bytes(b"\x08 content")
        elif inner == "link":
            (folder / name).symlink_to(folder.parent)
        else:
            build(folder / name, inner)


def snapshot(folder: Path) -> list[tuple[str, bool, bytes]]:
    return sorted(
        (str(p.relative_to(folder)), p.is_symlink(), b"" if p.is_dir() else p.read_bytes())
        for p in folder.rglob("*")
    )


@FAST
@given(tree=trees())
def test_export_overwrite_never_takes_a_folder_that_is_not_a_saved_model_of_its_own(tmp_path_factory, tree):
    """#30 defect 1, as a class: --overwrite may replace a folder only when it holds a SavedModel
    (saved_model.pb) and nothing a SavedModel export does not write; it is never touched here."""
    folder = tmp_path_factory.mktemp("out") / "model"
    build(folder, tree)
    before = snapshot(folder)
    ours = (
        tree.get("saved_model.pb", "x") is None
        and set(tree) <= {"saved_model.pb", "variables", "assets", "fingerprint.pb"}
        and all(tree[name] is None for name in ("saved_model.pb", "fingerprint.pb") if name in tree)
        and tree.get("assets", {}) == {}
        and isinstance(tree.get("variables", {}), dict)
        and all(inner is None for inner in tree.get("variables", {}).values())
        and set(tree.get("variables", {})) <= {"variables.index"}  # (of ENTRY_NAMES, what SavedModel writes)
    )
    try:
        check_export("saved_model", folder, overwrite=True)
        accepted = True
    except FileExistsError as error:
        accepted = False
        assert "not what this program writes" in str(error)
    assert accepted == ours, tree
    assert snapshot(folder) == before


def test_an_export_of_ours_is_recognised_with_its_variables(tmp_path):
    folder = tmp_path / "model"
    build(folder, {"saved_model.pb": None, "fingerprint.pb": None, "assets": {}, "variables": {}})
    for name in ("variables.index", "variables.data-00000-of-00001"):
        (folder / "variables" / name).write_bytes(b"v")
    assert check_export("saved_model", folder, overwrite=True) == folder
    (folder / "variables" / "my-notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not what this program writes"):
        check_export("saved_model", folder, overwrite=True)


def test_the_result_readers_go_through_the_bounded_reader():
    """No module reads a run file or a cache with np.load but `cifar.store.run_files` (and the feature
    and data caches, whose own readers check them): a new reader cannot skip the checks."""
    from tests.factory import REPO

    sources = [
        *(REPO / "cifar").rglob("*.py"),
        *(REPO / "dashboard").glob("*.py"),
        *(REPO / "app_pages").glob("*.py"),
    ]
    loading = sorted(path.name for path in sources if "np.load(" in path.read_text())
    assert loading == ["assets.py", "features.py", "run_files.py"]
