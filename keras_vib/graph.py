"""Channel analysis of a Keras functional graph: which channel feeds which.

This module reads a model; it never changes one. For every tensor of the
graph it computes, per channel of the last axis:

- `var`: the channel may vary with the input (False: it is a constant, for
  example the output of a closed gate or what a layer makes of one);
- `zero`: the channel is known to be identically zero;
- `live`: some consumer needs the channel's value;
- `present`: the channel exists in the slim model. It starts as
  `var & live` and grows where shapes must agree: the inputs of an `Add` all
  carry the channels its output carries, channel-wise layers keep their
  input and output channels in step, and model outputs keep every channel.

How a layer kind relates its output channels to its input channels is one
small rule in `_rule` below; `report.py` counts with the result and
`slim.py` cuts weights with it.
"""

import dataclasses

import keras
import numpy as np

from keras_vib.layers import VIBConv2D, VIBDense, VIBGate

# How an output channel reads its inputs.
COUPLED = "coupled"  # output channel k reads input channel sources[i][k]
MIXING = "mixing"  # every output channel reads every input channel (a kernel)
OPAQUE = "opaque"  # unknown: nothing can be said, nothing can be cut

L = keras.layers


def _nd(name):
    """`Name1D, Name2D, Name3D` layer classes."""
    return tuple(getattr(L, f"{name}{d}D") for d in (1, 2, 3))


# Identity at inference.
_DROPOUTS = (
    L.Dropout,
    L.GaussianDropout,
    L.GaussianNoise,
    L.AlphaDropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.Identity,
)
_MAX_POOLS = _nd("MaxPooling") + _nd("GlobalMaxPooling")
_AVG_POOLS = _nd("AveragePooling") + _nd("GlobalAveragePooling")
# Move values around without mixing channels.
_REARRANGING = _nd("Cropping") + _nd("UpSampling")
# Channel-wise, but a constant channel comes out varying (zeros at the border).
_PADDING = _nd("ZeroPadding")
_CHANNELWISE = (
    (L.BatchNormalization, L.Activation, L.ReLU, L.LeakyReLU, L.PReLU, L.ELU)
    + _DROPOUTS
    + _MAX_POOLS
    + _AVG_POOLS
    + _REARRANGING
)
_MERGE = (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Multiply)
CONV_LAYERS = _nd("Conv")
# Layers that map a zero channel to zero (activations are probed instead).
_ZERO_PRESERVING = (
    (L.PReLU, L.Flatten, L.Concatenate)
    + _DROPOUTS
    + _MAX_POOLS
    + _AVG_POOLS
    + _REARRANGING
    + _PADDING
)
# Layers that commute with a per-channel scale of any sign (max-pools and
# ReLU-like activations only with a scale >= 0).
_SCALE_COMMUTING = (
    (L.Flatten, L.Reshape, L.Concatenate)
    + _DROPOUTS
    + _AVG_POOLS
    + _REARRANGING
    + _PADDING
)


@dataclasses.dataclass
class Node:
    """One call of a layer in the graph.

    Attributes:
        layer: the layer called.
        inputs: ids of the input tensors (keys of `Analysis.tensors`).
        outputs: ids of the output tensors.
        kind: `COUPLED`, `MIXING` or `OPAQUE`.
        sources: for `COUPLED` nodes, one int array per input giving, for
            each output channel, the input channel it reads (-1: none).
        gate: for gates, the boolean kept mask applied to the channels.
        pad_sensitive: a conv with zero padding: a constant but nonzero
            input channel does not give a constant output.
        keras_node: the Keras node of the call (its arguments, to call a
            replacement layer the same way).
    """

    layer: keras.layers.Layer
    inputs: list
    outputs: list
    kind: str
    sources: list = None
    gate: np.ndarray = None
    pad_sensitive: bool = False
    keras_node: object = None


