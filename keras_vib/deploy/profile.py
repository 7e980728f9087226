"""Where a .tflite model's time goes: each operator timed on its own.

LiteRT's Python interpreter has no per-operator profiler (the C++
`benchmark_model` tool has one). `profile_tflite` cuts the flatbuffer into
one model per operator, as the converter left it (batch norms folded,
activations fused), with that operator's constant tensors and random
inputs, and times each in LiteRT like `benchmark_tflite`. `padded_op`
rebuilds a convolution or dense operator with its channel counts padded
with zeros (the cost of a count against the next multiple of 4, 8, 16).
"""

import copy

import numpy as np

from keras_vib import _validate
from keras_vib.deploy.litert import benchmark_tflite, flatbuffer

__all__ = ["profile_tflite", "op_models", "padded_op", "resized_op"]

# Operators whose multiply-accumulates `_macs` counts, by their weights.
_CONV = "CONV_2D"
_DEPTHWISE = "DEPTHWISE_CONV_2D"
_DENSE = "FULLY_CONNECTED"


def _schema():
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    return schema, flatbuffer_utils


def _read(tflite_model, name="tflite_model"):
    """The flatbuffer as LiteRT's object model (`ModelT`), checked."""
    data = flatbuffer(tflite_model)
    if data[4:8] != b"TFL3":  # the file identifier of every .tflite model
        raise ValueError(
            f"Expected a .tflite flatbuffer. Received: {name} of {len(data)} "
            "bytes without the TFL3 identifier"
        )
    return _schema()[1].read_model_from_bytearray(bytearray(data))


def _has_data(model, tensor):
    buffers = model.buffers
    if not 0 < tensor.buffer < len(buffers):
        return False
    data = buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _macs(name, shapes, output):
    """Multiply-accumulates of one example through a conv or dense op."""
    if len(shapes) < 2 or not output:
        return 0
    positions = int(np.prod(output[1:-1])) if len(output) > 2 else 1
    weights = shapes[1]
    if name in (_CONV, _DEPTHWISE):  # [out, kh, kw, in / groups], [1, kh, kw, c]
        return positions * int(np.prod(weights))
    if name == _DENSE:  # weights [out, in]
        rows = int(np.prod(output[:-1])) // max(output[0], 1)
        return rows * int(np.prod(weights))
    return 0


def op_models(tflite_model) -> list:
    """One .tflite model per operator of a model's main subgraph.

    Args:
        tflite_model: the flatbuffer (bytes) or a path to a .tflite file.

    Returns:
        A list, in execution order, of dicts: `index`, `op` (the builtin
        operator's name), `inputs` (the shapes of its tensor inputs,
        constants included), `output` (its first output's shape),
        `model_input` / `model_output` (whether it reads the model's input
        or writes its output), `macs`
        (multiply-accumulates per example of a conv or dense op, else 0)
        and `tflite` (the one-operator model: its variable inputs are the
        model's inputs, its constants kept).
    """
    schema, utils = _schema()
    model = _read(tflite_model)
    graph = model.subgraphs[0]
    found = []
    for index, op in enumerate(graph.operators):
        inputs = [t for t in op.inputs if t >= 0]
        used = list(dict.fromkeys(inputs + list(op.outputs)))
        new = schema.ModelT()
        new.version = model.version
        new.operatorCodes = model.operatorCodes
        new.buffers = [schema.BufferT()]
        new.description = f"operator {index}"
        tensors, where, feeds = [], {}, []
        for t in used:
            tensor = copy.copy(graph.tensors[t])
            if _has_data(model, tensor):
                new.buffers.append(model.buffers[tensor.buffer])
                tensor.buffer = len(new.buffers) - 1
            else:
                tensor.buffer = 0
                if t in inputs:
                    feeds.append(t)
            where[t] = len(tensors)
            tensors.append(tensor)
        one = copy.copy(op)
        one.inputs = [where[t] if t >= 0 else -1 for t in op.inputs]
        one.outputs = [where[t] for t in op.outputs]
        sub = schema.SubGraphT()
        sub.name = "main"
        sub.tensors = tensors
        sub.operators = [one]
        sub.inputs = [where[t] for t in feeds]
        sub.outputs = [where[t] for t in op.outputs]
        new.subgraphs = [sub]
        name = utils.opcode_to_name(model, op.opcodeIndex)
        shapes = [[int(d) for d in graph.tensors[t].shape] for t in inputs]
        output = [int(d) for d in graph.tensors[op.outputs[0]].shape]
        found.append(
            {
                "index": index,
                "op": name,
                "model_input": bool(set(feeds) & set(graph.inputs)),
                "model_output": bool(set(op.outputs) & set(graph.outputs)),
                "inputs": shapes,
                "output": output,
                "macs": _macs(name, shapes, output),
                "tflite": bytes(utils.convert_object_to_bytearray(new)),
            }
        )
    return found


def _resize_tensor(model, tensor, axis_sizes):
    """Gives a tensor the sizes `axis_sizes` (axis -> new size) on those
    axes: its data sliced, or padded with zeros."""
    shape = [int(d) for d in tensor.shape]
    new_shape = list(shape)
    for axis, size in axis_sizes.items():
        new_shape[axis] = size
    if new_shape == shape:
        return
    if _has_data(model, tensor):
        buffer = model.buffers[tensor.buffer]
        values = np.frombuffer(bytes(bytearray(buffer.data)), "float32")
        values = values.reshape(shape)[tuple(slice(0, n) for n in new_shape)]
        widths = [(0, max(n - s, 0)) for s, n in zip(shape, new_shape)]
        values = np.pad(values, widths).astype("float32")
        new_buffer = copy.copy(buffer)
        new_buffer.data = np.frombuffer(values.tobytes(), np.uint8)
        model.buffers[tensor.buffer] = new_buffer
    tensor.shape = np.array(new_shape, np.int32)
    tensor.shapeSignature = None


