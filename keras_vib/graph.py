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
import functools
import inspect

import keras
import numpy as np

from keras_vib import _keras
from keras_vib.handlers import COUPLED, MIXING, OPAQUE, handler_for
from keras_vib.handlers.base import (
    OPAQUE_RULE,
    Kept,
    accepted,
    from_attributes,
    output_zero,
    passes,
)

__all__ = ["Graph", "Structure", "analyze", "rebuild", "describe"]


def describe(layer):
    """`layer 'name' of class X`, or `keras.ops call 'name' (X)` for an op."""
    if isinstance(layer, keras.layers.Layer):
        return f"layer {layer.name!r} of class {type(layer).__name__}"
    return f"keras.ops call {layer.name!r} ({type(layer).__name__})"


@dataclasses.dataclass(eq=False, frozen=True)
class Node:
    """One call of a layer (or operation) in the flattened graph.

    What the handlers' hooks receive; nothing writes to it once the graph
    is built (the analysis returns its facts apart, in an `Analysis`).

    Attributes:
        layer: the layer or operation called.
        call: the Keras call (a `keras_vib._keras.Call`: its tensors and
            arguments).
        inputs: keys of the input tensors (keys of `Graph.symbols`).
        outputs: keys of the output tensors.
        training: a `training` value forced by an enclosing model call
            (`base(x, training=False)`), else None.
        handler: the layer kind's handler (`handlers.handler_for`).
        index: position in `Graph.nodes`.
        shapes: the graph's static shape of each tensor key (at its
            reference input size, if it has one: `Graph`).
    """

    layer: object
    call: object
    inputs: list
    outputs: list
    training: object
    handler: object
    index: int
    shapes: dict = dataclasses.field(repr=False, default=None)

    @property
    def in_shapes(self):
        """Static shapes of the inputs (None where a size is unknown)."""
        return [self.shapes[k] for k in self.inputs]

    @property
    def out_shape(self):
        """Static shape of the first output (its channels must be known)."""
        return _known_channels(self.shapes[self.outputs[0]], self.layer)


