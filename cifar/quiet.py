"""TensorFlow's own log lines kept off the terminal: the command line, its jobs, and a user's script
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
import logging
import os
import sys


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


@contextlib.contextmanager
def tensorflow_quietly():
    """Quiet while inside (a library call that may load TensorFlow), then as before."""
    restore = None if wants_tensorflow_log() else _descriptor_2_to_devnull()
    try:
        yield
    finally:
        if restore is not None:
            restore()


def _descriptor_2_to_devnull():
    """Point descriptor 2 at /dev/null and `sys.stderr` at a copy of the old one; returns the
    function that undoes both (None if there is no descriptor 2: an embedded interpreter)."""
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):
        return None
    python_stderr = sys.stderr
    encoding = getattr(python_stderr, "encoding", None) or "utf-8"
    sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, encoding=encoding, errors="backslashreplace")
    os.dup2(devnull, 2)
    os.close(devnull)

    def restore():
        sys.stderr.flush()
        sys.stderr.close()
        os.dup2(terminal, 2)
        os.close(terminal)
        sys.stderr = python_stderr

    return restore
