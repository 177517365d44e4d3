"""Loading never runs code from a file: `np.load` always with allow_pickle=False, no pickle /
eval / exec / unsafe Keras loading in cifar/, and the torch-free unpickler refuses anything but
the few globals a state dict needs.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cifar.sources.inception2015 import read_torchscript_tensors
from tests.factory import REPO
from tests.robustness.robust_helpers import subprocess_env

SOURCES = sorted((REPO / "cifar").rglob("*.py"))
APP_SOURCES = sorted(
    [*(REPO / "dashboard").glob("*.py"), *(REPO / "app_pages").glob("*.py"), REPO / "streamlit_app.py"]
)


def calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(REPO)}:{node.lineno}"


def test_the_scan_sees_the_sources():
    assert len(SOURCES) >= 8
    assert (
        sum(1 for path in SOURCES for call in calls(path) if dotted(call.func) in ("np.load", "numpy.load"))
        >= 3  # the run reader (cifar.store.run_files), the data set, the feature cache
    )


@pytest.mark.parametrize("path", SOURCES + [p for p in APP_SOURCES if p.exists()], ids=lambda p: p.name)
def test_np_load_never_allows_pickle(path):
    text = path.read_text()
    assert "from numpy import load" not in text and "allow_pickle=True" not in text
    for call in calls(path):
        if dotted(call.func) not in ("np.load", "numpy.load"):
            continue
        value = keyword(call, "allow_pickle")
        assert isinstance(value, ast.Constant) and value.value is False, (
            f"{where(path, call)}: np.load without allow_pickle=False"
        )
        mmap = keyword(call, "mmap_mode")
        assert mmap is None or isinstance(mmap, ast.Constant), where(path, call)


FORBIDDEN_CALLS = {
    "pickle.load",
    "pickle.loads",
    "eval",
    "exec",
    "compile",
    "__import__",
    "marshal.loads",
    "os.system",
    "os.popen",
    "torch.load",
    "yaml.load",
    "keras.config.enable_unsafe_deserialization",
    "shelve.open",
}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_code_executing_loaders(path):
    for call in calls(path):
        name = dotted(call.func)
        assert name not in FORBIDDEN_CALLS, f"{where(path, call)}: {name}("
        if name.endswith("load_model") or name.endswith("load_weights"):
            safe = keyword(call, "safe_mode")
            assert not (isinstance(safe, ast.Constant) and safe.value is False), (
                f"{where(path, call)}: safe_mode=False"
            )
        if name.startswith("subprocess."):
            shell = keyword(call, "shell")
            assert not (isinstance(shell, ast.Constant) and shell.value is True), (
                f"{where(path, call)}: shell=True"
            )
        if name in ("pickle.Unpickler", "pickle._Unpickler", "Unpickler", "_pickle.Unpickler"):
            pytest.fail(f"{where(path, call)}: an unrestricted Unpickler")
    text = path.read_text()
    assert "safe_mode=False" not in text


def test_only_the_restricted_unpickler_subclasses_pickle():
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any("Unpickler" in dotted(b) for b in node.bases):
                assert node.name == "_TorchFreeUnpickler", where(path, node)
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                assert "find_class" in methods


# ----------------------------------------------------------------------------- hostile pickles


def torchscript_zip(data_pkl: bytes, storages: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/version", "3\n")
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
    return buffer.getvalue()


class RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo hacked > {self.marker}",))


class RunsEval:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('hacked')",))


class RunsSubprocess:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


class ImportsModule:
    def __reduce__(self):
        return (__import__, ("antigravity",))


@pytest.mark.parametrize(
    "payload",
    [RunsShell, RunsEval, RunsSubprocess, lambda marker: ImportsModule()],
    ids=["os.system", "builtins.eval", "subprocess.call", "__import__"],
)
@pytest.mark.parametrize("nested", [False, True], ids=["top level", "inside a state dict"])
def test_unpickler_refuses_code_execution(payload, nested, tmp_path):
    marker = tmp_path / "hacked"
    obj = payload(marker)
    if nested:
        obj = {"conv.weight": {"state": obj}}
    data = pickle.dumps(obj, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_torchscript_tensors(torchscript_zip(data))
    assert not marker.exists(), "the pickle ran code"


def test_unpickler_refuses_reduce_of_allowed_looking_names(tmp_path):
    """A module whose name merely starts like torch's must not resolve to real code."""
    data = b"\x80\x02ctorch.jit._pickle_evil\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    with pytest.raises(pickle.UnpicklingError):
        read_torchscript_tensors(torchscript_zip(data))
    data = b"\x80\x02ctorch\nload\nq\x00X\x01\x00\x00\x00xq\x01\x85q\x02Rq\x03."
    with pytest.raises(pickle.UnpicklingError):
        read_torchscript_tensors(torchscript_zip(data))


TENSOR_SCRIPT = r"""
import io, pickle, sys, types, zipfile
import numpy as np

# Stand-ins so that pickle can name torch's globals; removed before the reader runs.
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
class FloatStorage: pass
FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage
def _rebuild_tensor_v2(*args): pass
_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils

class Storage: pass
class Tensor:
    def __init__(self, size, stride):
        self.size, self.stride = size, stride
    def __reduce__(self):
        return (_rebuild_tensor_v2, (STORAGE, 0, self.size, self.stride, False, {}))
class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", FloatStorage, "0", "cpu", 4) if obj is STORAGE else None
STORAGE = Storage()

def torchscript(size, stride):
    data = io.BytesIO()
    Pickler(data, protocol=2).dump({"w": Tensor(size, stride)})
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("archive/data.pkl", data.getvalue())
        z.writestr("archive/data/0", np.arange(4, dtype="<f4").tobytes())  # 4 floats
    return archive.getvalue()

size, stride = eval(sys.argv[1]), eval(sys.argv[2])
payload = torchscript(size, stride)
del sys.modules["torch"], sys.modules["torch._utils"]

from cifar.sources.inception2015 import read_torchscript_tensors
try:
    tensors = read_torchscript_tensors(payload)
except Exception as error:
    print("REFUSED", type(error).__name__, error)
else:
    print("READ", {k: v.tolist() for k, v in tensors.items()})
"""


def read_tensor(size, stride) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", TENSOR_SCRIPT, repr(size), repr(stride)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )


def test_unpickler_reads_a_well_formed_tensor():
    result = read_tensor((2, 2), (2, 1))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "READ {'w': [[0.0, 1.0], [2.0, 3.0]]}"


@pytest.mark.parametrize(
    ("size", "stride"),
    [((64,), (1,)), ((4,), (-1,)), ((1 << 26,), (1 << 20,))],
    ids=["size beyond the storage", "negative stride", "far outside (segfault)"],
)
def test_unpickler_refuses_tensors_outside_their_storage(size, stride):
    """A crafted .pt must not make as_strided read memory outside its storage."""
    result = read_tensor(size, stride)
    assert result.returncode == 0, f"the reader crashed (exit {result.returncode})"
    assert result.stdout.startswith("REFUSED"), result.stdout[:200]


def test_np_load_of_a_pickled_run_file_is_refused(tmp_path):
    """What the allow_pickle=False rule buys: a pickled .npy in a run folder cannot run code."""
    marker = tmp_path / "hacked"
    path = tmp_path / "test_predictions.npy"
    np.save(path, np.array([RunsShell(marker)], dtype=object), allow_pickle=True)
    from cifar.store.runs import Run

    run = Run("x", tmp_path, {}, {})
    with pytest.raises(ValueError, match="test_predictions.npy: unreadable"):  # a RunError
        _ = run.test_predictions
    assert not marker.exists()
