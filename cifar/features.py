"""The frozen base's pooled features, computed once and cached in resumable chunks.

Why training the head on cached features gives the reference's model: with every base layer
frozen, Keras runs the base in inference mode (BatchNormalization uses its moving statistics and
nothing in it is random), so the base's pooled output is a fixed function of each image. The
reference's end-to-end `fit` therefore sees the same 2048-d vector for an image at every epoch;
only the head's weights change. Computing that vector once and training the head on it is the
same optimisation problem, at a fraction of the cost (`tests/test_features.py` checks that base +
head on cached features predicts the same as the assembled full model).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar.assets import BackboneWeights, sha256_bytes
from cifar.config import TransferConfig, keras_home, xla_resized_wrongly

CHUNK_SIZE = 1000  # images per cache file: a kill loses at most this much work
CPU_BATCH, GPU_BATCH = 50, 256
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
            images_sha256=images_checksum(images),
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
        """Caches of this resize made before 2026-11-25 hold features of XLA's faulty bilinear
        upscaling (see `outside_xla`); the new name keeps them from being reused or mixed."""
        return xla_resized_wrongly(self.resize, self.input_size)

    def directory(self) -> Path:
        return keras_home() / "features" / self.name


def images_checksum(images: np.ndarray) -> str:
    return sha256_bytes(np.ascontiguousarray(images).tobytes())


def gpu_available() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def default_precision() -> str:
    return "mixed_float16" if os.environ.get("CIFAR_MIXED_PRECISION", "auto") != "0" and _gpu() else "float32"


def _gpu() -> bool:
    """Is a GPU usable? Asks TensorFlow only if it is loaded already (pages stay TF-free)."""
    if "tensorflow" not in sys.modules:
        nvidia = Path("/proc/driver/nvidia/gpus")
        return nvidia.is_dir() and any(nvidia.iterdir())
    try:
        return gpu_available()
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


def _chunk_rows(n_images: int, index: int) -> int:
    return min(CHUNK_SIZE, n_images - index * CHUNK_SIZE)


def _missing_chunks(directory: Path, n_images: int) -> list[int]:
    """Indices of the chunks of `n_images` that are absent or unreadable in `directory`."""
    return [
        i
        for i in range(math.ceil(n_images / CHUNK_SIZE))
        if not _valid_chunk(_chunk_path(directory, i), _chunk_rows(n_images, i))
    ]


def _valid_chunk(path: Path, rows: int) -> bool:
    return _open_chunk(path, rows) is not None


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
        rows = _chunk_rows(n_images, index)
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


def aligned_empty(shape: tuple[int, ...], dtype=np.float32, alignment: int = 64) -> np.ndarray:
    """`np.empty` whose data starts on a 64-byte boundary, so TensorFlow can use it without a copy.

    numpy aligns to 16 bytes; TensorFlow's CPU kernels need 64. Training wraps the cached
    features with DLPack (`cifar.data.as_tensor`): on a machine where touching fresh memory runs
    at ~0.4 GB/s, each avoided copy of the 400 MB training features saves about a second.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    offset = -raw.ctypes.data % alignment
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def make_extract_fn(config: TransferConfig, weights_path, precision: str = "float32"):
    """uint8 batch -> resize -> preprocess -> frozen base -> pooled features, as traced graphs."""
    import keras
    import tensorflow as tf

    from cifar.models import build_pooled_base, build_resize

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        resize, pooled = build_resize(config), build_pooled_base(config, weights_path)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    prepare = outside_xla(resize)

    # On a CPU, TensorFlow's own executor with its oneDNN kernels runs the base ~30 % faster
    # than XLA's CPU backend (34 vs 25 img/s at 299 px on 2 cores); on a GPU, XLA compiles it.
    @tf.function(jit_compile=precision != "float32" or _gpu(), reduce_retracing=True)
    def base(resized):
        return tf.cast(pooled(resized, training=False), tf.float32)

    return lambda pixels: base(prepare(pixels))