class Graph:
    """A model's layer calls, nested models flattened, in topological order.

    Args:
        model: a built Sequential or functional model.
        input_shape: optional reference size of the inputs, for a model
            whose inputs have sizes left open (`keras.Input((None, 3))`):
            the shape of one example (no batch axis), or a list of them for
            several inputs. Every tensor's static shape is then worked out
            at that size (`shapes`).

    Attributes:
        model: the model.
        inputs, outputs: keys of the model's input and output tensors.
        nodes: the `Node`s.
        symbols: the Keras tensor of each key.
        shapes: the static shape of each key (None for a size unknown).
        input_shape: the reference input shapes, one per input, or None.
    """

    def __init__(self, model, input_shape=None):
        found = _keras.model_calls(model) if isinstance(model, keras.Model) else None
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
        self.shapes = {}
        inputs = found[0]
        self.inputs = [((), id(x)) for x in inputs]
        for x, key in zip(inputs, self.inputs):
            self.symbols[key] = x
        self.outputs = self._walk(found, (), self.inputs, None)
        self._structure = {
            "input": _indices(model, "input", inputs),
            "output": _indices(model, "output", found[1]),
        }
        self.input_shape = _check_input_shape(input_shape, inputs)
        if self.input_shape is None:
            self.shapes.update({k: tuple(t.shape) for k, t in self.symbols.items()})
        else:
            self._resolve_shapes()

    def pack(self, kind, values):
        """`values` (one per model input, or output: `kind`) in the
        structure the model takes or gives them (a dict of named inputs, a
        list, or one tensor), for `keras.Model(inputs, outputs)`."""
        indices = self._structure[kind]
        if indices is None:
            return values if len(values) > 1 else values[0]
        return keras.tree.map_structure(lambda i: values[i], indices)

    def _resolve_shapes(self):
        """Every tensor's shape at the reference input size, each call's
        output worked out symbolically (`compute_output_spec`: no node is
        added to the model's layers)."""
        specs = {}
        for key, shape in zip(self.inputs, self.input_shape):
            x = self.symbols[key]
            specs[key] = keras.KerasTensor((1,) + shape, dtype=x.dtype)
        for node in self.nodes:
            for key, before in zip(node.inputs, node.call.input_tensors):
                spec = specs.get(key)
                if spec is not None and spec.sparse > before.sparse:  # as `call`
                    specs[key] = keras.KerasTensor(spec.shape, dtype=spec.dtype)
            args, kwargs = _arguments(node, node.layer, specs)
            try:
                out = node.layer.compute_output_spec(*args, **kwargs)
            except Exception as error:
                raise ValueError(
                    f"{describe(node.layer).capitalize()} does not take the "
                    f"reference input size input_shape={self.input_shape!r}: "
                    f"{error}"
                ) from None
            if _left_open(out) and not _left_open((args, kwargs)):
                try:  # sizes its config leaves open: from its call
                    out = _keras.traced_output_spec(node.layer, args, kwargs)
                except Exception:  # noqa: BLE001  (the open sizes stay)
                    pass
            for k, spec in zip(node.outputs, keras.tree.flatten(out)):
                specs[k] = spec
        for key, spec in specs.items():
            self.shapes[key] = (None,) + tuple(spec.shape[1:])

    def _walk(self, found, scope, feeds, training):
        inputs, outputs, calls = found
        alias = {id(x): key for x, key in zip(inputs, feeds)}

        def key(t):
            return alias.get(id(t), (scope, id(t)))

        for call in calls:
            op = call.operation
            ins = [key(t) for t in call.input_tensors]
            outs = [key(t) for t in call.output_tensors]
            handler = handler_for(op)
            node = Node(
                op, call, ins, outs, training, handler, len(self.nodes), self.shapes
            )
            inner = _keras.model_calls(op) if isinstance(op, keras.Model) else None
            if inner is None:  # a composite layer, opened by its handler
                opened = handler.inside(node)
                inner = None if opened is None else _keras.model_calls(opened)
            forced = call.kwargs.get("training", training)
            if inner is not None and len(inner[0]) == len(ins):
                outs = self._walk(inner, scope + (id(call),), ins, forced)
                for t, k in zip(call.output_tensors, outs):
                    alias[id(t)] = k
                continue
            for t, k in zip(call.output_tensors, outs):
                self.symbols[k] = t
            self.nodes.append(node)
        return [key(t) for t in outputs]


def _left_open(specs):
    """Whether any spec in a structure has a size left open (batch aside)."""
    return any(
        None in tuple(x.shape[1:])
        for x in keras.tree.flatten(specs)
        if isinstance(x, keras.KerasTensor)
    )


def _indices(model, kind, tensors):
    """The model's `input` or `output` structure (a dict of named tensors,
    say) with each tensor's index in `tensors`, or None for a plain list or
    one tensor."""
    try:
        structure = getattr(model, kind)
    except (AttributeError, ValueError):
        return None
    if not isinstance(structure, dict):
        return None
    where = {id(t): i for i, t in enumerate(tensors)}
    flat = keras.tree.flatten(structure)
    if len(flat) != len(tensors) or any(id(t) not in where for t in flat):
        return None
    return keras.tree.map_structure(lambda t: where[id(t)], structure)


def _check_input_shape(input_shape, inputs):
    """`input_shape` as a list of tuples, one per input, or None."""
    if input_shape is None:
        return None
    shapes = input_shape
    flat = isinstance(input_shape, (list, tuple)) and all(
        isinstance(d, int) for d in input_shape
    )
    if len(inputs) == 1 and flat:
        shapes = [input_shape]
    ok = isinstance(shapes, (list, tuple)) and len(shapes) == len(inputs)
    out = []
    for shape, x in zip(shapes if ok else [], inputs):
        expected = tuple(x.shape[1:])
        ok = (
            isinstance(shape, (list, tuple))
            and len(shape) == len(expected)
            and all(isinstance(d, int) and d > 0 for d in shape)
            and all(e is None or e == d for e, d in zip(expected, shape))
        )
        if not ok:
            break
        out.append(tuple(int(d) for d in shape))
    if not ok:
        wanted = [tuple(x.shape[1:]) for x in inputs]
        raise ValueError(
            "Expected `input_shape` to be the shape of one example of each "
            f"input (no batch axis), positive sizes agreeing with {wanted}. "
            f"Received: input_shape={input_shape!r}"
        )
    return out


