"""What the terminal shows: progress bars a person waits for (`terminal_progress`), and
TensorFlow's own log lines kept off it: the command line, its jobs, and a user's script
that calls `load_run_model`.

TensorFlow writes a few C++ log lines (abseil's "All log messages before absl::InitializeLog()",
the CUDA probe, "failed call to cuInit" on a machine with CUDA's libraries and no GPU) straight to
file descriptor 2 while it loads and first runs, before its log level applies
(abseil/abseil-cpp#1957), so no value of `TF_CPP_MIN_LOG_LEVEL` silences them. While quiet,
Python's `sys.stderr` keeps the terminal (our messages, progress bars, warnings and tracebacks all
go through it) while descriptor 2, written to directly only by C++ code, goes to /dev/null. A user
who sets `TF_CPP_MIN_LOG_LEVEL=0` asks for everything and sees TensorFlow's log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import Callable


def wants_tensorflow_log() -> bool:
    """Did the user ask for TensorFlow's whole log (`TF_CPP_MIN_LOG_LEVEL=0`)?"""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() == "0"


def quiet_tensorflow() -> bool:
    """The command line's quiet mode, for the whole process; True if it was entered."""
    if wants_tensorflow_log():
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # what does reach the log level: errors included
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # its Python deprecation notices
    return _descriptor_2_to_devnull() is not None


_lock = threading.Lock()
_inside = 0  # how many `tensorflow_quietly` blocks are open (nested, or in several threads)
_restore = None


@contextlib.contextmanager
def tensorflow_quietly():
    """Quiet while inside (a library call that may load TensorFlow), then as before; nested
    blocks and threads share one redirection, undone when the last block ends."""
    global _inside, _restore
    with _lock:
        if _inside == 0 and not wants_tensorflow_log():
            _restore = _descriptor_2_to_devnull()
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0 and _restore is not None:
                _restore()
                _restore = None


def _descriptor_2_to_devnull():
    """Point descriptor 2 at /dev/null and `sys.stderr` at a copy of the old one; returns the
    function that undoes both (None if there is no descriptor 2: an embedded interpreter, or a
    `sys.stderr` that is not descriptor 2, as in a notebook, which is left alone)."""
    try:
        if sys.stderr.fileno() != 2:
            return None
        sys.stderr.flush()
        terminal = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None
    python_stderr = sys.stderr
    encoding = getattr(python_stderr, "encoding", None) or "utf-8"
    sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, encoding=encoding, errors="backslashreplace")
    os.dup2(devnull, 2)
    os.close(devnull)

    def restore():
        # The copy stays open: a logger made inside (TensorFlow's) keeps writing to it.
        sys.stderr.flush()
        os.dup2(terminal, 2)
        os.close(terminal)
        sys.stderr = python_stderr

    return restore


def terminal_progress(what: str, only_terminal: bool = True) -> Callable[[str, int, int], None]:
    """`progress(label, done, total)` as one tqdm bar per label (on a terminal only, unless
    `only_terminal` is False: job logs have status.json)."""
    from tqdm.auto import tqdm

    bars = {}

    def report(label: str, done: int, total: int) -> None:
        if label not in bars:
            disable = None if only_terminal else False  # None: tqdm's own "is it a terminal?"
            bars[label] = tqdm(
                total=total, desc=f"{what} {label}", unit="img", mininterval=5, disable=disable
            )
        bars[label].update(done - bars[label].n)
        if done == total:
            bars[label].close()

    return report
