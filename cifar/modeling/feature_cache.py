"""The feature cache as a whole: what it holds (`python -m cifar features`) and pruning it.

Each folder under `<keras home>/features/` is one feature set, named by `FeatureSpec.name`; a
folder whose name is not what today's naming gives its manifest is obsolete.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cifar.atomic import writer_pid
from cifar.config import TransferConfig, keras_home
from cifar.modeling.features import FeatureSpec, chunk_rows, missing_chunks, needed_splits, split_images
from cifar.sources.assets import BackboneWeights
from cifar.store.processes import pid_alive

PRUNE_AFTER_SECONDS = 3600  # nothing written to within the last hour is pruned


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
        known = set(FeatureSpec.__dataclass_fields__) | {"n_images", "chunk_size", "created", "seconds"}
        fields = {key: manifest[key] for key in FeatureSpec.__dataclass_fields__ if key in manifest}
        # A manifest with fields this version does not know comes from newer code: not obsolete.
        obsolete = set(manifest) <= known and FeatureSpec(**fields).name != path.name
    except (OSError, ValueError, KeyError, TypeError):
        return CachedSet(path.name, path, None, False, size, False)
    complete = check_chunks and not missing_chunks(path, n_images)
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


def prune_cache() -> tuple[list[Path], float]:
    """Remove obsolete feature sets and the `.part` files of killed extractions.

    Returns what was removed and the megabytes freed. A part file goes only if the writer named in
    it (`cifar.atomic.writer_pid`) is dead, and nothing touched in the last hour goes: another
    worker of a multi-worker extraction (another machine, other pids) may be writing.
    """
    removed, freed = [], 0.0
    for cached in cache_inventory(check_chunks=False):
        if cached.obsolete and _age_seconds(cached.path) > PRUNE_AFTER_SECONDS:
            shutil.rmtree(cached.path, ignore_errors=True)
            removed.append(cached.path)
            freed += cached.megabytes
            continue
        for part in cached.path.glob(".*.part"):
            if not pid_alive(writer_pid(part)) and _age_seconds(part) > PRUNE_AFTER_SECONDS:
                freed += _size(part) / 1e6
                part.unlink(missing_ok=True)
                removed.append(part)
    return removed, freed


def extraction_seconds(config: TransferConfig, data, weights: BackboneWeights) -> float | None:
    """Seconds the extraction of every feature set `config` needs took, from their manifests;
    None if a set is missing or its time was not recorded (extracted before times were kept)."""
    total = 0.0
    for split, flip in needed_splits(config):
        spec = FeatureSpec.of(config, weights, split, flip, split_images(data, split, config))
        try:
            total += float(json.loads((spec.directory() / "manifest.json").read_text())["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return total


def missing_features(config: TransferConfig, data, weights: BackboneWeights) -> list[tuple[str, bool, int]]:
    """(split, flip, images) of every feature set `config` needs that is not fully cached."""
    missing = []
    for split, flip in needed_splits(config):
        images = split_images(data, split, config)
        spec = FeatureSpec.of(config, weights, split, flip, images)
        todo = sum(chunk_rows(len(images), i) for i in missing_chunks(spec.directory(), len(images)))
        if todo:
            missing.append((split, flip, todo))
    return missing
