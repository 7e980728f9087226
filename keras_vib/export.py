"""Edge deployment: conversion to TFLite (LiteRT).

`to_tflite` slims a gated model and converts it with Keras' own LiteRT
exporter (`model.export(..., format="litert")`). The rest of deployment
lives in its own modules and is reachable from here too:
`keras_vib.litert` runs the result (`run_tflite`, `evaluate_tflite`,
`benchmark_tflite`, `tflite_ops`), `keras_vib.twin` builds the tf_keras
(Keras 2) twin of a slim model for quantization-aware training with
tensorflow-model-optimization (`to_tf_keras`, `quantization_aware`).
"""

import os
import tempfile

import keras
import numpy as np

from keras_vib.slim import slim_model

__all__ = [
    "QUANTIZATIONS",
    "to_tflite",
    "run_tflite",
    "evaluate_tflite",
    "benchmark_tflite",
    "tflite_ops",
    "to_tf_keras",
    "quantization_aware",
    "select_features_twin",
    "KERNELS",
]

QUANTIZATIONS = (None, "float16", "dynamic", "int8")


def _tf():
    import tensorflow as tf

    return tf


def _is_tf_keras(model):
    return type(model).__module__.startswith("tf_keras")


def _check_model(model):
    if _is_tf_keras(model):
        inputs = model.inputs
    elif isinstance(model, keras.Model):
        inputs = getattr(model, "inputs", None)
    else:
        raise ValueError(
            "Expected `model` to be a Keras model (Keras 3, or the tf_keras "
            f"model of `quantization_aware`). Received: model={model!r}"
        )
    if not inputs:
        raise ValueError(
            "Expected a built model with known inputs (a Sequential or "
            f"functional model). Received: model={model.name!r} has no inputs."
        )
    for x in inputs:
        shape = x.shape
        rank = getattr(shape, "rank", None) if _is_tf_keras(model) else len(shape)
        if shape is None or rank is None:
            raise ValueError(
                "Expected every model input to have a known rank. Received: "
                f"input {x.name!r} with shape {shape}"
            )


def _representative_examples(data, limit):
    """A list of single-example float32 input batches from `data`.

    `data` is a numpy array, a `tf.data.Dataset` or an iterable of batches,
    each an input batch or an `(inputs, labels)` tuple.
    """
    if isinstance(data, np.ndarray):
        batches = [data]
    else:
        batches = data
    examples = []
    for batch in batches:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        batch = np.asarray(batch, "float32")
        for row in batch:
            examples.append(row[None])
            if len(examples) >= limit:
                return examples
    return examples


