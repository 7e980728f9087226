"""The LiteRT runtime: run, evaluate and time a .tflite model.

The interpreter is that of the `ai-edge-litert` package (TensorFlow's own
`tf.lite.Interpreter` is deprecated).
"""

import gzip
import os
import pathlib
import statistics
import time

import numpy as np

from keras_vib import _validate

__all__ = ["KERNELS", "run_tflite", "evaluate_tflite", "benchmark_tflite", "tflite_ops"]

# `benchmark_tflite(kernels=...)`: LiteRT's op resolver for each choice.
KERNELS = {
    "default": "AUTO",  # builtin kernels and the XNNPACK delegate
    "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",  # optimised, no XNNPACK
    "reference": "BUILTIN_REF",  # plain reference kernels
}


def flatbuffer(tflite_model) -> bytes:
    """The bytes of a .tflite model given as bytes or as a path to its file.

    Raises:
        ValueError: anything else, or a path to no file.
    """
    if isinstance(tflite_model, (bytes, bytearray, memoryview)):
        return bytes(tflite_model)
    if isinstance(tflite_model, (str, os.PathLike)):
        path = pathlib.Path(tflite_model)
        if path.is_file():
            return path.read_bytes()
        raise ValueError(
            "Expected a path to a .tflite file. Received: "
            f"tflite_model={str(tflite_model)!r} (no such file)"
        )
    raise ValueError(
        "Expected the .tflite model as bytes (from `to_tflite`) or a path to "
        f"its file. Received: tflite_model of type {type(tflite_model).__name__}"
    )


def _interpreter(tflite_bytes, num_threads=None, kernels="default"):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(
        model_content=flatbuffer(tflite_bytes),
        num_threads=num_threads,
        experimental_op_resolver_type=getattr(OpResolverType, KERNELS[kernels]),
    )


def tflite_ops(tflite_bytes) -> list:
    """The sorted names of the operators in a TFLite flatbuffer.

    Read from the flatbuffer itself with LiteRT's schema (every operator
    of every subgraph): builtin operators by their `BuiltinOperator` name
    (`"FULLY_CONNECTED"`), custom ones by their custom code.
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {
        code: name
        for name, code in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    model = schema.Model.GetRootAs(flatbuffer(tflite_bytes), 0)
    found = set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for i in range(subgraph.OperatorsLength()):
            opcode = model.OperatorCodes(subgraph.Operators(i).OpcodeIndex())
            # Codes over 127 live in BuiltinCode, older ones in the
            # deprecated int8 field: the larger of the two is the code.
            code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
            if code == schema.BuiltinOperator.CUSTOM:
                found.add(opcode.CustomCode().decode())
            else:
                found.add(names.get(code, f"BUILTIN_{code}"))
    return sorted(found)


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
        tflite_bytes: the flatbuffer, e.g. from `to_tflite`, or a path
            to a .tflite file.
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
        tflite_bytes: the flatbuffer, e.g. from `to_tflite`, or a path
            to a .tflite file.
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
        tflite_bytes: the flatbuffer, e.g. from `to_tflite`, or a path
            to a .tflite file.
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
    tflite_bytes = flatbuffer(tflite_bytes)
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
