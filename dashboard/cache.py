"""Every `st.cache_resource` / `st.cache_data` wrapper of the dashboard, in one place.

Cache keys include the artifacts folder and a cheap signature of what is on disk (folder names and
modification times), so a run that a job publishes shows up on the next rerun, and a test that
points `CIFAR_ARTIFACTS` elsewhere never sees another test's runs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import streamlit as st

from cifar.config import keras_home
from cifar.store import run_folder
from cifar.store.runs import Run, list_runs, runs_root

_log = logging.getLogger(__name__)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _listing(root: Path) -> tuple[tuple[str, int], ...]:
    if not root.is_dir():
        return ()
    return tuple(sorted((p.name, _mtime(p)) for p in root.iterdir() if not p.name.startswith(".")))


# ----------------------------------------------------------------------------- runs


@st.cache_resource(max_entries=8, show_spinner=False)
def _runs(root: str, signature: tuple) -> tuple[list[Run], list[str]]:
    problems: list[str] = []
    return list_runs(with_problems=problems), problems


def runs() -> list[Run]:
    """Every complete run, newest first (re-read when a run folder appears or changes)."""
    root = runs_root()
    return _runs(str(root), _listing(root))[0]


def run_problems() -> list[str]:
    root = runs_root()
    return _runs(str(root), _listing(root))[1]


@st.cache_data(max_entries=32, show_spinner="Comparing on the test images …")
def _comparison(a: str, b: str, root: str, signature: tuple):
    from cifar.store.groups import compare, resolve

    every_run = _runs(root, signature)[0]
    return compare(resolve(a, every_run), resolve(b, every_run))


def comparison(a: str, b: str):
    """`cifar.store.groups.compare` of two run ids or `group:RUN` names (CompareError if they differ
    in test set), once per pair and state of the runs folder."""
    root = runs_root()
    return _comparison(a, b, str(root), _listing(root))


def _run_key(run: Run) -> tuple[str, str, tuple[int, ...]]:
    """A run's cache key: the times of every result file `cifar.store.run_folder` declares, so a run
    trained, calibrated, evaluated or mapped again is a new entry."""
    return str(run.path), run.run_id, run_folder.signature(run.path)


def _model_key(run: Run) -> tuple[str, str, tuple[int, ...]]:
    """A run's model's cache key: what the model is made of (config, weights, temperature) and
    the metrics a run trained again rewrites; a result added later (a map, robustness) does not
    reload a model or its training features."""
    names = (run_folder.CONFIG, run_folder.METRICS, run_folder.CALIBRATION, *run_folder.WEIGHTS.values())
    return str(run.path), run.run_id, tuple(_mtime(run.path / name) for name in names)


@st.cache_resource(max_entries=128, show_spinner=False)
def _of_run(reader: str, path: str, run_id: str, signature: tuple, _read, _run: Run):
    return _read(_run)


def of_run(read, run: Run):
    """`read(run)` (a reader of a run folder's files: `cifar.analysis.evaluate.evaluate_run`,
    `cifar.analysis.robustness.read_robustness`, `cifar.analysis.feature_space.read_projection`
    ...), once per run and state of its files. The one cached reader of run results."""
    return _of_run(f"{read.__module__}.{read.__qualname__}", *_run_key(run), read, run)


@st.cache_data(max_entries=16, show_spinner="Corrupting the image 75 ways...")
def _corruption_examples(index: int, dataset: tuple) -> dict:
    from cifar.analysis.robustness import corruption_sets
    from cifar.sources.corruptions import corrupt

    image = cifar10().x_test[index : index + 1]
    return {(name, severity): corrupt(image, name, severity)[0] for name, severity in corruption_sets()}


def corruption_examples(index: int) -> dict:
    """{(corruption, severity): uint8 image} of test image `index`: what each set does to an image
    (its own random draws; call only when the data and the frost textures are cached)."""
    return _corruption_examples(index, _dataset_key())


@st.cache_resource(max_entries=16, show_spinner=False)
def _per_image_table(keys: tuple, n_images: int | None, _runs: tuple[Run, ...]):
    from cifar.analysis.evaluate import per_image_table

    return per_image_table(list(_runs), n_images)


def per_image_table(chosen: list[Run], n_images: int | None):
    """`cifar.analysis.evaluate.per_image_table` of the chosen runs."""
    return _per_image_table(tuple(_run_key(run) for run in chosen), n_images, tuple(chosen))


@st.cache_resource(max_entries=6, show_spinner=False)  # the page says what it waits for
def _predictor(path: str, run_id: str, signature: tuple, _run: Run):
    from cifar.inference.predict import EnsemblePredictor, load_predictor

    if _run.model == "ensemble":  # its members are the members' own cached predictors
        from cifar.inference.ensemble import member_runs

        members = [predictor(member) for member in member_runs(_run)]  # (never an ensemble: no loop)
        return EnsemblePredictor(_run, members)
    return load_predictor(_run)


def predictor(run: Run):
    """The run's model, loaded once per process and shared by every session."""
    path, run_id, signature = _model_key(run)
    if run.model == "ensemble":  # a member trained again is a new ensemble predictor too
        from cifar.inference.ensemble import ensemble_weights

        signature += tuple(
            _mtime(run.path.parent / member / run_folder.METRICS) for member in ensemble_weights(run)[0]
        )
    return _predictor(path, run_id, signature, run)