def outside_xla(resize):
    """`resize` (a `build_resize` model) as a graph that XLA never compiles.

    XLA's CPU bilinear resize is wrong at odd integer scale factors (32 -> 96, 160, 224, 288 px:
    3 % of the pixels come out of the wrong source column; tensorflow/tensorflow#118344, open)
    and XLA has no bicubic resize at all. TensorFlow's own kernels agree with Pillow.
    """
    import tensorflow as tf

    return tf.function(lambda pixels: resize(pixels, training=False), reduce_retracing=True)


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

    Under a TF_CONFIG cluster (`cifar.distribute`), worker k of n computes the chunks with
    index % n == k into the shared cache, then waits until the other workers' chunks are there.
    """
    from cifar.distribute import this_worker

    worker = worker or this_worker()
    spec = FeatureSpec.of(config, weights, split, flip, images)
    directory = spec.directory()
    directory.mkdir(parents=True, exist_ok=True)
    _write_manifest(directory, spec, len(images))
    n = len(images)
    todo = [i for i in _missing_chunks(directory, n) if i % worker.count == worker.index]
    done = n - sum(_chunk_rows(n, i) for i in todo)
    if progress:
        progress(done, n)
    if todo:
        batch = batch_size or (GPU_BATCH if spec.precision != "float32" or _gpu() else CPU_BATCH)
        extract = make_extract_fn(config, weights.path, spec.precision)
        for index in todo:
            pixels = images[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]
            if flip:
                pixels = pixels[:, :, ::-1, :]
            features = _run_batched(extract, pixels, batch)
            _save_chunk(_chunk_path(directory, index), features)
            done += len(pixels)
            if progress:
                progress(done, n)
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


def _save_chunk(path: Path, features: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with open(tmp, "wb") as handle:
        np.save(handle, features)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _write_manifest(directory: Path, spec: FeatureSpec, n: int) -> None:
    manifest = {**spec.__dict__, "n_images": n, "chunk_size": CHUNK_SIZE, "created": time.time()}
    path = directory / "manifest.json"
    if not path.exists():
        tmp = directory / f".manifest.{os.getpid()}.part"
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, path)


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
    if config.flip_features:
        needed.append(("train", True))
    return needed


def split_images(data, split: str, limit: int | None = None) -> np.ndarray:
    images = data.x_train if split == "train" else data.x_test
    return images[:limit] if limit else images


def extract_for_config(
    config: TransferConfig,
    limit: int | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[tuple[str, bool], np.ndarray]:
    """Extract (or load) every feature set `config` needs, with a progress bar per set."""
    from tqdm.auto import tqdm

    from cifar.assets import load_cifar10, load_inception_weights

    data = load_cifar10(log=log)
    weights = load_inception_weights(config.weights, log=log)
    out = {}
    for split, flip in needed_splits(config):
        images = split_images(data, split, limit)
        label = f"{split}{' (flipped)' if flip else ''}"
        with tqdm(total=len(images), desc=f"features {label}", unit="img", mininterval=5) as bar:

            def report(done: int, total: int, bar=bar, label=label) -> None:
                bar.update(done - bar.n)
                if progress:
                    progress(label, done, total)

            out[(split, flip)] = extract_features(images, config, weights, split, flip, progress=report)
    return out


def missing_features(config: TransferConfig, data, weights: BackboneWeights) -> list[tuple[str, bool, int]]:
    """(split, flip, images) of every feature set `config` needs that is not fully cached."""
    missing = []
    for split, flip in needed_splits(config):
        images = split_images(data, split)
        spec = FeatureSpec.of(config, weights, split, flip, images)
        todo = sum(_chunk_rows(len(images), i) for i in _missing_chunks(spec.directory(), len(images)))
        if todo:
            missing.append((split, flip, todo))
    return missing


# ----------------------------------------------------------------------------- the cache folder


@dataclass(frozen=True)
class CachedSet:
    """One folder of the feature cache, as `python -m cifar features` lists it."""

    name: str
    path: Path
    n_images: int | None  # from the manifest; None if it is unreadable
    complete: bool
    megabytes: float
    obsolete: bool  # its name is not what today's naming gives its manifest (see `FeatureSpec.name`)


def cache_inventory(check_chunks: bool = True) -> list[CachedSet]:
    """Every feature set in the cache, by name; `check_chunks=False` skips opening every chunk
    (`complete` is then False)."""
    root = keras_home() / "features"
    if not root.is_dir():
        return []
    sets = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            sets.append(_describe(path, check_chunks))
        except OSError:  # removed while we looked (a prune, a user)
            continue
    return sets


def _describe(path: Path, check_chunks: bool) -> CachedSet:
    size = sum(_size(p) for p in path.iterdir()) / 1e6
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        n_images = int(manifest["n_images"])
        known = set(FeatureSpec.__dataclass_fields__) | {"n_images", "chunk_size", "created"}
        fields = {key: manifest[key] for key in FeatureSpec.__dataclass_fields__ if key in manifest}
        # A manifest with fields this version does not know comes from newer code: not obsolete.
        obsolete = set(manifest) <= known and FeatureSpec(**fields).name != path.name
    except (OSError, ValueError, KeyError, TypeError):
        return CachedSet(path.name, path, None, False, size, False)
    complete = check_chunks and not _missing_chunks(path, n_images)
    return CachedSet(path.name, path, n_images, complete, size, obsolete)


def _size(path: Path) -> int:
    try:  # a part file may be renamed between listing and asking
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


PRUNE_AFTER_SECONDS = 3600  # nothing written to within the last hour is pruned


def prune_cache() -> tuple[list[Path], float]:
    """Remove obsolete feature sets and the `.part` files of killed extractions.

    Returns what was removed and the megabytes freed. Nothing touched in the last hour goes:
    another worker of a multi-worker extraction (another machine, other pids) may be writing.
    """
    import shutil

    removed, freed = [], 0.0
    for cached in cache_inventory(check_chunks=False):
        if cached.obsolete and _age_seconds(cached.path) > PRUNE_AFTER_SECONDS:
            shutil.rmtree(cached.path, ignore_errors=True)
            removed.append(cached.path)
            freed += cached.megabytes
            continue
        for part in cached.path.glob(".*.part"):
            if not _writer_alive(part) and _age_seconds(part) > PRUNE_AFTER_SECONDS:
                freed += _size(part) / 1e6
                part.unlink(missing_ok=True)
                removed.append(part)
    return removed, freed


def _writer_alive(part: Path) -> bool:
    """Is the process named in `.<file>.<pid>.part` still running?"""
    try:
        pid = int(part.name.rsplit(".", 2)[-2])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
