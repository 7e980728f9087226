"""Edge deployment: TFLite (LiteRT) export, verification, latency, QAT.

`to_tflite` slims a gated model and converts it with Keras' own LiteRT
exporter (`model.export(..., format="litert")`); `evaluate_tflite`,
`run_tflite` and `benchmark_tflite` run the result in the LiteRT interpreter
of the `ai-edge-litert` package. `quantization_aware` builds the tf_keras
(Keras 2) twin of a slim model for quantization-aware training with
tensorflow-model-optimization, which only accepts tf_keras models.
"""

import functools
import gzip
import os
import statistics
import tempfile
import time

import keras
import numpy as np

from keras_vib import _validate, graph
from keras_vib.handlers import handler_for
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
]

QUANTIZATIONS = (None, "float16", "dynamic", "int8")


def _tf():
    import tensorflow as tf

    return tf


# `benchmark_tflite(kernels=...)`: LiteRT's op resolver for each choice.
KERNELS = {
    "default": "AUTO",  # builtin kernels and the XNNPACK delegate
    "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",  # optimised, no XNNPACK
    "reference": "BUILTIN_REF",  # plain reference kernels
}


def _interpreter(tflite_bytes, num_threads=None, kernels="default"):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(
        model_content=bytes(tflite_bytes),
        num_threads=num_threads,
        experimental_op_resolver_type=getattr(OpResolverType, KERNELS[kernels]),
    )


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
    from keras_vib.report import gated_layers

    return bool(gated_layers(model))


