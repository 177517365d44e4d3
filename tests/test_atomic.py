"""`cifar.atomic`: a write replaces the file in one step, and an error leaves the old file and no
temporary file behind."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest

from cifar import atomic
from cifar.sources import assets


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


# ----------------------------------------------------------------------------- a full disk (#30)


def full_disk_on(target_name: str, monkeypatch, short_write: bool = False) -> None:
    """Writing a temporary file of `target_name` fails as a full disk fails: ENOSPC, or numpy's
    short write (no errno) on a disk with no space left."""
    real_write_bytes = atomic.Path.write_bytes

    def write_bytes(self, data):
        if self.name.startswith(f".{target_name}."):
            real_write_bytes(self, data[: len(data) // 2])
            if short_write:
                raise OSError(f"{len(data)} requested and {len(data) // 2} written")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(atomic.Path, "write_bytes", write_bytes)
    if short_write:
        monkeypatch.setattr(atomic, "_nearly_full", lambda folder: True)


@pytest.mark.parametrize("short_write", [False, True], ids=["ENOSPC", "short write"])
def test_a_full_disk_replaces_no_file_of_a_group_and_says_so_in_one_line(tmp_path, monkeypatch, short_write):
    for name in ("a.bin", "b.bin", "c.bin"):
        atomic.write_bytes(tmp_path / name, b"old " + name.encode())
    full_disk_on("b.bin", monkeypatch, short_write)
    with pytest.raises(atomic.WriteError) as raised, atomic.written_together() as files:
        for name in ("a.bin", "b.bin", "c.bin"):
            files.write_bytes(tmp_path / name, b"new " * 1000)
    message = str(raised.value)
    assert "\n" not in message and "no space left on the device" in message and "b.bin" in message
    assert raised.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "c.bin"]  # no .part file
    assert all((tmp_path / n).read_bytes() == b"old " + n.encode() for n in ("a.bin", "b.bin", "c.bin"))


@pytest.mark.parametrize("full", [False, True], ids=["space left", "disk nearly full"])
def test_other_errors_pass_unchanged(tmp_path, monkeypatch, full):
    monkeypatch.setattr(atomic, "_nearly_full", lambda folder: full)
    with pytest.raises(KeyError), atomic.atomic_write(tmp_path / "x") as tmp:
        tmp.write_bytes(b"x")
        raise KeyError("a bug, not the disk")
    assert list(tmp_path.iterdir()) == []


def test_a_library_s_own_full_disk_error_is_said_plainly(tmp_path, monkeypatch):
    """TensorFlow's ResourceExhaustedError on a full disk is no OSError."""
    monkeypatch.setattr(atomic, "_nearly_full", lambda folder: True)
    full = pytest.raises(atomic.WriteError, match="^cannot write m in .*: no space left on the device")
    with full, atomic.atomic_write(tmp_path / "m") as tmp:
        tmp.mkdir()
        raise RuntimeError("m/variables/part-00000; No space left on device [Op:SaveV2]")
    assert list(tmp_path.iterdir()) == []


def test_a_discarded_file_is_emptied_first(tmp_path):
    """A library that still holds the temporary file open (h5py after a failed write) can then
    flush into the freed space and close cleanly, instead of crashing at exit."""
    part = tmp_path / ".w.weights.h5.0a1b2c3d.1.part"
    with open(part, "wb") as held:
        held.write(b"x" * 10_000)
        held.flush()
        atomic.discard(part)
        assert not part.exists() and os.fstat(held.fileno()).st_size == 0


def test_a_folder_replaces_a_folder_in_one_step(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.pb").write_text("old")
    with atomic.atomic_write(tmp_path / "out") as tmp:
        tmp.mkdir()
        (tmp / "new.pb").write_text("new")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.pb"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old one gone, no temporary left


# ----------------------------------------------------------------------------- what may be replaced


def test_nothing_there_may_be_written(tmp_path):
    atomic.check_replace(tmp_path / "new.json", overwrite=False)


def test_something_there_is_replaced_only_with_overwrite_and_only_if_recognised(tmp_path):
    path = tmp_path / "robustness.json"
    path.write_text("{}")
    with pytest.raises(
        FileExistsError, match=r"^r's robustness.json \(1000 images\) exists already \(--overwrite"
    ):
        atomic.check_replace(path, overwrite=False, what="r's robustness.json (1000 images)")
    atomic.check_replace(path, overwrite=True)


@pytest.mark.parametrize("kind", ["folder", "fifo", "link", "dangling link"])
def test_what_is_not_a_plain_file_is_never_replaced(tmp_path, kind):
    path = tmp_path / "robustness.json"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        (tmp_path / "elsewhere").write_text("{}")
        path.symlink_to(tmp_path / ("elsewhere" if kind == "link" else "nothing"))
    with pytest.raises(
        FileExistsError, match="not what this program writes: not replaced, even with --overwrite"
    ):
        atomic.check_replace(path, overwrite=True)


# ----------------------------------------------------------------------------- killed writers


def test_stale_part_files_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "m.onnx"
    dead, live = 999_999_991, os.getpid()
    stale = [
        tmp_path / f".m.onnx.0a1b2c3d.{dead}.part.onnx",  # this version's names
        tmp_path / f".m.onnx.{dead}.part.onnx",  # an older version's (no token)
    ]
    folder = tmp_path / f".m.onnx.{dead}.part"  # a killed SavedModel-style export
    kept = [
        tmp_path / f".m.onnx.0a1b2c3d.{live}.part.onnx",  # still being written
        tmp_path / f".other.onnx.0a1b2c3d.{dead}.part.onnx",  # another target's
        tmp_path / "m.onnx.notes",
    ]
    for path in stale + kept:
        path.write_bytes(b"x")
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"x")
    removed = atomic.remove_stale_parts(target, alive=lambda pid: pid == live)
    assert sorted(removed) == sorted([*stale, folder])
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_a_folder_a_killed_writer_moved_aside_is_put_back_not_removed(tmp_path):
    target, dead = tmp_path / "saved", 999_999_991
    aside = tmp_path / f".saved.0a1b2c3d.{dead}.part.old"  # the user's export, moved aside
    aside.mkdir()
    (aside / "saved_model.pb").write_bytes(b"the user's model")
    new = tmp_path / f".saved.0a1b2c3d.{dead}.part"  # what the killed writer had written
    new.mkdir()
    assert atomic.remove_stale_parts(target, alive=lambda pid: False) == [new]
    assert (target / "saved_model.pb").read_bytes() == b"the user's model"
    assert sorted(tmp_path.iterdir()) == [target]
    aside.mkdir()  # moved aside, and the new one put in place before the kill: the old one goes
    assert atomic.remove_stale_parts(target, alive=lambda pid: False) == [aside]
    assert sorted(tmp_path.iterdir()) == [target]


def test_a_refusal_inside_a_write_keeps_its_own_words_and_cause_on_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_nearly_full", lambda folder: True)
    with pytest.raises(FileExistsError, match="taken"), atomic.atomic_write(tmp_path / "f") as tmp:
        tmp.write_bytes(b"x")
        raise FileExistsError("taken")
    with pytest.raises(KeyError) as raised, atomic.atomic_write(tmp_path / "g"):
        try:
            raise ValueError("first")
        except ValueError as cause:
            raise KeyError("second") from cause
    assert isinstance(raised.value.__cause__, ValueError), "a bug's chain is kept"
    assert list(tmp_path.iterdir()) == []
