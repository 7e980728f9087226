"""Insert VIB gates into a Keras model the user already has."""

import warnings

import keras
import numpy as np

from keras_vib import _validate, graph
from keras_vib.handlers import COUPLED, MIXING, OPAQUE
from keras_vib.handlers.base import output_zero
from keras_vib.layers import InputSize, VIBGate, _check_kl_weight

__all__ = ["add_gates"]


def _selector(layers):
    if layers is None:
        return lambda layer: True
    if callable(layers) and not isinstance(layers, type):
        return layers
    if isinstance(layers, type) or (
        isinstance(layers, tuple) and all(isinstance(c, type) for c in layers)
    ):
        return lambda layer: isinstance(layer, layers)
    if isinstance(layers, (list, set, tuple)) and all(
        isinstance(n, str) for n in layers
    ):
        names = set(layers)
        return lambda layer: layer.name in names
    raise ValueError(
        "Expected `layers` to be None, a list of layer names, a layer class "
        f"(or tuple of classes) or a predicate. Received: layers={layers!r}"
    )


def _check_kl_weights(kl_weight):
    if isinstance(kl_weight, dict):
        for name, value in kl_weight.items():
            if not isinstance(name, str):
                raise ValueError(
                    "Expected the keys of `kl_weight` to be layer names. "
                    f"Received: {name!r}"
                )
            _check_kl_weight(value)
    else:
        _check_kl_weight(kl_weight)
    return kl_weight


class _Graph:
    """Who reads whom in the model, with the handlers' layer kinds."""

    def __init__(self, model):
        self.analysis = graph.analyze(model)
        self.readers = self.analysis.consumers()
        self.outputs = set(self.analysis.outputs)

    def rule(self, node):
        return self.analysis.rule(node)

    def readers_of(self, tensor):
        return [self.analysis.nodes[i] for i, _ in self.readers.get(tensor, [])]

    def single_reader(self, tensor):
        readers = self.readers_of(tensor)
        if len(readers) != 1 or tensor in self.outputs:
            return None
        return readers[0]

    def gate_point(self, node, points):
        """Where a gate on `node`'s units is exact: `(tensor, name)`.

        `name` names the gate: the layer's own, or that of the `Add` whose
        branches it joins. None when the units are gated already: they
        scale a factor of a product whose other factor is gated (the
        excitation of a squeeze-and-excitation block).
        """
        t, name = node.outputs[0], node.layer.name
        while True:
            nxt = self.single_reader(t)
            if nxt is None or self.rule(nxt).kind != COUPLED:
                return t, name
            rule = self.rule(nxt)
            if rule.ties:
                # Channels tied by an Add: one gate after the sum (and its
                # activation), for every branch.
                name = nxt.layer.name
            elif len(nxt.inputs) > 1:
                # A product: if another factor is gated, its gate zeroes the
                # product's channels, so these units go with it.
                if any(
                    u in points and self.forces_zero(nxt, k)
                    for k, u in enumerate(nxt.inputs)
                    if u != t
                ):
                    return None, name
                return t, name
            elif not rule.follower:
                return t, name
            t = nxt.outputs[0]

    def forces_zero(self, node, k):
        """Whether a zero channel of input `k` zeroes the output (a product)."""
        rule = self.rule(node)
        zeros = [(src >= 0) & (i == k) for i, src in enumerate(rule.sources)]
        return bool(np.all(output_zero(rule, zeros)))

    def groups(self):
        """Maps each tensor to its channel group's representative.

        Tensors whose channels are the same channels (through any layer
        that keeps each channel in place: a batch norm, an activation, a
        pooling, a depthwise conv; or the inputs and output of a residual
        `Add`) are one group.
        """
        parent = {}

        def find(t):
            while parent.get(t, t) != t:
                t = parent[t]
            return t

        for node in self.analysis.nodes:
            rule = self.rule(node)
            if rule.kind != COUPLED or len(node.outputs) != 1:
                continue
            channels = len(rule.sources[0])
            identity = len(node.inputs) == 1 and np.array_equal(
                rule.sources[0], np.arange(channels)
            )
            if not (identity or rule.ties):
                continue
            root = find(node.outputs[0])
            for t in node.inputs:
                if self.analysis.tensors[t].channels == channels:
                    parent[find(t)] = root
        return find

    def feeds_output(self, tensor, seen=None):
        """Whether `tensor`'s channels are a model output's: the output
        itself, or reached through layers without a kernel (a Flatten, a
        softmax: the classifier's logits)."""
        if tensor in self.outputs:
            return True
        seen = set() if seen is None else seen
        for node in self.readers_of(tensor):
            if node.index in seen or self.rule(node).kind == MIXING:
                continue
            seen.add(node.index)
            if any(self.feeds_output(t, seen) for t in node.outputs):
                return True
        return False

    def blocker(self, tensor, seen=None):
        """A layer downstream that a pruned channel of `tensor` cannot pass."""
        seen = set() if seen is None else seen
        for node in self.readers_of(tensor):
            if node.index in seen:
                continue
            seen.add(node.index)
            kind = self.rule(node).kind
            if kind == OPAQUE:
                return node
            if kind == COUPLED:
                for t in node.outputs:
                    found = self.blocker(t, seen)
                    if found is not None:
                        return found
        return None