def tflite_ops(tflite_bytes) -> list:
    """The sorted names of the operators in a TFLite flatbuffer."""
    interpreter = _interpreter(tflite_bytes)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def _prepare(interpreter, batch_size):
    inputs = interpreter.get_input_details()
    for detail in inputs:
        shape = list(detail["shape"])
        if shape[0] != batch_size:
            shape[0] = batch_size
            interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    return interpreter.get_input_details(), interpreter.get_output_details()


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    if detail["dtype"] in (np.int8, np.uint8, np.int16) and scale:
        info = np.iinfo(detail["dtype"])
        q = np.round(x / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(detail["dtype"])
    return np.asarray(x, detail["dtype"])


def _dequantize(y, detail):
    scale, zero_point = detail["quantization"]
    if detail["dtype"] in (np.int8, np.uint8, np.int16) and scale:
        return (y.astype("float32") - zero_point) * scale
    return y.astype("float32")


def run_tflite(tflite_bytes, x, num_threads: int | None = None) -> np.ndarray:
    """Runs a one-input, one-output TFLite model on a batch in LiteRT.

    int8 inputs and outputs are quantized and dequantized with the model's
    own scales, so that `x` and the result are float.

    Args:
        tflite_bytes: the flatbuffer, e.g. from `to_tflite`.
        x: numpy batch of inputs.
        num_threads: LiteRT threads (None: its default).

    Returns:
        The float32 numpy output batch.
    """
    x = np.asarray(x, "float32")
    num_threads = _validate.integer(
        "num_threads", num_threads, minimum=1, optional=True
    )
    interpreter = _interpreter(tflite_bytes, num_threads)
    (inp,), (out,) = _prepare(interpreter, len(x))
    interpreter.set_tensor(inp["index"], _quantize(x, inp))
    interpreter.invoke()
    return _dequantize(interpreter.get_tensor(out["index"]), out)


def evaluate_tflite(tflite_bytes, dataset, batch_size: int = 256) -> float:
    """Classification accuracy of a TFLite model in the LiteRT interpreter.

    Args:
        tflite_bytes: the flatbuffer, e.g. from `to_tflite`.
        dataset: a `tf.data.Dataset` or an iterable of `(inputs, labels)`
            batches (integer labels, logits or probabilities as outputs), or
            a tuple `(x, y)` of numpy arrays.
        batch_size: how many examples one interpreter call takes.

    Returns:
        The accuracy, a float in [0, 1].
    """
    batch_size = _validate.integer("batch_size", batch_size, minimum=1)
    if isinstance(dataset, tuple) and len(dataset) == 2:
        x_all, y_all = np.asarray(dataset[0]), np.asarray(dataset[1])
        dataset = [
            (x_all[i : i + batch_size], y_all[i : i + batch_size])
            for i in range(0, len(x_all), batch_size)
        ]
    interpreter = _interpreter(tflite_bytes)
    correct = total = 0
    prepared_for = None
    for x, y in dataset:
        x = np.asarray(x, "float32")
        y = np.asarray(y).reshape(-1)
        if prepared_for != len(x):
            (inp,), (out,) = _prepare(interpreter, len(x))
            prepared_for = len(x)
        interpreter.set_tensor(inp["index"], _quantize(x, inp))
        interpreter.invoke()
        logits = interpreter.get_tensor(out["index"])
        correct += int(np.sum(np.argmax(logits, axis=-1) == y))
        total += len(y)
    if total == 0:
        raise ValueError("`dataset` holds no example to evaluate.")
    return correct / total


def benchmark_tflite(
    tflite_bytes,
    runs: int = 200,
    warmup: int = 20,
    num_threads: int = 1,
    kernels: str = "default",
) -> dict:
    """Median single-example latency of a TFLite model in LiteRT, and its size.

    By default LiteRT runs float models through its XNNPACK delegate; the
    input is random (latency does not depend on the values).

    Args:
        tflite_bytes: the flatbuffer, e.g. from `to_tflite`.
        runs: positive int, timed invokes.
        warmup: int >= 0, untimed invokes first.
        num_threads: LiteRT threads (1: one core, as on a small device).
        kernels: `"default"` (LiteRT's choice: XNNPACK for float models),
            `"builtin"` (the optimised builtin kernels, no delegate) or
            `"reference"` (the plain reference kernels, whose time follows
            the arithmetic more closely, like a simple microcontroller's).

    Returns:
        A dict: `median_ms`, `p90_ms`, `size_bytes`, `gzip_bytes` (the size
        once gzip-compressed, which is what unstructured sparsity shrinks).
    """
    runs = _validate.integer("runs", runs, minimum=1)
    warmup = _validate.integer("warmup", warmup, minimum=0)
    num_threads = _validate.integer(
        "num_threads", num_threads, minimum=1, optional=True
    )
    if kernels not in KERNELS:
        raise ValueError(
            f"Expected `kernels` to be one of {list(KERNELS)}. "
            f"Received: kernels={kernels!r}"
        )
    interpreter = _interpreter(tflite_bytes, num_threads, kernels)
    inputs, _ = _prepare(interpreter, 1)
    rng = np.random.default_rng(0)
    for detail in inputs:
        x = rng.normal(size=detail["shape"]).astype("float32")
        interpreter.set_tensor(detail["index"], _quantize(x, detail))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    times_ms = sorted(1000.0 * t for t in times)
    return {
        "median_ms": statistics.median(times_ms),
        "p90_ms": times_ms[min(len(times_ms) - 1, int(0.9 * len(times_ms)))],
        "size_bytes": len(tflite_bytes),
        "gzip_bytes": len(gzip.compress(bytes(tflite_bytes), compresslevel=9)),
    }


@functools.cache
def select_features_twin(tf_keras):
    """The tf_keras class twin of `SelectFeatures`, defined once, on demand.

    Registered with tf_keras (package keras_vib) so that tfmot can clone and
    wrap it; it gathers the kept indices of the last axis like the original.
    """
    tf = _tf()

    @tf_keras.utils.register_keras_serializable(package="keras_vib")
    class SelectFeatures(tf_keras.layers.Layer):
        def __init__(self, indices, **kwargs):
            super().__init__(**kwargs)
            self.indices = [int(i) for i in indices]

        def call(self, inputs):
            return tf.gather(inputs, self.indices, axis=-1)

        def compute_output_shape(self, input_shape):
            shape = tf.TensorShape(input_shape)
            return shape[:-1].concatenate([len(self.indices)])

        def get_config(self):
            config = super().get_config()
            config["indices"] = list(self.indices)
            return config

    return SelectFeatures


def to_tf_keras(model):
    """Builds the tf_keras (Keras 2) twin of a stock Keras 3 model.

    Same architecture, layer names and weights, made of `tf_keras.layers`,
    for tools that only take tf_keras models (tensorflow-model-optimization).
    A gated model is slimmed first.

    Args:
        model: a built Sequential or functional Keras 3 model of stock
            layers and `SelectFeatures` (the output of `slim_model`), or a
            gated model.

    Returns:
        A functional `tf_keras.Model`.
    """
    import tf_keras

    _check_model(model)
    if _has_gates(model):
        model = slim_model(model)
    g = graph.Graph(model)

    def twin_node(node, values):
        layer = node.layer
        twin = handler_for(layer).twin(layer, tf_keras)
        args = [values[t] for t in node.inputs]
        out = twin(args if len(args) > 1 else args[0])
        twin.set_weights(layer.get_weights())
        return out if isinstance(out, (list, tuple)) else [out]

    new_inputs, values = [], {}
    for t in g.inputs:
        x = g.symbols[t]
        inp = tf_keras.Input(shape=tuple(x.shape[1:]), name=x.name, dtype=x.dtype)
        new_inputs.append(inp)
        values[t] = inp
    values = graph.rebuild(g, values, twin_node)
    new_outputs = [values[t] for t in g.outputs]
    return tf_keras.Model(
        new_inputs if len(new_inputs) > 1 else new_inputs[0],
        new_outputs if len(new_outputs) > 1 else new_outputs[0],
        name=model.name,
    )


def quantization_aware(model):
    """Wraps the tf_keras twin of a slim model for quantization-aware training.

    tensorflow-model-optimization 0.8 only accepts tf_keras (Keras 2)
    models, so this builds the twin (`to_tf_keras`: same architecture, same
    weights) and applies `tfmot.quantization.keras.quantize_model` to it.
    Compile the result (with tf_keras optimizers and losses, or their string
    names) and `fit` it, then pass it to `to_tflite(..., "int8", ...)`.

    Args:
        model: a slim Keras 3 model (or a gated one, slimmed first).

    Returns:
        The quantization-aware `tf_keras.Model`, not compiled.

    Example:

    >>> qat = keras_vib.export.quantization_aware(slim)
    >>> qat.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    >>> qat.fit(train_ds, epochs=1)
    >>> int8 = keras_vib.export.to_tflite(qat, "int8", x_train[:500])
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras

    quantize = tfmot.quantization.keras
    twin = to_tf_keras(model)
    fusable = _bn_after_linear_conv(twin)

    class NoOpQuantizeConfig(quantize.QuantizeConfig):
        """Leaves a layer in float (tfmot has no rule for it)."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E501
        default_8bit_quantize_registry,
    )

    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()

    def annotate(layer):
        if registry.supports(layer) or layer.name in fusable:
            return quantize.quantize_annotate_layer(layer)
        # The per-channel scales slim_model inserts (a BatchNormalization
        # that does not follow a conv), say: tfmot has no rule for them.
        return quantize.quantize_annotate_layer(layer, NoOpQuantizeConfig())

    annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
    with quantize.quantize_scope({"NoOpQuantizeConfig": NoOpQuantizeConfig}):
        return quantize.quantize_apply(annotated)


def _bn_after_linear_conv(model):
    """Names of the BatchNormalization layers tfmot folds into a conv."""
    names = set()
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        inbound = layer.inbound_nodes[0].inbound_layers
        if (
            type(inbound).__name__ in ("Conv2D", "DepthwiseConv2D")
            and inbound.get_config().get("activation") == "linear"
        ):
            names.add(layer.name)
    return names
