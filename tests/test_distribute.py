"""Scale-out: two MultiWorkerMirroredStrategy workers on 127.0.0.1, and sharded extraction."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from cifar.modeling.distribute import Worker, bfloat16_unit, this_worker
from tests.factory import REPO, tiny_cifar, write_npz


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


@pytest.mark.parametrize(
    ("flags", "unit"),
    [
        ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", "cpu"),
        ("fpu sse2 avx2 amx_bf16 amx_tile", "cpu"),
        ("fpu sse2 avx2 avx512f avx512_vnni", "emulated"),
    ],
)
def test_bfloat16_unit_reads_the_cpu_flags(flags, unit, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert bfloat16_unit(str(cpuinfo), str(tmp_path / "no-nvidia")) == unit


def test_bfloat16_unit_prefers_an_nvidia_gpu_and_says_none_when_it_cannot_tell(tmp_path):
    (tmp_path / "gpus" / "0000:01:00.0").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    assert bfloat16_unit(str(tmp_path / "missing"), str(tmp_path / "gpus")) == "gpu"
    assert bfloat16_unit(str(tmp_path / "missing"), str(tmp_path / "empty")) is None
    (tmp_path / "flagless").write_text("processor\t: 0\n")
    assert bfloat16_unit(str(tmp_path / "flagless"), str(tmp_path / "empty")) is None


def test_this_worker_reads_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert this_worker() == Worker(0, 1)
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2, 3], 2))
    assert this_worker() == Worker(2, 3)
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 5))
    with pytest.raises(ValueError, match="not one of the 2 workers"):
        this_worker()


@pytest.mark.slow
def test_two_workers_train_one_run(tmp_path):
    ports = free_ports(2)
    env = {
        **os.environ,
        "CIFAR_ARTIFACTS": str(tmp_path / "artifacts"),
        "KERAS_HOME": str(tmp_path / "keras"),
        "CIFAR10_NPZ": str(write_npz(tmp_path / "tiny.npz", tiny_cifar(200, 50))),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(REPO),
    }
    command = [
        sys.executable,
        "-m",
        "cifar",
        "train",
        "baseline",
        "--run-id",
        "dist",
        "--epochs",
        "2",
        "--validation-size",
        "20",
        "--batch-size",
        "20",
    ]
    workers = [
        subprocess.Popen(
            command,
            env={**env, "TF_CONFIG": tf_config(ports, i)},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    runs = tmp_path / "artifacts" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["dist"]  # the chief's only; no worker copy
    config = json.loads((runs / "dist" / "config.json").read_text())
    assert config["workers"] == 2
    probabilities = np.load(runs / "dist" / "test_predictions.npy")
    assert probabilities.shape == (50, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-4)


@pytest.mark.slow
def test_sharded_extraction_fills_one_cache(tmp_path):
    script = f"""
import sys, numpy as np, keras
sys.path.insert(0, {str(REPO)!r})
import cifar.modeling.features as features
from cifar.sources.assets import BackboneWeights
from cifar.config import TransferConfig
from cifar.modeling.distribute import Worker
features.CHUNK_SIZE = 4
config = TransferConfig(resize="bilinear", input_size=75)
weights = BackboneWeights("test", {str(tmp_path / "w.weights.h5")!r}, "0" * 64)
images = np.random.default_rng(1).integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
index = int(sys.argv[1])
out = features.extract_features(images, config, weights, "train", worker=Worker(index, 2), wait_seconds=240)
np.save({str(tmp_path)!r} + f"/out{{index}}.npy", out)
"""
    keras_home = tmp_path / "keras"
    env = {**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    make_weights = (
        "import keras; keras.utils.set_random_seed(0); keras.applications.InceptionV3(weights=None, "
        "include_top=False, input_shape=(75, 75, 3)).save_weights("
        + repr(str(tmp_path / "w.weights.h5"))
        + ")"
    )
    subprocess.run([sys.executable, "-c", make_weights], env=env, check=True, timeout=300)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for worker in workers:
        output = worker.communicate(timeout=300)[0]
        assert worker.returncode == 0, output[-3000:]
    first, second = np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy")
    assert first.shape == (12, 2048)
    np.testing.assert_array_equal(first, second)
    chunks = sorted(keras_home.glob("features/*/chunk-*.npy"))
    assert [c.name for c in chunks] == ["chunk-00000.npy", "chunk-00001.npy", "chunk-00002.npy"]
