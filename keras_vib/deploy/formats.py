"""Other ways out than LiteRT: ONNX (for ONNX Runtime) and TensorFlow's
SavedModel (for TF Serving), through Keras's own exporters."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np

from keras_vib.deploy._common import _check_model, _is_tf_keras
from keras_vib.gates import has_gates
from keras_vib.slim import slim_model

__all__ = ["FORMATS", "to_onnx", "to_saved_model"]

# What `keras-vib export --format` takes, and the exporter of each.
FORMATS = ("litert", "onnx", "saved_model")


def _prepared(model, slim, what):
    """The model to export: checked, slimmed if gated (and `slim`), called
    once (Keras's exporters read the shapes of a call)."""
    _check_model(model)
    if _is_tf_keras(model):
        raise ValueError(
            f"{what} takes a Keras 3 model; the tf_keras model of "
            "`quantization_aware` goes to LiteRT (`to_tflite`). Received: "
            f"model={model.name!r}"
        )
    if slim and has_gates(model):
        model = slim_model(model)

    def example(tensor):
        shape = (1,) + tuple(1 if d is None else d for d in tensor.shape[1:])
        return np.zeros(shape, keras.backend.standardize_dtype(tensor.dtype))

    model(keras.tree.map_structure(example, model.input), training=False)
    return model


def _check_path(path):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(
            f"Expected `path` in an existing directory. Received: path={path!r}"
        )
    return path, directory


def _export_beside(model, path, directory, keras_format):
    """Keras's export (`keras_format`) into a temporary folder beside
    `path`, moved to `path` once whole: a failed export writes nothing."""
    tmp = tempfile.mkdtemp(dir=directory, suffix=".export.tmp")
    try:
        written = os.path.join(tmp, os.path.basename(path))
        model.export(written, format=keras_format, verbose=False)
        os.replace(written, path)
    finally:
        shutil.rmtree(tmp)
    return path


def _on_tensorflow(model, path, function):
    """`function(model, path)` of `keras_vib.export` in a process on the
    TensorFlow backend, where Keras's exporters run (the model goes there
    as a `.keras` file: a slim model is stock Keras)."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "model.keras")
        model.save(saved)
        code = (
            "import sys, keras, keras_vib\n"
            "model = keras.models.load_model(sys.argv[1])\n"
            f"keras_vib.export.{function}(model, sys.argv[2])\n"
        )
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        result = subprocess.run(
            [sys.executable, "-c", code, saved, path],
            env=env,
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no message"]
        raise RuntimeError(f"{function} on the TensorFlow backend failed: {lines[-1]}")
    return path


def to_onnx(model: keras.Model, path, slim: bool = True) -> str:
    """Exports a (gated) Keras model to an ONNX file (Keras's exporter).

    A model with keras_vib gates is slimmed first, so that the file holds
    only the kept units. The file runs in ONNX Runtime
    (`onnxruntime.InferenceSession(path)`) with the model's outputs. Needs
    `pip install keras_vib[onnx]` (onnx, onnxruntime, tf2onnx). On another
    backend than TensorFlow (JAX), the export runs in a TensorFlow process
    (the model passed to it as a `.keras` file).

    Args:
        model: a built Keras 3 model, gated or not.
        path: the `.onnx` file to write (atomically: nothing is written
            when the export fails).
        slim: whether to slim a gated model first (True).

    Returns:
        `path`, as a string.

    Example:

    >>> keras_vib.export.to_onnx(gated, "model.onnx")
    >>> onnxruntime.InferenceSession("model.onnx").run(None, {"x": x})
    """
    path, directory = _check_path(path)
    if not path.endswith(".onnx"):
        raise ValueError(f"Expected `path` to end in .onnx. Received: path={path!r}")
    model = _prepared(model, slim, "to_onnx")
    if keras.backend.backend() != "tensorflow":
        return _on_tensorflow(model, path, "to_onnx")
    return _export_beside(model, path, directory, "onnx")


def to_saved_model(model: keras.Model, path, slim: bool = True) -> str:
    """Exports a (gated) Keras model to a TensorFlow SavedModel folder.

    A model with keras_vib gates is slimmed first. The folder reloads with
    `tf.saved_model.load(path)`, whose `serve` function (and
    `signatures["serving_default"]`, for TF Serving) computes the model's
    outputs at inference. On another backend than TensorFlow (JAX), the
    export runs in a TensorFlow process.

    Args:
        model: a built Keras 3 model, gated or not.
        path: the folder to write; it must not exist yet (written whole,
            or not at all when the export fails).
        slim: whether to slim a gated model first (True).

    Returns:
        `path`, as a string.

    Example:

    >>> keras_vib.export.to_saved_model(gated, "served/1")
    >>> tf.saved_model.load("served/1").serve(x)
    """
    path, directory = _check_path(path)
    if os.path.exists(path):
        raise ValueError(
            f"Expected `path` to be a folder that does not exist yet. Received: "
            f"path={path!r}, which exists"
        )
    model = _prepared(model, slim, "to_saved_model")
    if keras.backend.backend() != "tensorflow":
        return _on_tensorflow(model, path, "to_saved_model")
    return _export_beside(model, path, directory, "tf_saved_model")
