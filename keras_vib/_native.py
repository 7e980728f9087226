"""What native code (TensorFlow's C++ runtime) writes to the process's
stderr: sent to the void while TensorFlow loads with keras_vib.

Standard library only: `keras_vib/__init__` uses it before Keras is
imported.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_stderr():
    """Sends what native code writes to the process's stderr (file
    descriptor 2) to the void while the block runs; what Python writes to
    `sys.stderr` (warnings, say) still reaches it."""
    python_stderr = sys.stderr
    python_stderr.flush()
    saved = os.dup(2)
    void = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr = open(os.dup(saved), "w", buffering=1, closefd=True)
    except (OSError, ValueError):  # no usable descriptor: leave it be
        os.close(saved)
        os.close(void)
        yield
        return
    try:
        os.dup2(void, 2)
        yield
    finally:
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)
        os.close(void)


def quiet_import():
    """Whether importing Keras now should hide TensorFlow's native lines:
    TensorFlow not loaded yet, and `TF_CPP_MIN_LOG_LEVEL` not set to 0 (a
    user's own setting is respected: 0 shows them)."""
    return (
        "tensorflow" not in sys.modules
        and os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1").strip() != "0"
    )
