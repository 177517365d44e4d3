"""`cifar.atomic`: a write replaces the file in one step, and an error leaves the old file and no
temporary file behind."""

from __future__ import annotations

import hashlib
import os

import pytest

from cifar import assets, atomic


def test_atomic_write_replaces_in_one_step(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    atomic.write_bytes(path, b"one")
    atomic.write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]
    assert assets.sha256_file(path) == hashlib.sha256(b"two").hexdigest()


def test_atomic_write_leaves_the_old_file_and_no_part_file_on_error(tmp_path):
    path = tmp_path / "file.bin"
    atomic.write_bytes(path, b"old")
    with pytest.raises(OSError, match="disk full"), atomic.atomic_write(path, suffix=".weights.h5") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".part.weights.h5")
        assert atomic.writer_pid(tmp) == os.getpid()
        tmp.write_bytes(b"half of the new")
        raise OSError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