def _next_multiple(n, k):
    return -(-n // k) * k


def _channels(op_tflite):
    """`(model, op name, (x, w, b, y) tensors)` of a one-operator model."""
    _, utils = _schema()
    model = _read(op_tflite, "op_tflite")
    graph = model.subgraphs[0]
    op = graph.operators[0]
    name = utils.opcode_to_name(model, op.opcodeIndex)
    tensors = graph.tensors
    if name not in (_CONV, _DEPTHWISE, _DENSE):
        return model, name, None
    x, w = tensors[op.inputs[0]], tensors[op.inputs[1]]
    b = tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    return model, name, (x, w, b, tensors[op.outputs[0]])


def resized_op(op_tflite, inputs: int | None = None, outputs: int | None = None):
    """A one-operator float32 conv or dense model (from `op_models`) with
    other channel counts: weights sliced, or padded with zeros.

    Args:
        op_tflite: one operator's model (the `tflite` of an `op_models`
            entry): a `CONV_2D` (not grouped), `DEPTHWISE_CONV_2D` (its
            channels are `inputs` and `outputs` alike: give one) or
            `FULLY_CONNECTED`.
        inputs: the new input channel count (None: as it is).
        outputs: the new output channel count (None: as it is).

    Returns:
        The resized model's bytes.

    Raises:
        ValueError: another operator, or a count below 1.
    """
    for name, value in (("inputs", inputs), ("outputs", outputs)):
        _validate.integer(name, value, minimum=1, optional=True)
    model, name, found = _channels(op_tflite)
    if found is None or (
        name == _CONV and int(found[0].shape[-1]) != int(found[1].shape[-1])
    ):
        raise ValueError(
            "Expected a one-operator CONV_2D (not grouped), DEPTHWISE_CONV_2D or "
            f"FULLY_CONNECTED model. Received: op_tflite with a {name}"
        )
    x, w, b, y = found
    if name == _DEPTHWISE:
        channels = inputs or outputs or int(w.shape[3])
        _resize_tensor(model, x, {len(x.shape) - 1: channels})
        _resize_tensor(model, w, {3: channels})
        out = channels
    else:
        out = outputs or int(w.shape[0])
        cin = inputs or int(w.shape[-1])
        _resize_tensor(model, x, {len(x.shape) - 1: cin})
        _resize_tensor(model, w, {0: out, len(w.shape) - 1: cin})
    if b is not None:
        _resize_tensor(model, b, {0: out})
    _resize_tensor(model, y, {len(y.shape) - 1: out})
    return bytes(_schema()[1].convert_object_to_bytearray(model))


def padded_op(op_tflite, multiple: int, inputs: bool = True, outputs: bool = True):
    """A one-operator float32 model (from `op_models`) with its channel
    counts padded up to a multiple: a `CONV_2D`'s input and output
    channels, a `DEPTHWISE_CONV_2D`'s channels, a `FULLY_CONNECTED`'s
    inputs and outputs (zeros in the new weights). Other operators, a
    grouped convolution, and counts already multiples, stay.

    Args:
        op_tflite: one operator's model (the `tflite` of an `op_models`
            entry).
        multiple: positive int (4, 8, 16).
        inputs: whether to pad the input channels (False for an operator
            that reads the model's input: an image's 3 channels stay).
        outputs: whether to pad the output channels (False for one that
            writes the model's output: the classes stay).

    Returns:
        The padded model's bytes.
    """
    multiple = _validate.integer("multiple", multiple, minimum=1)
    _, name, found = _channels(op_tflite)
    if found is None:
        return bytes(flatbuffer(op_tflite))
    x, w, _, y = found
    cin, out = int(x.shape[-1]), int(y.shape[-1])
    if name == _DEPTHWISE:  # (channels in = out: padded when both may be)
        if inputs and outputs:
            return resized_op(op_tflite, outputs=_next_multiple(out, multiple))
        return bytes(flatbuffer(op_tflite))
    if name == _CONV and cin != int(w.shape[-1]):  # grouped: left as it is
        return bytes(flatbuffer(op_tflite))
    return resized_op(
        op_tflite,
        inputs=_next_multiple(cin, multiple) if inputs else None,
        outputs=_next_multiple(out, multiple) if outputs else None,
    )


def profile_tflite(
    tflite_model, runs: int = 50, warmup: int = 5, num_threads: int = 1
) -> list:
    """Each operator of a .tflite model timed on its own in LiteRT.

    Args:
        tflite_model: the flatbuffer (bytes, e.g. from `to_tflite`) or a
            path to a .tflite file.
        runs: positive int, timed invokes per operator.
        warmup: int >= 0, untimed invokes first.
        num_threads: LiteRT threads.

    Returns:
        The list of `op_models` (without the one-operator models), each
        entry with `ms`: its median time per invoke. Their sum is close to
        `benchmark_tflite`'s time of the whole model (each invoke adds a
        few microseconds of its own).

    Example:

    >>> ops = keras_vib.export.profile_tflite(keras_vib.export.to_tflite(model))
    >>> sorted(ops, key=lambda op: -op["ms"])[0]["op"]
    'CONV_2D'
    """
    runs = _validate.integer("runs", runs, minimum=1)
    found = []
    for entry in op_models(tflite_model):
        one = entry.pop("tflite")
        timing = benchmark_tflite(
            one, runs=runs, warmup=warmup, num_threads=num_threads
        )
        found.append(dict(entry, ms=timing["median_ms"]))
    return found
