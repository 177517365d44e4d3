"""Where a run puts images: the nearest training images of any image, and a map of the test set.

The space is the one each family classifies in: a baseline's penultimate layer (what its last
Dense layer reads), computed once per run and split and cached in the Keras home
(`penultimate/<run>-<weights sha>-<split>.npy`); a transfer run's pooled base features, the
feature cache's own (`cifar.modeling.features`). Neighbours are by cosine similarity. The map is a 2-D
UMAP (McInnes et al. 2018; cosine metric, after a 50-d PCA) of the test set's features, stored
in the run folder:

    projection.npy    (10000, 2) float32, test-set order
    projection.json   method, space, dimensions, seconds
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cifar import atomic
from cifar.config import keras_home
from cifar.store import run_folder
from cifar.store.runs import Run, RunError

PENULTIMATE_BYTES = 50_000 * 4096 * 4  # a cached split: 50,000 images, up to 4096 float32 features


def check_features_run(run: Run) -> None:
    if run.model == "ensemble":
        raise RunError(f"{run.run_id} is an ensemble: explain or map its members one by one")


def space_name(run: Run) -> str:
    return "penultimate layer" if run.model == "baseline" else "pooled InceptionV3 features"


def split_features(
    run: Run, split: str, log: Callable[[str], None] = print, extract: bool = False
) -> np.ndarray:
    """(N, d) features of the "train" or "test" images in the run's space; a transfer run's come
    from the feature cache, extracted now (with a progress bar) if `extract`, else
    `FeaturesMissing` saying how long extraction takes."""
    from cifar.sources.assets import load_cifar10

    check_features_run(run)
    data = load_cifar10(log=log)
    images = data.x_train if split == "train" else data.x_test
    if run.model == "baseline":
        return _penultimate(run, split, images)
    from cifar.config import load_config
    from cifar.modeling.features import extract_features, load_features
    from cifar.sources.assets import load_inception_weights
    from cifar.terminal import terminal_progress

    config = load_config(run.hyperparameters)
    weights = load_inception_weights(run.backbone_source, log=log)
    if not extract:
        return load_features(images, config, weights, split, False)
    bar = terminal_progress("features")
    progress = lambda done, total: bar(split, done, total)  # noqa: E731
    return extract_features(images, config, weights, split, False, progress=progress)


def _penultimate_path(run: Run, split: str):
    from cifar.sources.assets import sha256_file

    sha = sha256_file(run.path / run_folder.WEIGHTS["baseline"])[:10]
    return keras_home() / "penultimate" / f"{run.run_id}-{sha}-{split}.npy"


def train_features_ready(run: Run, data=None) -> bool:
    """Are the run's training features at hand, without computing or extracting anything?
    (`data`: the cached CIFAR-10, when the caller holds it already.)"""
    if run.model == "baseline":
        return run.has_weights and _penultimate_path(run, "train").is_file()
    if run.model != "transfer":
        return False
    from cifar.sources.assets import cifar10_available, load_cifar10, weights_available

    if not (cifar10_available() and weights_available(run.backbone_source)):
        return False
    from cifar.config import load_config
    from cifar.modeling.features import FeatureSpec, missing_chunks
    from cifar.sources.assets import load_inception_weights

    data = data or load_cifar10(log=lambda message: None)
    config, weights = load_config(run.hyperparameters), load_inception_weights(run.backbone_source)
    spec = FeatureSpec.of(config, weights, "train", False, data.x_train)
    return not missing_chunks(spec.directory(), len(data.x_train))


def train_features_command(run: Run) -> str:
    """The command that computes a run's training features (`train_features_ready` after it)."""
    if run.model == "baseline":  # `project` caches them; a run that has its map replaces it
        overwrite = " --overwrite" if (run.path / run_folder.PROJECTION_RECORD).is_file() else ""
        return f"python -m cifar project {run.run_id}{overwrite}"
    from cifar.config import load_config

    config = load_config(run.hyperparameters)
    defaults = type(config)().model_dump()
    changed = [
        f"--{k.replace('_', '-')} {str(v).lower() if isinstance(v, bool) else v}"
        for k, v in config.model_dump().items()
        if v != defaults[k]
    ]
    return " ".join(["python -m cifar extract", *changed])


def _penultimate(run: Run, split: str, images: np.ndarray) -> np.ndarray:
    from cifar.store.run_files import FileError, read_npy

    path = _penultimate_path(run, split)
    try:
        cached = read_npy(path, limit=PENULTIMATE_BYTES)  # (a regular file: a FIFO would wait forever)
        if cached.ndim == 2 and cached.shape[0] == len(images) and cached.dtype == np.float32:
            return np.array(cached)
    except FileError:
        pass
    import keras

    from cifar.modeling.restore import last_dense, load_model

    network = load_model(run)[1]
    dense = last_dense(network)
    features = keras.Model(network.input, dense.input).predict(images, batch_size=1000, verbose=0)
    atomic.write_npy(path, features.astype(np.float32))
    return features.astype(np.float32)