@functools.cache
def _takes_training(cls):
    """Whether the `call` of a layer class has a `training` argument."""
    try:
        return "training" in inspect.signature(cls.call).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def _arguments(node, op, values):
    """`(args, kwargs)` to call `op` as `node` was called, on `values` (key
    -> tensor), with the `training` an enclosing model call forced."""
    args, kwargs = node.call.arguments_for([values[k] for k in node.inputs])
    if node.training is not None and _takes_training(type(op)):
        kwargs["training"] = node.training
    return args, kwargs


def call(node, op, values):
    """Calls `op` as `node` was called, on `values` (key -> tensor).

    Returns the list of outputs.
    """
    for key, before in zip(node.inputs, node.call.input_tensors):
        value = values.get(key)
        if isinstance(value, keras.KerasTensor) and value.sparse > before.sparse:
            # Keras marks `x * eager_constant` sparse (keras-hub's Gemma
            # scales its embeddings so): a dense tensor, as it was traced.
            _keras.mark_dense(value)
    args, kwargs = _arguments(node, op, values)
    scaled = _keras.scalar_factor(op, args, kwargs)
    if scaled is not None:  # `x * c`: the same product, kept dense
        x, c = scaled
        return [keras.layers.Rescaling(c, dtype=x.dtype)(x)]
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


# What every layer's constructor takes through `**kwargs`.


def clone(layer, name=None):
    """A new layer with the config (not yet the weights) of `layer`.

    (One that builds its sublayers by calling itself is saved so that it
    does so again when loaded: `_keras.built_by_call`.)

    A stateless layer or operation Keras will not rebuild from its config
    (a `Lambda` in safe mode, a `keras.ops` call) is returned as it is, to
    be called again (a renamed copy of it when `name` differs). A layer
    whose config holds entries its constructor does not take (derived
    values) is rebuilt without them; one whose config does not read back
    at all, from the values of its attributes named as its constructor's
    arguments.

    Raises:
        ValueError: a layer with weights that cannot be rebuilt from its
            config (its weights must not be shared with the new model).
    """
    new = _clone(layer, name)
    return new if new is layer else _keras.built_by_call(new)


def _clone(layer, name):
    if not isinstance(layer, keras.layers.Layer):
        return layer
    try:
        config = layer.get_config()
        if name is not None:
            config["name"] = name
        try:
            new = type(layer).from_config(config)
        except Exception:
            fewer = accepted(type(layer), config)
            if fewer is None:
                raise
            return _keras.keep_config(type(layer).from_config(fewer), fewer)
        if _keras.has_kept_config(layer):  # a copy of a copy (the slim's)
            _keras.keep_config(new, config)
        return new
    except Exception as error:
        if not layer.weights:
            # Stateless: called again, under its new name where it has one
            # (sublayers of two opened blocks share names): rebuilt from its
            # attributes where it can be (then it saves), else a copy.
            new = from_attributes(layer, name)
            if new is not None:
                return new
            if name is None or name == layer.name:
                return layer
            return _keras.renamed_copy(layer, name)
        # A config Keras cannot read back (keras-hub's DeiTEncoder): the
        # constructor's arguments from the layer's attributes.
        new = from_attributes(layer, name)
        if new is not None:
            return new
        raise ValueError(
            f"Cannot copy {describe(layer)}: it does not rebuild from its own "
            f"config ({type(error).__name__}: {error}). Fix its `get_config` / "
            "`from_config`; the model was not changed."
        ) from None


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
        """The size of the last axis (0 where unknown: token ids of any
        length, which nothing gates)."""
        return self.shape[-1] if self.shape and self.shape[-1] is not None else 0


def _known_channels(shape, layer):
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


