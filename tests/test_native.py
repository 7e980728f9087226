"""Importing keras_vib in a script: TensorFlow's native lines before its
logging starts go to the void, unless the user asks for them."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tensorflow


def _import_stderr(level):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    env["KERAS_BACKEND"] = "tensorflow"
    result = subprocess.run(
        [sys.executable, "-c", "import keras_vib, sys; print('ok', file=sys.stderr)"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_importing_keras_vib_is_quiet():
    assert _import_stderr(None).strip() == "ok"  # Python's own stderr still works
    assert _import_stderr("3").strip() == "ok"


def test_a_user_s_level_0_shows_tensorflow_s_lines():
    shown = _import_stderr("0")
    assert shown.strip() != "ok" and shown.rstrip().endswith("ok")