def preload(chosen: list[Run]) -> threading.Thread:
    """Load `chosen` runs' models in a background thread, once per process, so that the first
    upload after the server starts does not wait for them (~12 s for a transfer model)."""
    return _preload(tuple(_model_key(run) for run in chosen), tuple(chosen))


@st.cache_resource(max_entries=1, show_spinner=False)
def _preload(keys: tuple, _chosen: tuple[Run, ...]) -> threading.Thread:
    def load_all() -> None:
        from cifar.inference.predict import missing_backbone

        for run in _chosen:
            try:
                if not missing_backbone(run):  # (else loading would download them)
                    predictor(run)
            except Exception as error:  # noqa: BLE001 (the page says why, when the model is asked for)
                _log.warning("could not preload %s: %s", run.run_id, error)

    thread = threading.Thread(target=load_all, name="preload-models", daemon=True)
    thread.start()
    return thread


# ----------------------------------------------------------------------------- assets


def _dataset_key() -> tuple[str, int]:
    from cifar.sources.assets import DATASET_OVERRIDE_ENV, cifar10_cache_path

    override = os.environ.get(DATASET_OVERRIDE_ENV)
    path = Path(override) if override else cifar10_cache_path()
    return str(path), _mtime(path)


@st.cache_resource(max_entries=2, show_spinner="Loading CIFAR-10 from the cache...")
def _cifar10(path: str, signature: int):
    from cifar.sources.assets import load_cifar10

    return load_cifar10(log=lambda message: None)


def cifar10():
    """The cached data set (call only when `cifar.sources.assets.cifar10_available()`)."""
    return _cifar10(*_dataset_key())


@st.cache_resource(max_entries=4, show_spinner="Checking the backbone weights...")
def _weights(preference: str, home: str, signature: tuple):
    from cifar.sources.assets import load_inception_weights

    return load_inception_weights(preference, log=lambda message: None)


def backbone_weights(preference: str):
    """The cached InceptionV3 weights (call only when `weights_available(preference)`)."""
    home = keras_home()
    return _weights(preference, str(home), _listing(home / "models"))


@st.cache_data(max_entries=32, show_spinner="Checking the feature cache...")
def _feature_plan(needs: str, dataset: tuple, weights: tuple, features: tuple, _config):
    """`needs` is the part of `_config` that decides the feature sets: the cache key."""
    from cifar.modeling.feature_cache import missing_features
    from cifar.modeling.features import estimate_seconds

    missing = missing_features(_config, cifar10(), backbone_weights(_config.weights))
    return missing, sum(estimate_seconds(_config, n) for _, _, n in missing)


def feature_plan(config) -> tuple[list[tuple[str, bool, int]], float]:
    """The feature sets a transfer config still needs, (split, flipped, images), and their
    estimated extraction seconds (call only when the data and weights are cached)."""
    home = keras_home()
    # What decides which feature sets are needed; epochs and the head's settings change nothing.
    needs = {
        **config.feature_spec,
        **{name: getattr(config, name) for name in ("weights", "tta_flip", "flip_features")},
    }
    return _feature_plan(
        json.dumps(needs, sort_keys=True),
        _dataset_key(),
        _listing(home / "models"),
        _listing(home / "features"),
        config,
    )


# ----------------------------------------------------------------------------- explanations


@st.cache_resource(max_entries=6, show_spinner=False)
def _explainer(path: str, run_id: str, signature: tuple, _run: Run):
    from cifar.inference.explain import Explainer

    return Explainer(_run, predictor(_run))  # the answer explained is the one Classify shows


@st.cache_data(max_entries=64, show_spinner=False)
def _explanation(key: tuple, digest: str, resolution: str, class_index: int | None, _run: Run, _pixels):
    return _explainer(*key, _run).explain(_pixels, resolution, class_index)


def explanation(run: Run, pixels, resolution: str, class_index: int | None = None):
    """`cifar.inference.explain.Explainer(run).explain(...)`, once per image, resolution and class: a
    rerun never computes it again (the model itself is loaded once per process)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
    return _explanation(_model_key(run), digest, resolution, class_index, run, pixels)


@st.cache_resource(max_entries=2, show_spinner="Reading the training images' features...")  # 0.4-1.2 GB each
def _train_features(path: str, run_id: str, signature: tuple, _run: Run):
    from cifar.analysis.feature_space import split_features

    return split_features(_run, "train", log=lambda message: None)


def train_features(run: Run):
    """The run's training images in its feature space (call only when `train_features_ready`)."""
    return _train_features(*_model_key(run), run)


@st.cache_data(max_entries=32, show_spinner=False)
def _train_ready(key: tuple, listings: tuple, _run: Run) -> bool:
    from cifar.analysis.feature_space import train_features_ready
    from cifar.sources.assets import cifar10_available

    return train_features_ready(_run, cifar10() if cifar10_available() else None)


def train_features_ready(run: Run) -> bool:
    """`cifar.analysis.feature_space.train_features_ready`, asked again when the caches change."""
    home = keras_home()
    return _train_ready(_model_key(run), (_listing(home / "features"), _listing(home / "penultimate")), run)