def add_gates(
    model,
    layers=None,
    gate_input: bool = False,
    kl_weight=1e-3,
    mu_initializer="ones",
    log_sigma2_initializer=None,
    kl_spatial_scaling: bool = True,
    seed: int | None = None,
) -> keras.Model:
    """Returns a clone of `model` with a `VIBGate` after every prunable unit.

    The clone has the trained weights of `model` (which is not modified), so
    that `fit` compresses it and `slim_model` then cuts it. By default a gate
    goes after each kernel layer's output (`Dense`, `Conv*D`,
    `SeparableConv*D`, `Conv*DTranspose`: whatever its handler calls
    prunable) at the point where pruning is exact: after the batch norm,
    activation and depthwise conv layers that directly follow it; where that
    output is added to another branch (a residual `Add`), one gate goes
    after the sum (and its activation), so that the channels an `Add` ties
    are gated once and consistently; where several sums tie the same
    channels (a chain of residual blocks), one gate layer is applied after
    each of them, so that a closed channel is gone from all of them (it pays
    its KL term at each). The units that scale a gated feature
    map (the excitation of a squeeze-and-excitation block) go with that
    feature map's gate. No gate goes on a model output. Nested functional
    and Sequential models are flattened: the clone is one functional graph,
    with gates inside what was the nested model.

    A unit whose channels reach a layer keras_vib cannot slim through (a
    `LayerNormalization`, a recurrent layer, a `Lambda`, a custom layer with
    no registered handler...) is left ungated, with a one-line warning that
    names them, so `slim_model` never refuses the result.

    Gates start open with `mu = 1` exactly (the default `mu_initializer`),
    so in inference mode the clone computes what `model` computes, to float
    precision; only training (noise, KL) changes it.

    Args:
        model: a built Sequential or functional Keras model.
        layers: which layers to gate: None (every prunable one), a list of
            layer names, a layer class or tuple of classes, or a predicate
            `f(layer) -> bool`.
        gate_input: also gate the model's inputs (their last axis).
        kl_weight: the gates' KL weight: a number, or a dict from layer name
            to number (1e-3 for names it lacks). A gate is named
            `<name>_gate` after the layer it gates, after the `Add` for a
            gate after a residual sum, or `input` for an input gate.
        mu_initializer, log_sigma2_initializer, kl_spatial_scaling, seed:
            of every gate (see `VIBGate`).

    Returns:
        The gated functional `keras.Model`.

    Example:

    >>> base = keras.applications.MobileNetV2(
    ...     input_shape=(32, 32, 3), weights=None, classes=10)
    >>> gated = keras_vib.add_gates(base, kl_weight=1e-5)
    >>> gated.compile("adam", "sparse_categorical_crossentropy")
    >>> gated.fit(x, y)  # doctest: +SKIP
    >>> slim = keras_vib.slim_model(gated)
    """
    select = _selector(layers)
    kl_weight = _check_kl_weights(kl_weight)
    gate_input = _validate.boolean("gate_input", gate_input)
    g = _Graph(model)
    points = _gate_points(g, select, gate_input)
    gate_args = dict(
        mu_initializer=mu_initializer,
        log_sigma2_initializer=log_sigma2_initializer,
        kl_spatial_scaling=kl_spatial_scaling,
        seed=seed,
    )
    return _rebuild_with_gates(
        g, points, kl_weight, gate_args, f"{model.name}_gated", select
    )


def _gate_points(g, select, gate_input):
    """Where the gates go: tensor key -> the name of what they gate.

    Warns once about the prunable layers left ungated.
    """
    analysis = g.analysis
    points = {}
    if gate_input:
        for t in analysis.inputs:
            if len(analysis.tensors[t].shape) >= 2:
                points[t] = "input"
    ungated = []  # (layer, blocker node)
    for node in analysis.nodes:
        layer = node.layer
        rule = analysis.rule(node)
        if not rule.prunable or rule.kind != MIXING or not select(layer):
            continue
        t, name = g.gate_point(node, points)
        if t is None or g.feeds_output(t):
            continue  # gated with another factor; never gate a model output
        blocker = g.blocker(t)
        if blocker is not None:
            ungated.append((layer, blocker))
            continue
        points.setdefault(t, name)
    if ungated:
        warnings.warn(_ungated_message(ungated), stacklevel=3)
    return points