def _forward(node, rule, gate, tensors):
    ins = [tensors[t] for t in node.inputs]
    out = tensors[node.outputs[0]]
    channels = out.channels
    if rule.kind == OPAQUE:
        out.var = np.ones(channels, bool)
        out.zero = np.zeros(channels, bool)
    elif rule.kind == MIXING:
        # A tensor of unknown channels (token ids of any length) varies.
        any_var = any(t.var.any() or not t.channels for t in ins)
        if rule.pad_sensitive:
            # Zero padding makes a nonzero constant vary over the positions.
            any_var = any_var or any((~t.zero).any() for t in ins)
        out.var = np.full(channels, any_var)
        out.zero = np.zeros(channels, bool)
    else:
        var = [_gather(t.var, s) for t, s in zip(ins, rule.sources)]
        zero = [_gather(t.zero, s) for t, s in zip(ins, rule.sources)]
        out.var = np.logical_or.reduce(var)
        if rule.pad_sensitive:
            # Zero padding makes a nonzero constant vary over the positions.
            out.var = out.var | ~zero[0]
        out.zero = np.asarray(output_zero(rule, zero), bool)
        out.var = out.var & ~out.zero  # a product with a zero factor, say
    if gate is not None and rule.inner_gate:
        if not gate.any():  # every inner unit closed: a constant (its bias)
            out.var = np.zeros(channels, bool)
    elif gate is not None:
        out.var = out.var & gate
        out.zero = out.zero | ~gate


def _backward(node, rule, gate, tensors):
    ins = [tensors[t] for t in node.inputs]
    live = tensors[node.outputs[0]].live
    if gate is not None and not rule.inner_gate:
        live = live & gate
    for i, t in enumerate(ins):
        if rule.kind == OPAQUE:
            need = np.ones(t.channels, bool)
        elif rule.kind == MIXING:
            need = t.var.copy()
            if rule.pad_sensitive:
                need |= ~t.zero
            need &= live.any()
        else:
            need = _scatter_any(live, rule.sources[i], t.channels)
        t.live = need if t.live is None else (t.live | need)


def _couple(node, rule, tensors):
    """Makes coupled input and output channels present together.

    Returns True when anything changed.
    """
    if rule.kind != COUPLED:
        return False
    out = tensors[node.outputs[0]]
    changed = False
    for t, src in zip((tensors[i] for i in node.inputs), rule.sources):
        want_out = out.present | _gather(t.present, src)
        if rule.selectable:
            # An output feature can go on its own (slim_model selects the
            # kept ones): its channel only has to stay while any does.
            want_out = out.present
        want_in = t.present | _scatter_any(out.present, src, t.channels)
        if not np.array_equal(want_out, out.present):
            out.present, changed = want_out, True
        if not np.array_equal(want_in, t.present):
            t.present, changed = want_in, True
    return changed


def _feed_starved(nodes, rules, tensors):
    """Keeps the input channels a kept kernel layer cannot do without.

    The nonzero constant channels read by a zero-padded conv stay. And a
    layer that must still produce outputs (a classifier after a layer whose
    gate closed completely) needs an input of width >= 1 in the slim
    model; its constant contribution is folded into its bias. Returns True
    when anything changed.
    """
    changed = False
    for node in nodes:
        rule = rules[node.index]
        if rule.kind != MIXING:
            continue
        if not any(tensors[t].present.any() for t in node.outputs):
            continue
        ins = [tensors[t] for t in node.inputs]
        if rule.pad_sensitive:
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


def _whole(nodes, rules, tensors):
    """An opaque call's output is kept whole once any of its channels is
    (a `LayerNormalization` whose one channel a starved kernel layer
    reads gives all of them). Returns True when anything changed."""
    changed = False
    for node in nodes:
        if rules[node.index].kind != OPAQUE:
            continue
        for k in node.outputs:
            info = tensors[k]
            if info.present.any() and not info.present.all():
                info.present = np.ones(info.channels, bool)
                changed = True
    return changed


