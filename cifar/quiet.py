"""The command line's quiet mode: TensorFlow's own log lines stay off the terminal.

TensorFlow writes a few C++ log lines (abseil's "All log messages before absl::InitializeLog()",
oneDNN, the CUDA probe) straight to file descriptor 2 while it loads, before its log level
applies (abseil/abseil-cpp#1957), so `TF_CPP_MIN_LOG_LEVEL` alone cannot silence them. In quiet
mode, Python's `sys.stderr` keeps the terminal (our messages, progress bars, warnings and
tracebacks all go through it) while descriptor 2, written to directly only by C++ code, goes to
/dev/null. A user who sets `TF_CPP_MIN_LOG_LEVEL` sees TensorFlow's log as they asked.
"""

from __future__ import annotations

import logging
import os
import sys


def quiet_tensorflow() -> bool:
    """Enter quiet mode unless the user set TF_CPP_MIN_LOG_LEVEL; True if it did."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # what does reach the log level: errors included
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # its Python deprecation notices
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no descriptor 2 (an embedded interpreter): nothing to quiet
        return False
    sys.stderr = os.fdopen(
        terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace"
    )
    os.dup2(devnull, 2)
    os.close(devnull)
    return True