@dataclasses.dataclass
class TensorInfo:
    """Per-channel facts about one tensor of the graph (see module doc)."""

    shape: tuple
    var: np.ndarray
    zero: np.ndarray
    live: np.ndarray = None
    present: np.ndarray = None

    @property
    def channels(self):
        return self.shape[-1]


@dataclasses.dataclass
class Analysis:
    """The result of `analyze`: nodes in topological order and tensor facts.

    Attributes:
        model: the model analysed.
        inputs: ids of the model's input tensors.
        outputs: ids of the model's output tensors.
        nodes: the layer calls, inputs first.
        tensors: `TensorInfo` by tensor id.
        folds: for each gated node (by index in `nodes`), where its scale
            `mu` goes in the slim model: `BACKWARD` (into the layer that
            produces its input), `FORWARD` (into the layers that read it) or
            `EXPLICIT` (a per-channel scale layer). See `plan_folds`.
        symbols: the Keras tensor of each tensor id.
    """

    model: keras.Model
    inputs: list
    outputs: list
    nodes: list
    tensors: dict
    folds: dict = None
    symbols: dict = None

    def consumers(self):
        """Maps each tensor id to the list of `(node index, input index)` reading it."""
        readers = {}
        for i, node in enumerate(self.nodes):
            for j, t in enumerate(node.inputs):
                readers.setdefault(t, []).append((i, j))
        return readers

    def producers(self):
        """Maps each tensor id to the index of the node producing it."""
        return {t: i for i, node in enumerate(self.nodes) for t in node.outputs}


def functional_graph(model):
    """Returns `(inputs, outputs, nodes)` of a built Sequential or functional model.

    `nodes` are Keras nodes in topological order, input layers left out.
    """
    graph = model
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
    nodes_by_depth = getattr(graph, "_nodes_by_depth", None)
    if graph is None or nodes_by_depth is None:
        raise ValueError(
            "Expected a built Sequential or functional Keras model (one that "
            "starts from `keras.Input`). Received: "
            f"model={getattr(model, 'name', model)!r} of class "
            f"{type(model).__name__}"
        )
    nodes = []
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                nodes.append(node)
    return list(graph.inputs), list(graph.outputs), nodes


def _static_shape(tensor, layer):
    shape = tuple(tensor.shape)
    if len(shape) < 1 or shape[-1] is None:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has an output of "
            f"unknown channel dimension: shape={shape}. keras_vib needs the "
            "last axis of every tensor to be known."
        )
    return shape


def _merge_sources(in_shapes, out_shape):
    channels = out_shape[-1]
    if any(shape[-1] != channels for shape in in_shapes):
        return None  # broadcasting over channels: not a plain merge
    return [np.arange(channels) for _ in in_shapes]


def _concat_sources(layer, in_shapes, out_shape):
    rank = len(out_shape)
    if layer.axis not in (-1, rank - 1):
        return None
    sources, offset = [], 0
    for shape in in_shapes:
        src = np.full(out_shape[-1], -1)
        src[offset : offset + shape[-1]] = np.arange(shape[-1])
        sources.append(src)
        offset += shape[-1]
    return sources


