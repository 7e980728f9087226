"""The graph of a Keras model as keras_vib sees it, and its channel analysis.

`Graph(model)` flattens a Sequential or functional model, nested functional
and Sequential models included (at any depth), into one list of layer calls
in topological order; `rebuild` walks it to compute or rebuild anything
(the gated clone, the slim model, the tf_keras twin, the constant probe).

`analyze(model)` then computes, per channel of the last axis of every
tensor:

- `var`: the channel may vary with the input (False: it is a constant, for
  example the output of a closed gate or what a layer makes of one);
- `zero`: the channel is known to be identically zero;
- `live`: some consumer needs the channel's value;
- `present`: the channel exists in the slim model. It starts as
  `var & live` and grows where shapes must agree: the inputs of an `Add` all
  carry the channels its output carries, channel-wise layers keep their
  input and output channels in step, and model outputs keep every channel.

What each layer kind does to channels comes from its handler
(`keras_vib.handlers`); this module never tests layer classes.
"""

import dataclasses

import keras
import numpy as np

from keras_vib.handlers import COUPLED, MIXING, OPAQUE, handler_for
from keras_vib.handlers.base import passes

__all__ = ["Graph", "analyze", "rebuild", "describe"]


def describe(layer):
    """`layer 'name' of class X`, or `keras.ops call 'name' (X)` for an op."""
    if isinstance(layer, keras.layers.Layer):
        return f"layer {layer.name!r} of class {type(layer).__name__}"
    return f"keras.ops call {layer.name!r} ({type(layer).__name__})"


@dataclasses.dataclass(eq=False)
class Node:
    """One call of a layer (or operation) in the flattened graph.

    Attributes:
        layer: the layer or operation called.
        keras_node: the Keras node of the call (its arguments).
        inputs: keys of the input tensors (keys of `Graph.symbols`).
        outputs: keys of the output tensors.
        training: a `training` value forced by an enclosing model call
            (`base(x, training=False)`), else None.
        handler: the layer kind's handler (`handlers.handler_for`).
        index: position in `Graph.nodes`.
        in_shapes, out_shape: static shapes.
        kind, sources, pad_sensitive: the channel rule (`handlers.Rule`).
        gate: for gated layers, the boolean kept mask of their outputs.
        extra: facts a handler keeps about this call.
    """

    layer: object
    keras_node: object
    inputs: list
    outputs: list
    training: object = None
    handler: object = None
    index: int = 0
    in_shapes: list = None
    out_shape: tuple = None
    kind: str = OPAQUE
    sources: list = None
    pad_sensitive: bool = False
    gate: np.ndarray = None
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def in_tensors(self):
        return list(self.keras_node.input_tensors)


def _graph_of(model):
    graph = model
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
    nodes_by_depth = getattr(graph, "_nodes_by_depth", None)
    if graph is None or nodes_by_depth is None:
        return None
    nodes = []
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                nodes.append(node)
    return list(graph.inputs), list(graph.outputs), nodes


class Graph:
    """A model's layer calls, nested models flattened, in topological order.

    Attributes:
        model: the model.
        inputs, outputs: keys of the model's input and output tensors.
        nodes: the `Node`s.
        symbols: the Keras tensor of each key.
    """

    def __init__(self, model):
        found = _graph_of(model) if isinstance(model, keras.Model) else None
        if found is None:
            raise ValueError(
                "Expected a built Sequential or functional Keras model (one that "
                "starts from `keras.Input`). Received: "
                f"model={getattr(model, 'name', model)!r} of class "
                f"{type(model).__name__}. A subclassed model has no graph to "
                "read: build the same network with the functional API."
            )
        self.model = model
        self.nodes = []
        self.symbols = {}
        inputs = found[0]
        self.inputs = [((), id(x)) for x in inputs]
        for x, key in zip(inputs, self.inputs):
            self.symbols[key] = x
        self.outputs = self._walk(found, (), self.inputs, None)
        for i, node in enumerate(self.nodes):
            node.index = i

    def _walk(self, found, scope, feeds, training):
        inputs, outputs, keras_nodes = found
        alias = {id(x): key for x, key in zip(inputs, feeds)}

        def key(t):
            return alias.get(id(t), (scope, id(t)))

        for keras_node in keras_nodes:
            op = keras_node.operation
            ins = [key(t) for t in keras_node.input_tensors]
            inner = _graph_of(op) if isinstance(op, keras.Model) else None
            forced = keras_node.arguments.kwargs.get("training", training)
            if inner is not None:
                if len(inner[0]) != len(ins):
                    inner = None
            if inner is not None:
                outs = self._walk(inner, scope + (id(keras_node),), ins, forced)
                for t, k in zip(keras_node.outputs, outs):
                    alias[id(t)] = k
                continue
            outs = [key(t) for t in keras_node.outputs]
            for t, k in zip(keras_node.outputs, outs):
                self.symbols[k] = t
            self.nodes.append(
                Node(op, keras_node, ins, outs, training, handler_for(op))
            )
        return [key(t) for t in outputs]