class _Names:
    """Unique layer names for the clone: its own, and the gates' (which
    avoid every name of the original model too)."""

    def __init__(self, reserved):
        self.reserved, self.used = reserved, set()

    def __call__(self, base, pattern, reserve=False):
        name, k = pattern.format(base=base, k=""), 1
        reserved = self.reserved if reserve else ()
        while name in self.used or name in reserved:
            name, k = pattern.format(base=base, k=f"_{k}"), k + 1
        self.used.add(name)
        return name


def _rebuild_with_gates(g, points, kl_weight, gate_args, name, select):
    """The clone of the model with a gate at each of `points`."""
    analysis = g.analysis
    unique = _Names({node.layer.name for node in analysis.nodes})
    group_of = g.groups()
    shared = {}  # channel group -> its gate

    by_layer = {}  # (the layer producing a gated tensor, output) -> gate
    producers = analysis.producers()

    def layer_key(t):
        if t not in producers:
            return t  # a model input
        node = analysis.nodes[producers[t]]
        return id(node.layer), node.outputs.index(t)

    def weight_of(name):
        """The KL weight of the gate named after `name`."""
        if isinstance(kl_weight, dict):
            return kl_weight.get(name, 1e-3)
        return kl_weight

    def gate(t, tensor):
        group, key = group_of(t), layer_key(t)
        if group not in shared and key in by_layer:
            # A layer called at several places (ALBERT's shared block): one
            # gate for all its calls, so that its slim copy is one layer.
            shared[group] = by_layer[key]
        if group not in shared:
            base = points[t]
            shared[group] = VIBGate(
                kl_weight=weight_of(base),
                name=unique(base, "{base}_gate{k}", reserve=True),
                **gate_args,
            )
        by_layer.setdefault(key, shared[group])
        # Channels tied to an already gated group (a chain of residual
        # sums) get the same gate, so that a closed channel goes everywhere.
        return shared[group](tensor)

    clones = {}  # a layer called twice (shared) has one clone

    def rebuild_node(node, values):
        layer = node.layer
        first = id(layer) not in clones
        inner = None
        if first:
            name = unique(layer.name, "{base}{k}")
        if first and select(layer) and analysis.rule(node).kind != OPAQUE:
            # Units inside the layer (attention heads): its gated copy.
            inner = node.handler.gated(
                node, name, kl_weight=weight_of(layer.name), **gate_args
            )
        if inner is not None:
            clones[id(layer)] = inner
        elif first:
            clones[id(layer)] = graph.clone(layer, name)
        clone = clones[id(layer)]
        outputs = graph.call(node, clone, values)
        if first and clone is not layer and layer.weights and inner is None:
            clone.set_weights(layer.get_weights())
        return [
            gate(t, out) if t in points else out
            for t, out in zip(node.outputs, outputs)
        ]

    new_inputs, values = [], {}
    for t in analysis.inputs:
        x = analysis.symbols[t]
        inp = keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name)
        new_inputs.append(inp)
        value = inp
        if None in tuple(x.shape[1:]):
            # Sizes left open: recorded while training (the reference size
            # of the FLOPs, when none is given).
            size_name = unique(f"{x.name}_size", "{base}{k}", reserve=True)
            value = InputSize(name=size_name)(inp)
        values[t] = gate(t, value) if t in points else value
    values = graph.rebuild(analysis.graph, values, rebuild_node)
    outputs = [values[t] for t in analysis.outputs]
    return keras.Model(
        analysis.graph.pack("input", new_inputs),
        analysis.graph.pack("output", outputs),
        name=name,
    )


def _ungated_message(ungated):
    """One line naming the layers left ungated and what blocks them."""

    def one(layer, blocker):
        return (
            f"layer {layer.name!r} ({type(layer).__name__}) reaches "
            f"{graph.describe(blocker.layer)}"
        )

    shown = "; ".join(one(layer, blocker) for layer, blocker in ungated[:3])
    more = f"; and {len(ungated) - 3} more" if len(ungated) > 3 else ""
    count = "1 layer is" if len(ungated) == 1 else f"{len(ungated)} layers are"
    return (
        f"add_gates: {count} left ungated because their units reach a layer "
        f"keras_vib cannot slim through: {shown}{more}."
    )