def _flatten_sources(in_shape, out_shape):
    channels = in_shape[-1]
    if out_shape[-1] is None or out_shape[-1] % channels:
        return None
    # Channels-last flattening: feature index = position * channels + c.
    return [np.tile(np.arange(channels), out_shape[-1] // channels)]


def _rule(layer, in_shapes, out_shape):
    """Returns `(kind, sources, pad_sensitive)` for one layer call."""
    one = [np.arange(out_shape[-1])]
    if isinstance(layer, keras.layers.BatchNormalization):
        if layer.axis not in (-1, len(out_shape) - 1):
            return OPAQUE, None, False
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", "")
        if name in ("softmax", "log_softmax"):
            return OPAQUE, None, False
    if isinstance(layer, VIBGate) or isinstance(layer, _CHANNELWISE + _PADDING):
        if len(in_shapes) == 1 and in_shapes[0][-1] == out_shape[-1]:
            return COUPLED, one, False
        return OPAQUE, None, False
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        multiplier = layer.depth_multiplier
        pads = layer.padding != "valid" and any(k > 1 for k in layer.kernel_size)
        return COUPLED, [np.arange(out_shape[-1]) // multiplier], pads
    if isinstance(layer, (VIBDense, keras.layers.Dense)):
        return MIXING, None, False
    if isinstance(layer, (VIBConv2D,) + CONV_LAYERS):
        conv = layer.conv if isinstance(layer, VIBConv2D) else layer
        if conv.groups != 1:
            return OPAQUE, None, False
        pads = conv.padding != "valid" and any(k > 1 for k in conv.kernel_size)
        return MIXING, None, pads
    if isinstance(layer, keras.layers.Flatten):
        sources = _flatten_sources(in_shapes[0], out_shape)
        return (COUPLED if sources else OPAQUE), sources, False
    if isinstance(layer, keras.layers.Reshape):
        if in_shapes[0][-1] == out_shape[-1]:
            return COUPLED, one, False
        return OPAQUE, None, False
    if isinstance(layer, _MERGE):
        sources = _merge_sources(in_shapes, out_shape)
        return (COUPLED if sources else OPAQUE), sources, False
    if isinstance(layer, keras.layers.Concatenate):
        sources = _concat_sources(layer, in_shapes, out_shape)
        return (COUPLED if sources else OPAQUE), sources, False
    return OPAQUE, None, False


def _gate_mask(layer):
    if isinstance(layer, VIBGate):
        return layer.kept_mask()
    if isinstance(layer, (VIBDense, VIBConv2D)):
        return layer.kept_mask()
    return None


def _keeps_zero(layer):
    """Whether the channel-wise `layer` maps a zero channel to zero."""
    if isinstance(layer, _ZERO_PRESERVING) or isinstance(layer, VIBGate):
        return True
    activation = None
    if isinstance(layer, keras.layers.Activation):
        activation = layer.activation
    elif isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU)):
        activation = layer
    elif isinstance(layer, keras.layers.ELU):
        return True
    if activation is None:
        return False
    value = keras.ops.convert_to_numpy(activation(keras.ops.zeros((1, 1))))
    return bool(np.all(value == 0))


def _gather(mask, src):
    """`mask[src]` with False where `src` is -1."""
    out = mask[np.maximum(src, 0)]
    return np.where(src >= 0, out, False)


def _scatter_any(values, src, channels):
    """For each input channel, whether any output channel reading it is True."""
    out = np.zeros(channels, bool)
    valid = src >= 0
    np.logical_or.at(out, src[valid], values[valid])
    return out


def _forward(node, tensors):
    ins = [tensors[t] for t in node.inputs]
    out = tensors[node.outputs[0]]
    channels = out.channels
    layer = node.layer
    if node.kind == OPAQUE:
        out.var = np.ones(channels, bool)
        out.zero = np.zeros(channels, bool)
    elif node.kind == MIXING:
        any_var = any(t.var.any() for t in ins)
        if node.pad_sensitive:
            # Zero padding makes a nonzero constant vary over the positions.
            any_var = any_var or any((~t.zero).any() for t in ins)
        out.var = np.full(channels, any_var)
        out.zero = np.zeros(channels, bool)
    else:
        var = [_gather(t.var, s) for t, s in zip(ins, node.sources)]
        zero = [_gather(t.zero, s) for t, s in zip(ins, node.sources)]
        out.var = np.logical_or.reduce(var)
        if isinstance(layer, _PADDING) or node.pad_sensitive:
            # Zero padding makes a nonzero constant vary over the positions.
            out.var = out.var | ~zero[0]
        if isinstance(layer, (keras.layers.Multiply, keras.layers.Concatenate)):
            # A product is zero if a factor is; a concatenated channel comes
            # from one input (the others gather False).
            out.zero = np.logical_or.reduce(zero)
        elif isinstance(layer, _MERGE):
            out.zero = np.logical_and.reduce(zero)
        else:
            out.zero = zero[0] if _keeps_zero(layer) else np.zeros(channels, bool)
    if node.gate is not None:
        out.var = out.var & node.gate
        out.zero = out.zero | ~node.gate


def _backward(node, tensors):
    ins = [tensors[t] for t in node.inputs]
    live = tensors[node.outputs[0]].live
    if node.gate is not None:
        live = live & node.gate
    for i, t in enumerate(ins):
        if node.kind == OPAQUE:
            need = np.ones(t.channels, bool)
        elif node.kind == MIXING:
            need = t.var.copy()
            if node.pad_sensitive:
                need |= ~t.zero
            need &= live.any()
        else:
            need = _scatter_any(live, node.sources[i], t.channels)
        t.live = need if t.live is None else (t.live | need)


def _couple(node, tensors):
    """Makes coupled input and output channels present together.

    Returns True when anything changed.
    """
    if node.kind != COUPLED:
        return False
    out = tensors[node.outputs[0]]
    changed = False
    for t, src in zip((tensors[i] for i in node.inputs), node.sources):
        want_out = out.present | _gather(t.present, src)
        if isinstance(node.layer, keras.layers.Flatten):
            # A flattened feature can go on its own (slim_model selects the
            # kept features after the Flatten): its channel only has to stay
            # while any of its features does.
            want_out = out.present
        want_in = t.present | _scatter_any(out.present, src, t.channels)
        if not np.array_equal(want_out, out.present):
            out.present, changed = want_out, True
        if not np.array_equal(want_in, t.present):
            t.present, changed = want_in, True
    return changed


def analyze(model):
    """Analyses the channels of a built Sequential or functional model.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model`.

    Returns:
        An `Analysis`.
    """
    inputs, outputs, keras_nodes = functional_graph(model)
    tensors, nodes = {}, []
    symbols = {id(x): x for x in inputs}
    for x in inputs:
        shape = tuple(x.shape)
        channels = shape[-1] if shape and shape[-1] is not None else 0
        tensors[id(x)] = TensorInfo(
            shape, np.ones(channels, bool), np.zeros(channels, bool)
        )
    for keras_node in keras_nodes:
        layer = keras_node.operation
        in_tensors = list(keras_node.input_tensors)
        out_tensors = list(keras_node.outputs)
        out_shape = _static_shape(out_tensors[0], layer)
        in_shapes = [tuple(t.shape) for t in in_tensors]
        if len(out_tensors) == 1 and all(s and s[-1] for s in in_shapes):
            kind, sources, pads = _rule(layer, in_shapes, out_shape)
        else:
            kind, sources, pads = OPAQUE, None, False
        node = Node(
            layer=layer,
            inputs=[id(t) for t in in_tensors],
            outputs=[id(t) for t in out_tensors],
            kind=kind,
            sources=sources,
            gate=_gate_mask(layer),
            pad_sensitive=pads,
            keras_node=keras_node,
        )
        for t in out_tensors:
            symbols[id(t)] = t
            shape = _static_shape(t, layer)
            tensors[id(t)] = TensorInfo(shape, None, None)
        if kind == OPAQUE and len(out_tensors) > 1:
            for t in out_tensors:
                info = tensors[id(t)]
                info.var = np.ones(info.channels, bool)
                info.zero = np.zeros(info.channels, bool)
        else:
            _forward(node, tensors)
        nodes.append(node)

    for x in outputs:
        info = tensors[id(x)]
        info.live = np.ones(info.channels, bool)
    for node in reversed(nodes):
        for t in node.outputs:
            info = tensors[t]
            if info.live is None:  # an output nobody reads
                info.live = np.zeros(info.channels, bool)
        _backward(node, tensors)

    for info in tensors.values():
        info.present = info.var & info.live
    for x in outputs:
        info = tensors[id(x)]
        info.present = np.ones(info.channels, bool)
    changed = True
    while changed:
        changed = False
        for node in reversed(nodes):
            changed |= _couple(node, tensors)
        for node in nodes:
            changed |= _couple(node, tensors)
        changed |= _feed_starved(nodes, tensors)
    analysis = Analysis(
        model=model,
        inputs=[id(x) for x in inputs],
        outputs=[id(x) for x in outputs],
        nodes=nodes,
        tensors=tensors,
        symbols=symbols,
    )
    analysis.folds = plan_folds(analysis)
    return analysis


def folds_constants(node, tensors):
    """Whether a kernel layer folds constant inputs into its bias.

    True when some input channel it drops is a nonzero constant: the slim
    layer then needs a bias even if the original had none.
    """
    if node.kind != MIXING:
        return False
    return any((~tensors[t].present & ~tensors[t].zero).any() for t in node.inputs)


def _feed_starved(nodes, tensors):
    """Keeps the input channels a kept kernel layer cannot do without.

    The nonzero constant channels read by a zero-padded conv stay. And a
    layer that must still produce outputs (a classifier after a layer whose
    gate closed completely) needs an input of width >= 1 in the slim
    model; its constant contribution is folded into its bias. Returns True
    when anything changed.
    """
    changed = False
    for node in nodes:
        if node.kind != MIXING:
            continue
        if not any(tensors[t].present.any() for t in node.outputs):
            continue
        ins = [tensors[t] for t in node.inputs]
        if node.pad_sensitive:
            # Zero padding: a nonzero constant input channel is not constant
            # at the border of the output, so it stays.
            for t in ins:
                want = t.present | ~t.zero
                if not np.array_equal(want, t.present):
                    t.present, changed = want, True
        if any(t.present.any() for t in ins) or not ins[0].channels:
            continue
        ins[0].present = ins[0].present.copy()
        ins[0].present[0] = True
        changed = True
    return changed


# Where a gate's scale goes in the slim model.
BACKWARD = "backward"  # into the kernel/bias/BN of the layer that produces its input
FORWARD = "forward"  # into the input rows of the layers that read its output
EXPLICIT = "explicit"  # a per-channel scale layer (BatchNormalization) in its place

_PROBE = np.linspace(-3.0, 3.0, 13, dtype="float32").reshape(1, 13)


def _scaling_behaviour(fn):
    """`"linear"`, `"positive"` (f(a x) = a f(x) for a >= 0) or None."""
    if fn is None:
        return "linear"
    x = keras.ops.convert_to_tensor(_PROBE)
    fx = keras.ops.convert_to_numpy(fn(x))
    homogeneous = np.allclose(
        keras.ops.convert_to_numpy(fn(2.5 * x)), 2.5 * fx, rtol=1e-6, atol=1e-6
    ) and np.allclose(keras.ops.convert_to_numpy(fn(0.0 * x)), 0.0)
    if not homogeneous:
        return None
    odd = np.allclose(keras.ops.convert_to_numpy(fn(-x)), -fx, rtol=1e-6, atol=1e-6)
    return "linear" if odd else "positive"


def activation_scaling(layer):
    """How the activation of `layer` commutes with a per-channel scale.

    Returns `"linear"` (any scale), `"positive"` (scales >= 0 only: ReLU,
    leaky ReLU, PReLU) or None (no scale commutes: tanh, ReLU6...).
    """
    if isinstance(layer, (VIBDense, VIBConv2D, keras.layers.Activation)):
        return _scaling_behaviour(layer.activation)
    if isinstance(layer, (keras.layers.Dense,) + CONV_LAYERS):
        return _scaling_behaviour(layer.activation)
    if isinstance(layer, keras.layers.PReLU):
        return "positive"
    if isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU)):
        return _scaling_behaviour(layer)
    return None