def call(node, op, values):
    """Calls `op` as `node` was called, on `values` (key -> tensor).

    Returns the list of outputs.
    """
    mapping = {id(t): values[k] for t, k in zip(node.in_tensors, node.inputs)}
    args, kwargs = node.keras_node.arguments.fill_in(mapping)
    if node.training is not None and getattr(op, "_call_has_training_arg", False):
        kwargs["training"] = node.training
    return keras.tree.flatten(op(*args, **kwargs))


def rebuild(graph, inputs, fn):
    """The one graph walker: computes every tensor of `graph` anew.

    Args:
        graph: a `Graph`.
        inputs: dict, key -> new value of each model input.
        fn: `fn(node, values) -> list of outputs` for each node in order,
            `values` holding the new value of every tensor computed so far.

    Returns:
        The dict of new values (key -> value).
    """
    values = dict(inputs)
    for node in graph.nodes:
        for k, out in zip(node.outputs, fn(node, values)):
            values[k] = out
    return values


def clone(layer, name=None):
    """A new layer with the config (not yet the weights) of `layer`.

    A stateless layer or operation Keras will not rebuild from its config
    (a `Lambda` in safe mode, a `keras.ops` call) is returned as it is, to
    be called again.
    """
    if not isinstance(layer, keras.layers.Layer):
        return layer
    config = layer.get_config()
    if name is not None:
        config["name"] = name
    try:
        return type(layer).from_config(config)
    except Exception:
        if layer.weights:
            raise
        return layer


def evaluate(graph, feeds, keys):
    """The values of tensors `keys` of `graph` for the input arrays `feeds`."""
    values = rebuild(
        graph,
        dict(zip(graph.inputs, feeds)),
        lambda node, values: call(node, node.layer, values),
    )
    return [keras.ops.convert_to_numpy(values[k]) for k in keys]


@dataclasses.dataclass
class TensorInfo:
    """Per-channel facts about one tensor of the graph (see module doc)."""

    shape: tuple
    var: np.ndarray = None
    zero: np.ndarray = None
    live: np.ndarray = None
    present: np.ndarray = None

    @property
    def channels(self):
        return self.shape[-1]


@dataclasses.dataclass
class Analysis:
    """The result of `analyze`: the graph, tensor facts and gate folds.

    Attributes:
        graph: the `Graph`.
        tensors: `TensorInfo` by tensor key.
        folds: for each gated node (by index), where its scale `mu` goes in
            the slim model: `BACKWARD` (into the layer that produces its
            input), `FORWARD` (into the layers that read it) or `EXPLICIT`
            (a per-channel scale layer). See `plan_folds`.
    """

    graph: Graph
    tensors: dict
    folds: dict = None

    @property
    def model(self):
        return self.graph.model

    @property
    def nodes(self):
        return self.graph.nodes

    @property
    def inputs(self):
        return self.graph.inputs

    @property
    def outputs(self):
        return self.graph.outputs

    @property
    def symbols(self):
        return self.graph.symbols

    def consumers(self):
        """Maps each tensor key to the `(node index, input index)` pairs reading it."""
        readers = {}
        for i, node in enumerate(self.nodes):
            for j, t in enumerate(node.inputs):
                readers.setdefault(t, []).append((i, j))
        return readers

    def producers(self):
        """Maps each tensor key to the index of the node producing it."""
        return {t: i for i, node in enumerate(self.nodes) for t in node.outputs}


def _static_shape(tensor, layer):
    shape = tuple(tensor.shape)
    if len(shape) < 1 or shape[-1] is None:
        raise ValueError(
            f"{describe(layer).capitalize()} has an output of unknown channel "
            f"dimension: shape={shape}. keras_vib needs the last axis of every "
            "tensor to be known."
        )
    return shape


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
        if node.pad_sensitive:
            # Zero padding makes a nonzero constant vary over the positions.
            out.var = out.var | ~zero[0]
        out.zero = np.asarray(node.handler.output_zero(node, zero), bool)
        out.var = out.var & ~out.zero  # a product with a zero factor, say
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
    selectable = getattr(node.handler, "selectable", False)
    for t, src in zip((tensors[i] for i in node.inputs), node.sources):
        want_out = out.present | _gather(t.present, src)
        if selectable:
            # An output feature can go on its own (slim_model selects the
            # kept ones): its channel only has to stay while any does.
            want_out = out.present
        want_in = t.present | _scatter_any(out.present, src, t.channels)
        if not np.array_equal(want_out, out.present):
            out.present, changed = want_out, True
        if not np.array_equal(want_in, t.present):
            t.present, changed = want_in, True
    return changed


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