def nearest(train_features: np.ndarray, query: np.ndarray, k: int = 8) -> list[tuple[int, float]]:
    """[(training image index, cosine similarity)] of the k most similar, most similar first."""
    norms = np.linalg.norm(train_features, axis=1) * max(float(np.linalg.norm(query)), 1e-12)
    similarity = (train_features @ query) / np.maximum(norms, 1e-12)
    top = np.argpartition(-similarity, k)[:k]
    top = top[np.argsort(-similarity[top])]
    return [(int(i), float(similarity[i])) for i in top]


def check_replace_map(run: Run, overwrite: bool) -> None:
    """FileExistsError saying what the run's map is, unless `overwrite` (`atomic.check_replace`)."""
    result = read_projection(run)
    held = f"a map of {result[0]['images']} test images" if result else "unreadable"
    atomic.check_replace(
        run.path / run_folder.PROJECTION_RECORD,
        overwrite,
        f"{run.run_id}'s {run_folder.PROJECTION_RECORD} ({held})",
    )


def project(run_id: str, log: Callable[[str], None] = print, overwrite: bool = False) -> dict:
    """The run's test-set map (UMAP), computed once and written into its folder (replacing one
    only with `overwrite`)."""
    from cifar.store.runs import load_run

    run = load_run(run_id)
    check_replace_map(run, overwrite)
    log(f"{run_id}: the test images' features ({space_name(run)})")
    features = split_features(run, "test", log, extract=True)
    if run.model == "baseline":  # its training images too, for the nearest neighbours (cached)
        split_features(run, "train", log)
    started = time.perf_counter()
    coordinates = embed(features, log)
    record = {
        "method": "umap (cosine, 15 neighbours, min_dist 0.1, random_state 0) after PCA to 50",
        "space": space_name(run),
        "dimensions": int(features.shape[1]),
        "images": int(features.shape[0]),
        "seconds": time.perf_counter() - started,
    }
    check_replace_map(load_run(run_id), overwrite)  # again: one may have come meanwhile
    with atomic.written_together() as files:  # a failed write replaces neither
        files.write_npy(run.path / run_folder.PROJECTION, coordinates)
        files.write_json(run.path / run_folder.PROJECTION_RECORD, record)
    return record


def embed(features: np.ndarray, log: Callable[[str], None] = print) -> np.ndarray:
    """(N, d) -> (N, 2) float32: PCA to 50 dimensions, then UMAP."""
    import umap
    from sklearn.decomposition import PCA

    reduced = PCA(n_components=min(50, *features.shape), random_state=0).fit_transform(features)
    log(f"UMAP of {len(features)} points ({features.shape[1]}-d, PCA to {reduced.shape[1]})")
    mapper = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=0, verbose=False)
    return mapper.fit_transform(reduced).astype(np.float32)


def read_projection(run: Run) -> tuple[dict, np.ndarray] | None:
    """(projection.json, (N, 2) coordinates) of a run, None if it has none or they do not pass the
    run files' checks (`cifar.store.run_files`)."""
    from cifar.store import run_files

    try:
        record = run_files.read_json(run.path / run_folder.PROJECTION_RECORD, run_files.ProjectionFile)
        coordinates = run_files.read_array(run.path / run_folder.PROJECTION, (len(run.test_labels), 2))
    except run_files.FileError:
        return None
    return record, coordinates


# ----------------------------------------------------------------------------- in the background


def _projection_job(run: Run) -> tuple[Path, Path]:
    """(log, record) of a run's background projection, beside the training jobs' logs."""
    folder = run.path.parent.parent / "jobs"
    return folder / f"project-{run.run_id}.log", folder / f"project-{run.run_id}.json"


def start_projection(run: Run) -> int:
    """`python -m cifar project RUN` in the background (the dashboard's button, shown for a run
    without a readable map: an unreadable one is replaced); its pid."""
    from cifar.store.processes import spawn

    check_features_run(run)
    log, record = _projection_job(run)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as handle:  # the child keeps its own copy of the descriptor
        process = spawn(["project", "--overwrite", run.run_id], stdout=handle)
    atomic.write_json(record, {"pid": process.pid, "started": time.time()})
    return process.pid


def projection_progress(run: Run) -> dict | None:
    """{"running", "seconds", "last_line"} of the run's latest background projection, if any."""
    import json

    from cifar.store.processes import pid_alive

    log, record = _projection_job(run)
    try:
        job = json.loads(record.read_text())
        lines = log.read_text(errors="replace").replace("\r", "\n").splitlines()
    except (OSError, ValueError):
        return None
    last = next((line for line in reversed(lines) if line.strip()), "starting")
    return {
        "running": pid_alive(job.get("pid")),
        "seconds": time.time() - job.get("started", 0),
        "last_line": last,
    }