def _write_atomically(path, content):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tflite.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        # mkstemp makes the file private (0600): give it the mode of any
        # new file (0666 less the umask), as `open` would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _converter_settings(quantization, examples, int8_io):
    tf = _tf()
    settings = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if quantization is None:
        return settings
    settings["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        settings["target_spec"]["supported_types"] = [tf.float16]
    elif quantization == "int8":
        settings["target_spec"]["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        settings["representative_dataset"] = lambda: ([x] for x in examples)
        if int8_io:
            settings["inference_input_type"] = tf.int8
            settings["inference_output_type"] = tf.int8
    return settings


def _apply(converter, settings):
    for key, value in settings.items():
        if key == "target_spec":
            for spec_key, spec_value in value.items():
                setattr(converter.target_spec, spec_key, spec_value)
        else:
            setattr(converter, key, value)


def to_tflite(
    model,
    quantization: str | None = None,
    representative_data=None,
    path=None,
    int8_io: bool = False,
    calibration_examples: int = 200,
    slim: bool = True,
) -> bytes:
    """Converts a (gated) Keras model to a TFLite flatbuffer of builtin ops.

    A model with keras_vib gates is slimmed first (`slim_model`), so that the
    file holds only the kept units. Keras 3 models go through Keras' own
    LiteRT exporter (`model.export(..., format="litert")`); the tf_keras
    models of `quantization_aware` go through
    `tf.lite.TFLiteConverter.from_keras_model`, since the Keras 3 exporter
    does not take them. Only TFLite builtin ops are allowed (no Flex/select TF
    ops, no custom ops).

    Args:
        model: a built Keras 3 model, gated or not, or the tf_keras model
            returned by `quantization_aware`.
        quantization: None (float32), `"float16"` (float16 weights),
            `"dynamic"` (int8 weights, float activations) or `"int8"` (full
            integer quantization calibrated on `representative_data`).
        representative_data: for `"int8"`: a numpy array of inputs, a
            `tf.data.Dataset` or an iterable of batches (inputs or
            `(inputs, labels)`); the first `calibration_examples` examples
            calibrate the activation ranges.
        path: optional file to write (atomically: nothing is written when
            the conversion fails).
        int8_io: with `"int8"`, make the model's inputs and outputs int8
            too (else they stay float32 around an int8 core).
        calibration_examples: positive int, how many examples calibrate.
        slim: whether to slim a gated model first (True). With False the
            gates are exported as they compute at inference (a multiply by
            `mu` or 0), to compare with the unslimmed network.

    Returns:
        The `.tflite` flatbuffer as bytes.

    Example:

    >>> tflite = keras_vib.export.to_tflite(gated, "int8", x_train[:500])
    >>> keras_vib.export.evaluate_tflite(tflite, test_ds)
    """
    if not _is_tf_keras(model) and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "to_tflite needs the TensorFlow backend (Keras's LiteRT export); "
            f"this process runs Keras on {keras.backend.backend()!r}. Save the "
            "model (`model.save('m.keras')`; a slim model is stock Keras) and "
            "convert it on TensorFlow: KERAS_BACKEND=tensorflow keras-vib "
            "export m.keras --out m.tflite"
        )
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Unknown `quantization`. Expected one of {list(QUANTIZATIONS)}. "
            f"Received: quantization={quantization!r}"
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            'quantization="int8" calibrates activation ranges on example '
            "inputs: pass `representative_data` (a numpy array, a tf.data "
            "dataset or an iterable of batches). Received: "
            "representative_data=None"
        )
    if not isinstance(calibration_examples, int) or calibration_examples <= 0:
        raise ValueError(
            "Expected `calibration_examples` to be a positive integer. "
            f"Received: calibration_examples={calibration_examples!r}"
        )
    if path is not None:
        directory = os.path.dirname(os.path.abspath(os.fspath(path)))
        if not os.path.isdir(directory):
            raise ValueError(
                "Expected `path` in an existing directory. Received: "
                f"path={os.fspath(path)!r}"
            )
    _check_model(model)
    examples = []
    if quantization == "int8":
        examples = _representative_examples(representative_data, calibration_examples)
        if not examples:
            raise ValueError(
                "`representative_data` holds no example: int8 calibration "
                "needs at least one input. Received an empty "
                f"{type(representative_data).__name__}."
            )
    settings = _converter_settings(quantization, examples, int8_io)

    if _is_tf_keras(model):
        tf = _tf()
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        _apply(converter, settings)
        content = converter.convert()
    else:
        if slim and _has_gates(model):
            model = slim_model(model)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "model.tflite")
            model.export(out, format="litert", verbose=False, **settings)
            with open(out, "rb") as f:
                content = f.read()
    if path is not None:
        _write_atomically(path, content)
    return content


def _has_gates(model):
    from keras_vib.gates import has_gates

    return has_gates(model)


# The runtime and the twin, reachable as `keras_vib.export.<name>` too (they
# import this module's helpers, hence at the end).
from keras_vib.litert import (  # noqa: E402
    KERNELS,
    benchmark_tflite,
    evaluate_tflite,
    run_tflite,
    tflite_ops,
)
from keras_vib.twin import quantization_aware, select_features_twin, to_tf_keras  # noqa: E402