def _set_rule(node):
    layer = node.layer
    out_tensors = list(node.keras_node.outputs)
    node.out_shape = _static_shape(out_tensors[0], layer)
    node.in_shapes = [tuple(t.shape) for t in node.in_tensors]
    if len(out_tensors) == 1 and all(s and s[-1] for s in node.in_shapes):
        rule = node.handler.rule(node)
        node.kind, node.sources = rule.kind, rule.sources
        node.pad_sensitive = rule.pad_sensitive
    gate = node.handler.gate(node)
    node.gate = gate.kept_mask() if gate is not None else None


def analyze(model):
    """Analyses the channels of a built Sequential or functional model.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model` (or a
            `Graph` of one).

    Returns:
        An `Analysis`.
    """
    graph = model if isinstance(model, Graph) else Graph(model)
    tensors = {}
    for k in graph.inputs:
        shape = tuple(graph.symbols[k].shape)
        channels = shape[-1] if shape and shape[-1] is not None else 0
        tensors[k] = TensorInfo(
            shape, np.ones(channels, bool), np.zeros(channels, bool)
        )
    for node in graph.nodes:
        _set_rule(node)
        for k in node.outputs:
            tensors[k] = TensorInfo(_static_shape(graph.symbols[k], node.layer))
        if node.kind == OPAQUE and len(node.outputs) > 1:
            for k in node.outputs:
                info = tensors[k]
                info.var = np.ones(info.channels, bool)
                info.zero = np.zeros(info.channels, bool)
        else:
            _forward(node, tensors)

    for k in graph.outputs:
        tensors[k].live = np.ones(tensors[k].channels, bool)
    for node in reversed(graph.nodes):
        for k in node.outputs:
            info = tensors[k]
            if info.live is None:  # an output nobody reads
                info.live = np.zeros(info.channels, bool)
        _backward(node, tensors)

    for info in tensors.values():
        info.present = info.var & info.live
    for k in graph.outputs:
        tensors[k].present = np.ones(tensors[k].channels, bool)
    changed = True
    while changed:
        changed = False
        for node in reversed(graph.nodes):
            changed |= _couple(node, tensors)
        for node in graph.nodes:
            changed |= _couple(node, tensors)
        changed |= _feed_starved(graph.nodes, tensors)
    analysis = Analysis(graph=graph, tensors=tensors)
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


# Where a gate's scale goes in the slim model.
BACKWARD = "backward"  # into the weights of the layer that produces its input
FORWARD = "forward"  # into the weights of the layers that read its output
EXPLICIT = "explicit"  # a per-channel scale layer (BatchNormalization) in its place


def gate_scale(node):
    """The per-channel factor the gate of `node` applies at inference: `mu` or 0."""
    gate = node.handler.gate(node)
    mu = keras.ops.convert_to_numpy(gate.mu).astype("float64")
    return np.where(gate.kept_mask(), mu, 0.0)


def _single_reader(analysis, readers, tensor):
    return len(readers.get(tensor, [])) == 1 and tensor not in analysis.outputs


def _backward_absorber(analysis, index, positive, readers, producers):
    """Index of the node that can absorb gate `index`'s scale, or None."""
    node = analysis.nodes[index]
    if node.handler.gate(node) is not node.layer:
        # A gated kernel layer (VIBDense): its own weights, if its
        # activation lets the scale through.
        ok = passes(node.handler.output_scaling(node), positive)
        return index if ok else None
    source = node.inputs[0]
    for _ in range(2):  # [activation layer ->] Dense/Conv/BN
        if source not in producers or not _single_reader(analysis, readers, source):
            return None
        p = producers[source]
        producer = analysis.nodes[p]
        if producer.kind == OPAQUE or producer.gate is not None:
            return None
        absorbs = producer.handler.output_scaling(producer)
        if absorbs is not None:
            return p if passes(absorbs, positive) else None
        scaling = producer.handler.scaling(producer)
        if producer.kind != COUPLED or len(producer.inputs) != 1:
            return None
        if not passes(scaling, positive):
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
        if node.kind == OPAQUE:
            return False
        if node.handler.absorbs_input_scale(node):
            continue  # scales its input rows or channels
        if node.kind != COUPLED or not passes(node.handler.scaling(node), positive):
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
        positive = bool(np.all(gate_scale(node)[present] >= 0))
        absorber = _backward_absorber(analysis, i, positive, readers, producers)
        if absorber is not None:
            folds[i] = (BACKWARD, absorber)
        elif _forward_ok(analysis, node.outputs[0], positive, readers):
            folds[i] = (FORWARD, None)
        else:
            folds[i] = (EXPLICIT, None)
    return folds