def _rule(node):
    """The handler's rule, where the analysis can use one: a call with one
    output and inputs of known channels (else opaque)."""
    outputs = node.call.output_tensors
    known = node.handler.open_inputs or all(s and s[-1] for s in node.in_shapes)
    out = node.shapes[node.outputs[0]]
    # An output of unknown channels (an attention mask of any length) is
    # one nothing gates: such a call is opaque.
    if len(outputs) == 1 and known and out and out[-1]:
        return node.handler.rule(node)
    return OPAQUE_RULE


class Structure:
    """What the analysis knows of a model whatever its gates keep.

    The graph, each call's `Rule` and each call's gate, computed once:
    `analyze(structure, masks)` then answers for any kept masks (the budget
    asks it many times per check).

    Attributes:
        graph: the `Graph`.
        rules: the `Rule` of each node, by index.
        gates: the `VIBGate` of each gated node, by index.
    """

    def __init__(self, model, input_shape=None):
        if isinstance(model, Graph):
            self.graph = model
        else:
            self.graph = Graph(model, input_shape)
        self.rules = [_rule(node) for node in self.graph.nodes]
        self.gates = {}
        for node in self.graph.nodes:
            gate = node.handler.gate(node)
            if gate is not None:
                self.gates[node.index] = gate


@dataclasses.dataclass
class Analysis:
    """The result of `analyze`: the graph, its rules, tensor facts, folds.

    Attributes:
        structure: the `Structure` (graph, rules, gates).
        masks: the kept mask of each gated node, by index.
        tensors: `TensorInfo` by tensor key.
        folds: for each gated node (by index), where its scale `mu` goes in
            the slim model: `BACKWARD` (into the layer that produces its
            input), `FORWARD` (into the layers that read it) or `EXPLICIT`
            (a per-channel scale layer). See `plan_folds`. An inner gate
            (`Rule.inner_gate`) has none: its layer takes its scale.
    """

    structure: Structure
    masks: dict
    tensors: dict
    folds: dict = None

    @property
    def graph(self):
        return self.structure.graph

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

    @property
    def rules(self):
        return self.structure.rules

    def rule(self, node):
        """The `Rule` of `node`."""
        return self.structure.rules[node.index]

    def gate(self, node):
        """The `VIBGate` of `node`, or None."""
        return self.structure.gates.get(node.index)

    def kept(self, node):
        """The `Kept` of `node`, for its handler's `counts`."""
        t = self.tensors
        ins = [t[k].present for k in node.inputs]
        rule = self.rule(node)
        units = self.masks.get(node.index) if rule.inner_gate else None
        return Kept(rule, ins, t[node.outputs[0]].present, units)

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


def analyze(model, masks=None, folds=True, input_shape=None):
    """Analyses the channels of a built Sequential or functional model.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model`, or
            its `Graph` or `Structure`.
        masks: optional dict, `id(gate)` -> the kept mask to assume for
            that gate (the gates' own `kept_mask()` by default).
        folds: whether to plan where the gates' scales go (`plan_folds`).
        input_shape: the reference input size of a model given as a model
            (see `Graph`).

    Returns:
        An `Analysis`.
    """
    if isinstance(model, Structure):
        structure = model
    else:
        structure = Structure(model, input_shape)
    graph, rules = structure.graph, structure.rules
    masks = {} if masks is None else dict(masks)
    for g in structure.gates.values():  # a gate called at several nodes: once
        if id(g) not in masks:
            masks[id(g)] = g.kept_mask()
    gate_masks = {i: masks[id(g)] for i, g in structure.gates.items()}
    tensors = {}
    for k in graph.inputs:
        info = tensors[k] = TensorInfo(graph.shapes[k])
        info.var = np.ones(info.channels, bool)
        info.zero = np.zeros(info.channels, bool)
    for node in graph.nodes:
        rule = rules[node.index]
        for k in node.outputs:
            tensors[k] = TensorInfo(graph.shapes[k])
        if rule.kind == OPAQUE and len(node.outputs) > 1:
            for k in node.outputs:
                info = tensors[k]
                info.var = np.ones(info.channels, bool)
                info.zero = np.zeros(info.channels, bool)
        else:
            _forward(node, rule, gate_masks.get(node.index), tensors)

    for k in graph.outputs:
        tensors[k].live = np.ones(tensors[k].channels, bool)
    for node in reversed(graph.nodes):
        for k in node.outputs:
            info = tensors[k]
            if info.live is None:  # an output nobody reads
                info.live = np.zeros(info.channels, bool)
        _backward(node, rules[node.index], gate_masks.get(node.index), tensors)

    for info in tensors.values():
        info.present = info.var & info.live
    for k in graph.outputs:
        tensors[k].present = np.ones(tensors[k].channels, bool)
    changed = True
    while changed:
        changed = False
        for node in reversed(graph.nodes):
            changed |= _couple(node, rules[node.index], tensors)
        for node in graph.nodes:
            changed |= _couple(node, rules[node.index], tensors)
        changed |= _feed_starved(graph.nodes, rules, tensors)
        changed |= _whole(graph.nodes, rules, tensors)
    analysis = Analysis(structure, gate_masks, tensors)
    if folds:
        analysis.folds = plan_folds(analysis)
    return analysis


