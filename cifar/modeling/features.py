"""The frozen base's pooled features, computed once and cached in resumable chunks.

Why training the head on cached features gives the reference's model: with every base layer
frozen, Keras runs the base in inference mode (BatchNormalization uses its moving statistics and
nothing in it is random), so the base's pooled output is a fixed function of each image. The
reference's end-to-end `fit` therefore sees the same 2048-d vector for an image at every epoch;
only the head's weights change. Computing that vector once and training the head on it is the
same optimisation problem, at a fraction of the cost (`tests/test_features.py` checks that base +
head on cached features predicts the same as the assembled full model). The cache as a whole
(listing, pruning) is `cifar.modeling.feature_cache`'s.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar import atomic
from cifar.config import TransferConfig, keras_home
from cifar.sources.assets import BackboneWeights, Cifar10, sha256_bytes
from cifar.sources.data import aligned_empty, validation_rows

CHUNK_SIZE = 1000  # images per cache file: a kill loses at most this much work
CPU_BATCH, GPU_BATCH = 50, 256
FORCE_GPU_PATH = "CIFAR_FORCE_GPU_PATH"  # takes the GPU branch on a CPU (`gpu_available`)
# Measured on 2 CPU cores (bench/); used to say how long an extraction will take.
CPU_IMAGES_PER_SECOND = {224: 65.0, 299: 33.0}


class FeaturesMissing(LookupError):
    """The features a config needs are not cached yet."""


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that changes the base's output for a set of images."""

    weights_source: str
    weights_sha256: str
    architecture: str
    resize: str
    input_size: int
    split: str
    flip: bool
    images_sha256: str
    precision: str = "float32"
    pooled_layers: str = "mixed10"

    @classmethod
    def of(cls, config: TransferConfig, weights: BackboneWeights, split: str, flip: bool, images):
        return cls(
            weights_source=weights.source,
            weights_sha256=weights.sha256,
            architecture=config.architecture,
            resize=config.resize,
            input_size=config.input_size,
            split=split,
            flip=flip,
            images_sha256=sha256_bytes(np.ascontiguousarray(images).tobytes()),
            precision=default_precision(),
            pooled_layers=config.pooled_layers,
        )

    @property
    def name(self) -> str:
        parts = [
            "inceptionv3",
            self.weights_source,
            self.weights_sha256[:10],
            self.architecture,
            f"{self.resize}{self.input_size}",
            *(["r2"] if self.resize_was_wrong_under_xla else []),
            self.split,
            f"n{self.images_sha256[:10]}",
        ]
        if self.pooled_layers != "mixed10":  # the reference's features keep their old names
            parts.append(self.pooled_layers)
        if self.flip:
            parts.append("flip")
        if self.precision != "float32":
            parts.append(self.precision)
        return "-".join(parts)

    @property
    def resize_was_wrong_under_xla(self) -> bool:
        """Would XLA have resized these images wrongly? Such caches get `-r2` in their name (see
        `outside_xla`), so caches made before the fix are never read."""
        return xla_resized_wrongly(self.resize, self.input_size)

    def directory(self) -> Path:
        return keras_home() / "features" / self.name


def default_precision() -> str:
    return (
        "mixed_float16"
        if os.environ.get("CIFAR_MIXED_PRECISION", "auto") != "0" and gpu_available()
        else "float32"
    )


def gpu_available() -> bool:
    """Is a GPU usable? The one device decision every GPU branch asks (the extractor's precision,
    XLA and batch size; robustness' default image count). Asks TensorFlow only if it is loaded
    already (pages stay TF-free).

    `CIFAR_FORCE_GPU_PATH=1` says yes on any machine, so that the GPU branch runs, and is tested,
    on a CPU (`tests/test_gpu_path.py`): TensorFlow runs mixed_float16 and XLA there, slowly.
    """
    if os.environ.get(FORCE_GPU_PATH) == "1":
        return True
    if "tensorflow" not in sys.modules:
        nvidia = Path("/proc/driver/nvidia/gpus")
        return nvidia.is_dir() and any(nvidia.iterdir())
    import tensorflow as tf

    try:
        return bool(tf.config.list_physical_devices("GPU"))
    except Exception:  # noqa: BLE001 (no TensorFlow GPU support at all)
        return False


def estimate_seconds(config: TransferConfig, n_images: int) -> float:
    """Rough extraction time on this machine's CPU (GPU: much less)."""
    rate = CPU_IMAGES_PER_SECOND.get(config.input_size)
    if rate is None:  # cost grows with the pixel count
        rate = CPU_IMAGES_PER_SECOND[224] * (224 / config.input_size) ** 2
    return n_images / rate


def _chunk_path(directory: Path, index: int) -> Path:
    return directory / f"chunk-{index:05d}.npy"


def chunk_rows(n_images: int, index: int) -> int:
    return min(CHUNK_SIZE, n_images - index * CHUNK_SIZE)


