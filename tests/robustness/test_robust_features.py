"""Feature extraction killed mid-way: no corrupt chunk is ever trusted, and a rerun resumes.

A subprocess runs the real `cifar.modeling.features.extract_features` with a random-weights InceptionV3
at 75 px and CHUNK_SIZE 2, and is SIGKILLed while it writes its third chunk (half the bytes on
disk). A second subprocess must reuse the finished chunks, recompute the missing one, and also
recompute a chunk that was truncated on disk in between.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.robustness.robust_helpers import subprocess_env

N_IMAGES, CHUNK = 10, 2  # five chunks

SCRIPT = r"""
import json, os, sys, time
from pathlib import Path
import numpy as np

mode, weights_file, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if not weights_file.exists():
    import keras
    keras.utils.set_random_seed(3)
    keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(75, 75, 3)).save_weights(
        str(weights_file)
    )

from cifar.modeling import features
from cifar.sources.assets import BackboneWeights
from cifar.config import TransferConfig

CHUNK, N_IMAGES = int(sys.argv[4]), int(sys.argv[5])
features.CHUNK_SIZE = CHUNK
images = np.random.default_rng(0).integers(0, 256, (N_IMAGES, 32, 32, 3), dtype=np.uint8)
config = TransferConfig(resize="bilinear", input_size=75)
weights = BackboneWeights(source="test", path=weights_file, sha256="0" * 64)

computed = []
real_make = features.make_extract_fn

def counting_make(*args, **kwargs):
    extract = real_make(*args, **kwargs)
    def counted(pixels):
        computed.append(int(pixels.shape[0]))
        return extract(pixels)
    counting_make.extract = extract
    return counted

features.make_extract_fn = counting_make

if mode == "kill":
    real_save = np.save
    saves = []
    def torn_save(handle, array, *args, **kwargs):
        saves.append(1)
        if len(saves) == 3:  # the third chunk: write half of it, then wait to be killed
            buffer = __import__("io").BytesIO()
            real_save(buffer, array, *args, **kwargs)
            data = buffer.getvalue()
            handle.write(data[: len(data) // 2])
            handle.flush()
            print("TORN", flush=True)
            time.sleep(600)
        return real_save(handle, array, *args, **kwargs)
    features.np.save = torn_save

progress = []
result = features.extract_features(
    images, config, weights, "train", batch_size=CHUNK, progress=lambda done, total: progress.append(done)
)
fresh = features._run_batched(counting_make.extract, images, CHUNK)
np.save(out / "result.npy", result)
print(json.dumps({
    "first_progress": progress[0], "computed_images": sum(computed), "shape": list(result.shape),
    "max_difference": float(np.abs(result - fresh).max()),
}))
"""


def chunk_files(keras_home: Path) -> dict[int, Path]:
    folders = list((keras_home / "features").iterdir())
    assert len(folders) == 1, folders
    return {int(p.stem.split("-")[1]): p for p in folders[0].glob("chunk-*.npy")}


def assert_valid_chunk(path: Path) -> None:
    array = np.load(path, allow_pickle=False)
    assert array.shape == (CHUNK, 2048) and array.dtype == np.float32, (path.name, array.shape)


@pytest.mark.slow
def test_killed_extraction_leaves_no_corrupt_chunk_and_resumes(tmp_path):
    keras_home = Path(os.environ["KERAS_HOME"])
    weights = tmp_path / "inception75.weights.h5"
    script = tmp_path / "extract.py"
    script.write_text(SCRIPT)
    env = subprocess_env()
    sizes = [str(CHUNK), str(N_IMAGES)]
    command = [sys.executable, str(script), "kill", str(weights), str(tmp_path), *sizes]

    # 1. Killed while the third chunk is half written.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    watchdog = threading.Timer(240, os.killpg, (process.pid, signal.SIGKILL))  # never hang the suite
    watchdog.start()
    try:
        line = process.stdout.readline()  # blocks until TORN (or the process dies)
        assert line.strip() == "TORN", process.stderr.read()[-3000:]
    finally:
        watchdog.cancel()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()

    chunks = chunk_files(keras_home)
    assert sorted(chunks) == [0, 1], "only the two finished chunks may carry a chunk name"
    for path in chunks.values():
        assert_valid_chunk(path)
    torn = list(chunks[0].parent.glob(".chunk-00002.npy.*.part"))
    assert len(torn) == 1 and torn[0].stat().st_size > 0  # the torn write sits under a temporary name

    # 2. Damage a finished chunk by hand (a disk that filled up, a copy cut short).
    data = chunks[0].read_bytes()
    chunks[0].write_bytes(data[: len(data) // 3])

    # 3. The rerun recomputes chunk 0 and chunks 2..4 and reuses chunk 1.
    rerun = subprocess.run(
        [sys.executable, str(script), "resume", str(weights), str(tmp_path), *sizes],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert report["shape"] == [N_IMAGES, 2048]
    assert report["first_progress"] == CHUNK  # chunk 1 only was reusable
    assert report["computed_images"] == N_IMAGES - CHUNK  # chunks 0, 2, 3 and 4
    assert report["max_difference"] < 1e-4  # resumed features equal a fresh computation
    chunks = chunk_files(keras_home)
    assert sorted(chunks) == list(range(N_IMAGES // CHUNK))
    for path in chunks.values():
        assert_valid_chunk(path)