def folds_constants(analysis, node):
    """Whether a kernel layer folds constant inputs into its bias.

    True when some input channel it drops is a nonzero constant: the slim
    layer then needs a bias even if the original had none.
    """
    if analysis.rule(node).kind != MIXING:
        return False
    tensors = analysis.tensors
    return any((~tensors[t].present & ~tensors[t].zero).any() for t in node.inputs)


# Where a gate's scale goes in the slim model.
BACKWARD = "backward"  # into the weights of the layer that produces its input
FORWARD = "forward"  # into the weights of the layers that read its output
EXPLICIT = "explicit"  # a per-channel scale layer (BatchNormalization) in its place


def gate_scale(analysis, node):
    """The per-channel factor the gate of `node` applies at inference: `mu` or 0."""
    gate = analysis.gate(node)
    mu = keras.ops.convert_to_numpy(gate.mu).astype("float64")
    return np.where(analysis.masks[node.index], mu, 0.0)


def _single_reader(analysis, readers, tensor):
    return len(readers.get(tensor, [])) == 1 and tensor not in analysis.outputs


def _backward_absorber(analysis, index, positive, readers, producers):
    """Index of the node that can absorb gate `index`'s scale, or None."""
    node = analysis.nodes[index]
    if analysis.gate(node) is not node.layer:
        # A gated kernel layer (VIBDense): its own weights, if its
        # activation lets the scale through.
        ok = passes(analysis.rule(node).output_scaling, positive)
        return index if ok else None
    source = node.inputs[0]
    for _ in range(2):  # [activation layer ->] Dense/Conv/BN
        if source not in producers or not _single_reader(analysis, readers, source):
            return None
        p = producers[source]
        producer = analysis.nodes[p]
        rule = analysis.rule(producer)
        if rule.kind == OPAQUE or analysis.gate(producer) is not None:
            return None
        if rule.output_scaling is not None:
            return p if passes(rule.output_scaling, positive) else None
        if rule.kind != COUPLED or len(producer.inputs) != 1:
            return None
        if not passes(rule.scaling, positive):
            return None
        if rule.scaling == "positive":
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
        rule = analysis.rules[i]
        if rule.kind == OPAQUE:
            return False
        if rule.absorbs_input_scale:
            continue  # scales its input rows or channels
        if rule.kind != COUPLED or not passes(rule.scaling, positive):
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
    for i in analysis.masks:
        node = analysis.nodes[i]
        if analysis.rules[i].inner_gate:
            continue  # folded inside its layer (`SlimContext.units`)
        present = analysis.tensors[node.outputs[0]].present
        positive = bool(np.all(gate_scale(analysis, node)[present] >= 0))
        absorber = _backward_absorber(analysis, i, positive, readers, producers)
        if absorber is not None:
            folds[i] = (BACKWARD, absorber)
        elif _forward_ok(analysis, node.outputs[0], positive, readers):
            folds[i] = (FORWARD, None)
        else:
            folds[i] = (EXPLICIT, None)
    return folds