def gate_scale(layer):
    """The per-channel factor a gate applies at inference: `mu` or 0."""
    gate = layer.gate if isinstance(layer, (VIBDense, VIBConv2D)) else layer
    mu = keras.ops.convert_to_numpy(gate.mu).astype("float64")
    return np.where(gate.kept_mask(), mu, 0.0)


def _single_reader(analysis, readers, tensor):
    return len(readers.get(tensor, [])) == 1 and tensor not in analysis.outputs


def _backward_absorber(analysis, index, positive, readers, producers):
    """Index of the node that can absorb gate `index`'s scale, or None."""
    node = analysis.nodes[index]
    if isinstance(node.layer, (VIBDense, VIBConv2D)):
        scaling = activation_scaling(node.layer)
        ok = scaling == "linear" or (scaling == "positive" and positive)
        return index if ok else None
    source = node.inputs[0]
    for _ in range(2):  # [activation layer ->] Dense/Conv/BN
        if source not in producers or not _single_reader(analysis, readers, source):
            return None
        p = producers[source]
        producer = analysis.nodes[p]
        layer = producer.layer
        if isinstance(layer, keras.layers.BatchNormalization):
            return p if producer.kind == COUPLED else None
        if isinstance(layer, (keras.layers.Dense,) + CONV_LAYERS):
            if producer.kind != MIXING:
                return None
            scaling = activation_scaling(layer)
            ok = scaling == "linear" or (scaling == "positive" and positive)
            return p if ok else None
        scaling = activation_scaling(layer)
        if producer.kind != COUPLED or not (
            scaling == "linear" or (scaling == "positive" and positive)
        ):
            return None
        if scaling == "positive":
            # The activation lets a scale >= 0 through; the producer before
            # it must then be linear.
            positive = False
        source = producer.inputs[0]
    return None


