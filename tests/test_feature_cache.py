"""The feature cache's inventory and pruning (`cifar.modeling.feature_cache`), on cache folders
written here."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from cifar import atomic
from cifar.modeling import feature_cache, features
from cifar.modeling.features import FeatureSpec
from tests.factory import dead_pid


def _cache_set(spec: FeatureSpec, name: str, n_images: int) -> Path:
    """A cache folder called `name` holding `spec`'s manifest and `n_images` zero features."""
    folder = features.keras_home() / "features" / name
    folder.mkdir(parents=True)
    features._write_manifest(folder, spec, n_images)
    for index in range(-(-n_images // features.CHUNK_SIZE)):
        rows = features.chunk_rows(n_images, index)
        atomic.write_npy(features._chunk_path(folder, index), np.zeros((rows, 4), np.float32))
    return folder


def test_cache_inventory_and_prune_remove_obsolete_sets_and_dead_part_files(monkeypatch, capsys):
    from cifar.cli import main

    monkeypatch.setattr(features, "CHUNK_SIZE", 5)
    spec = FeatureSpec("keras", "0" * 64, "keras", "bilinear", 224, "train", False, "1" * 64)
    current = _cache_set(spec, spec.name, 12)
    before_rename = _cache_set(spec, spec.name.replace("-r2", ""), 12)  # made before 2026-11-25
    other = dataclasses.replace(spec, split="test")
    torn = _cache_set(other, other.name, 12)
    (torn / "chunk-00001.npy").write_bytes(b"torn")
    newer = _cache_set(other, "written-by-newer-code", 5)
    manifest = json.loads((newer / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "a_future_field": 1}))
    dead = current / f".chunk-00003.npy.0a1b2c3d.{dead_pid()}.part"
    live = current / f".chunk-00004.npy.0a1b2c3d.{os.getpid()}.part"  # an extraction still writing
    recent = current / f".chunk-00005.npy.0a1b2c3d.{dead_pid()}.part"  # maybe another machine's worker
    for part in (dead, live, recent):
        part.write_bytes(b"x" * 1000)
    hours_ago = time.time() - 2 * 3600
    for path in (dead, live, before_rename):
        os.utime(path, (hours_ago, hours_ago))

    listed = {c.name: (c.n_images, c.complete, c.obsolete) for c in feature_cache.cache_inventory()}
    assert listed == {
        current.name: (12, True, False),
        before_rename.name: (12, True, True),
        torn.name: (12, False, False),
        newer.name: (5, True, False),
    }
    assert main(["features"]) == 0
    assert "obsolete" in capsys.readouterr().out

    removed, freed = feature_cache.prune_cache()
    assert set(removed) == {before_rename, dead} and freed > 0
    assert current.is_dir() and torn.is_dir() and newer.is_dir() and not before_rename.exists()
    assert live.exists() and recent.exists()
    assert features.cached_features(spec, 12).shape == (12, 4)
