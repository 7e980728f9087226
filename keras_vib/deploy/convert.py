"""Conversion of a (gated) Keras model to TFLite (LiteRT)."""

import os
import tempfile

import keras
import numpy as np

from keras_vib.deploy._common import _check_model, _is_tf_keras, _tf
from keras_vib.gates import has_gates
from keras_vib.slim import slim_model

__all__ = ["QUANTIZATIONS", "to_tflite"]

QUANTIZATIONS = (None, "float16", "dynamic", "int8")


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
    _check_arguments(
        model, quantization, representative_data, calibration_examples, path
    )
    examples = []
    if quantization == "int8":
        examples = _calibration_examples(representative_data, calibration_examples)
    settings = _converter_settings(quantization, examples, int8_io)
    if _is_tf_keras(model):
        content = _convert_tf_keras(model, settings)
    else:
        content = _convert_keras(model, settings, slim)
    if path is not None:
        _write_atomically(path, content)
    return content


def _check_arguments(
    model, quantization, representative_data, calibration_examples, path
):
    """Every check of `to_tflite`, before anything is converted or written."""
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


def _calibration_examples(data, limit):
    """The int8 calibration inputs: at most `limit`, at least one."""
    examples = _representative_examples(data, limit)
    if not examples:
        raise ValueError(
            "`representative_data` holds no example: int8 calibration "
            "needs at least one input. Received an empty "
            f"{type(data).__name__}."
        )
    return examples


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


def _converter_settings(quantization, examples, int8_io):
    """The converter's attributes for `quantization`, as keyword arguments of
    Keras' LiteRT export (`target_spec` a dict of its own attributes)."""
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


def _convert_tf_keras(model, settings):
    """A tf_keras model (of `quantization_aware`) through TensorFlow's own
    converter, which the Keras 3 exporter is not for."""
    converter = _tf().lite.TFLiteConverter.from_keras_model(model)
    for key, value in settings.items():
        if key == "target_spec":
            for spec_key, spec_value in value.items():
                setattr(converter.target_spec, spec_key, spec_value)
        else:
            setattr(converter, key, value)
    return converter.convert()


def _convert_keras(model, settings, slim):
    """A Keras 3 model (slimmed first if gated and `slim`) through Keras'
    LiteRT export, by way of a temporary file."""
    if slim and has_gates(model):
        model = slim_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.tflite")
        model.export(out, format="litert", verbose=False, **settings)
        with open(out, "rb") as f:
            return f.read()


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