def _forward_ok(analysis, tensor, positive, readers, seen=None):
    """Whether every path from `tensor` ends in a layer absorbing a scale."""
    if tensor in analysis.outputs:
        return False
    seen = set() if seen is None else seen
    for i, _ in readers.get(tensor, []):
        node = analysis.nodes[i]
        layer = node.layer
        if node.kind == MIXING:
            continue  # scales its input rows
        if node.kind != COUPLED:
            return False
        if isinstance(
            layer, (keras.layers.BatchNormalization, keras.layers.DepthwiseConv2D)
        ):
            continue  # absorbs it per channel
        passes = isinstance(layer, _SCALE_COMMUTING + (VIBGate,))
        if not passes and positive:
            passes = isinstance(layer, _MAX_POOLS) or (
                activation_scaling(layer) is not None
            )
        elif not passes:
            passes = activation_scaling(layer) == "linear"
        if not passes:
            return False
        if i in seen:
            continue
        seen.add(i)
        if not all(
            _forward_ok(analysis, t, positive, readers, seen) for t in node.outputs
        ):
            return False
    return True


def plan_folds(analysis):
    """Decides where the scale of each gate goes in the slim model.

    A gate multiplies channel j by `mu_j` (0 once closed). The slim model
    has no gate: the factor goes backward into the layer producing the gate's
    input when its activation commutes with it (linear, or ReLU-like with
    `mu >= 0`); otherwise forward into the layers reading the gate's output
    when every path to them commutes with it (a max-pool or a ReLU only
    with `mu >= 0`); otherwise into an explicit per-channel scale layer.

    Returns:
        A dict mapping each gated node index to `(mode, absorber)`, `mode`
        one of `BACKWARD`, `FORWARD`, `EXPLICIT`, `absorber` the index of
        the node absorbing a backward fold (else None).
    """
    readers, producers = analysis.consumers(), analysis.producers()
    folds = {}
    for i, node in enumerate(analysis.nodes):
        if node.gate is None:
            continue
        present = analysis.tensors[node.outputs[0]].present
        positive = bool(np.all(gate_scale(node.layer)[present] >= 0))
        absorber = _backward_absorber(analysis, i, positive, readers, producers)
        if absorber is not None:
            folds[i] = (BACKWARD, absorber)
        elif _forward_ok(analysis, node.outputs[0], positive, readers):
            folds[i] = (FORWARD, None)
        else:
            folds[i] = (EXPLICIT, None)
    return folds