def missing_chunks(directory: Path, n_images: int) -> list[int]:
    """Indices of the chunks of `n_images` that are absent or unreadable in `directory`."""
    return [
        i
        for i in range(math.ceil(n_images / CHUNK_SIZE))
        if _open_chunk(_chunk_path(directory, i), chunk_rows(n_images, i)) is None
    ]


def _open_chunk(path: Path, rows: int) -> np.ndarray | None:
    """The chunk memory-mapped, or None if it is absent, torn or not `rows` float32 vectors."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception:  # noqa: BLE001 (a torn or corrupt chunk is recomputed)
        return None
    if array.shape[0] != rows or array.ndim != 2 or array.dtype != np.float32:
        return None
    return array


def cached_features(spec: FeatureSpec, n_images: int, dim: int = 2048) -> np.ndarray | None:
    """The complete cached features, or None if any chunk is missing or unreadable.

    Each chunk is read once, straight into the result (no second copy by concatenation).
    """
    directory = spec.directory()
    result = None
    for index in range(math.ceil(n_images / CHUNK_SIZE)):
        rows = chunk_rows(n_images, index)
        chunk = _open_chunk(_chunk_path(directory, index), rows)
        if chunk is None or (result is not None and chunk.shape[1] != result.shape[1]):
            return None
        if result is None:
            result = aligned_empty((n_images, chunk.shape[1]))
        try:
            result[index * CHUNK_SIZE : index * CHUNK_SIZE + rows] = chunk
        except OSError:  # unreadable on disk after all
            return None
    return result if result is not None else np.zeros((0, dim), np.float32)


def make_extract_fn(config: TransferConfig, weights_path, precision: str = "float32"):
    """uint8 batch -> resize -> preprocess -> frozen base -> pooled features, as traced graphs."""
    import tensorflow as tf

    from cifar.modeling.models import build_pooled_base, build_resize, computing_in

    with computing_in(precision):
        resize, pooled = build_resize(config), build_pooled_base(config, weights_path)
    prepare = outside_xla(resize)

    # On a CPU, TensorFlow's own executor with its oneDNN kernels runs the base ~30 % faster
    # than XLA's CPU backend (34 vs 25 img/s at 299 px on 2 cores); on a GPU, XLA compiles it.
    @tf.function(jit_compile=precision != "float32" or gpu_available(), reduce_retracing=True)
    def base(resized):
        return tf.cast(pooled(resized, training=False), tf.float32)

    return lambda pixels: base(prepare(pixels))


# ----------------------------------------------------------------------------- the resize and XLA


def outside_xla(resize):
    """`resize` (a `build_resize` model) as a graph that XLA never compiles.

    XLA's CPU bilinear resize is wrong at odd integer scale factors (32 -> 96, 160, 224, 288 px:
    3 % of the pixels come out of the wrong source column; tensorflow/tensorflow#118344, open)
    and XLA has no bicubic resize at all. TensorFlow's own kernels agree with Pillow. Feature
    sets of those resizes carry `-r2` in their names (`FeatureSpec.name`), so that sets made
    when the resize still ran under XLA (see git history) are never reused or mixed in
    (`python -m cifar features --prune` removes them).
    """
    import tensorflow as tf

    return tf.function(lambda pixels: resize(pixels, training=False), reduce_retracing=True)


def xla_resized_wrongly(resize: str, input_size: int) -> bool:
    """Bilinear from 32 px to an odd multiple of 32, which XLA got wrong (see `outside_xla`)."""
    factor, remainder = divmod(input_size, 32)
    return resize == "bilinear" and remainder == 0 and factor % 2 == 1


def extract_features(
    images: np.ndarray,
    config: TransferConfig,
    weights: BackboneWeights,
    split: str,
    flip: bool = False,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    worker=None,
    wait_seconds: float = 6 * 3600,
) -> np.ndarray:
    """Features of `images` (in order), reusing every chunk already on disk.

    Under a TF_CONFIG cluster (`cifar.modeling.distribute`), worker k of n computes the chunks with
    index % n == k into the shared cache, then waits until the other workers' chunks are there.
    """
    from cifar.modeling.distribute import this_worker

    worker = worker or this_worker()
    spec = FeatureSpec.of(config, weights, split, flip, images)
    directory = spec.directory()
    directory.mkdir(parents=True, exist_ok=True)
    _write_manifest(directory, spec, len(images))
    n = len(images)
    todo = [i for i in missing_chunks(directory, n) if i % worker.count == worker.index]
    done = n - sum(chunk_rows(n, i) for i in todo)
    if progress:
        progress(done, n)
    if todo:
        started = time.perf_counter()
        batch = batch_size or (GPU_BATCH if spec.precision != "float32" or gpu_available() else CPU_BATCH)
        extract = make_extract_fn(config, weights.path, spec.precision)
        for index in todo:
            pixels = images[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]
            if flip:
                pixels = pixels[:, :, ::-1, :]
            features = _run_batched(extract, pixels, batch)
            atomic.write_npy(_chunk_path(directory, index), features)
            done += len(pixels)
            if progress:
                progress(done, n)
        if worker.count == 1 and len(todo) == math.ceil(n / CHUNK_SIZE):  # all of it, here and now
            _record_seconds(directory, time.perf_counter() - started)
    deadline = time.time() + wait_seconds
    while (result := cached_features(spec, n)) is None:
        if worker.count == 1 or time.time() > deadline:
            raise FeaturesMissing(f"feature cache {directory} is incomplete after extraction")
        time.sleep(2)  # other workers are still filling their chunks
    return result


def _run_batched(extract, pixels: np.ndarray, batch: int) -> np.ndarray:
    out = []
    for start in range(0, len(pixels), batch):
        part = np.ascontiguousarray(pixels[start : start + batch])
        short = batch - len(part)
        if short:  # pad the last batch: one traced shape, no second trace or XLA compile
            part = np.concatenate([part, np.zeros((short, *part.shape[1:]), part.dtype)])
        out.append(np.asarray(extract(part))[: batch - short])
    return np.concatenate(out).astype(np.float32)


def _write_manifest(directory: Path, spec: FeatureSpec, n: int) -> None:
    path = directory / "manifest.json"
    if not path.exists():
        manifest = {**spec.__dict__, "n_images": n, "chunk_size": CHUNK_SIZE, "created": time.time()}
        atomic.write_json(path, manifest)


def _record_seconds(directory: Path, seconds: float) -> None:
    """The set's extraction time in its manifest: only for a set one process extracted whole
    (a resumed or shared extraction's time is unknown, and stays absent)."""
    path = directory / "manifest.json"
    with contextlib.suppress(OSError, ValueError):  # unreadable: the time stays unknown, features fine
        atomic.write_json(path, {**json.loads(path.read_text()), "seconds": seconds})


def load_features(
    images: np.ndarray, config: TransferConfig, weights: BackboneWeights, split: str, flip: bool
) -> np.ndarray:
    """Cached features or FeaturesMissing with how long extraction would take."""
    spec = FeatureSpec.of(config, weights, split, flip, images)
    features = cached_features(spec, len(images))
    if features is None:
        minutes = estimate_seconds(config, len(images)) / 60
        raise FeaturesMissing(
            f"features {spec.name} are not cached; extracting {len(images)} images takes "
            f"about {minutes:.0f} min on 2 CPU cores (`python -m cifar extract`)"
        )
    return features


def needed_splits(config: TransferConfig) -> list[tuple[str, bool]]:
    """(split, flip) pairs a transfer config trains and tests on, cheapest-first order."""
    needed = [("train", False), ("test", False)]
    if config.tta_flip:
        needed.append(("test", True))
        if not config.flip_features and config.validation_size:
            # The validation predictions (calibration) are made as the test's: flip included.
            needed.append(("validation", True))
    if config.flip_features:
        needed.append(("train", True))
    return needed


def split_images(data: Cifar10, split: str, config: TransferConfig) -> np.ndarray:
    """The images of "train", "test" or "validation" (the config's validation rows of train)."""
    if split == "validation":
        return data.x_train[validation_rows(config.model_dump(), len(data.x_train))]
    return data.x_train if split == "train" else data.x_test


def ensure_features(
    config: TransferConfig,
    data: Cifar10,
    weights: BackboneWeights,
    *,
    extract_missing: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[tuple[str, bool], np.ndarray]:
    """Every feature set `config` needs: from the cache, or extracted now if `extract_missing`.

    `progress(label, done, total)` follows each extraction ("train", "test flipped", ...); a set
    that is missing while `extract_missing` is False raises `FeaturesMissing` naming the time.
    """
    features = {}
    for split, flip in needed_splits(config):
        images = split_images(data, split, config)
        try:
            features[split, flip] = load_features(images, config, weights, split, flip)
        except FeaturesMissing:
            if not extract_missing:
                raise
            label = f"{split}{' flipped' if flip else ''}"
            report = (lambda done, total, label=label: progress(label, done, total)) if progress else None
            features[split, flip] = extract_features(images, config, weights, split, flip, progress=report)
    return features


def extract_for_config(
    config: TransferConfig, limit: int | None = None, log: Callable[[str], None] = print
) -> dict[tuple[str, bool], np.ndarray]:
    """Extract (or load) every feature set `config` needs, with a progress bar per set."""
    from cifar.sources.assets import load_cifar10, load_inception_weights

    data = load_cifar10(log=log).limited(limit)
    weights = load_inception_weights(config.weights, log=log)
    from cifar.terminal import terminal_progress

    return ensure_features(config, data, weights, progress=terminal_progress("features", only_terminal=False))
