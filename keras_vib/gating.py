"""Insert VIB gates into a Keras model the user already has."""

import warnings

import keras

from keras_vib import graph
from keras_vib.layers import VIBGate, _check_kl_weight
from keras_vib.slim import clone_layer

__all__ = ["add_gates"]

# Layers that may sit between a kernel layer and its gate: pruning a unit
# after them is exact (they act per channel).
_FOLLOWERS = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
)
_PRUNABLE = (keras.layers.Dense,) + graph.CONV_LAYERS


def _selector(layers):
    if layers is None:
        return lambda layer: isinstance(layer, _PRUNABLE)
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
    """Who reads whom in the model, with the analysis' layer kinds."""

    def __init__(self, model):
        self.analysis = graph.analyze(model)
        self.readers = self.analysis.consumers()
        self.outputs = set(self.analysis.outputs)

    def single_reader(self, tensor):
        readers = self.readers.get(tensor, [])
        if len(readers) != 1 or tensor in self.outputs:
            return None
        return self.analysis.nodes[readers[0][0]]

    def gate_point(self, node):
        """Where a gate on `node`'s units is exact: `(tensor, name)`.

        `name` names the gate: the layer's own, or that of the `Add` whose
        branches it joins.
        """
        t, name = node.outputs[0], node.layer.name
        while True:
            nxt = self.single_reader(t)
            if nxt is None or nxt.kind != graph.COUPLED:
                return t, name
            if isinstance(nxt.layer, keras.layers.Add):
                # Channels tied by an Add: one gate after the sum (and its
                # activation), for every branch.
                name = nxt.layer.name
            elif not isinstance(nxt.layer, _FOLLOWERS):
                return t, name
            t = nxt.outputs[0]

    def blocker(self, tensor, seen=None):
        """A layer downstream that a pruned channel of `tensor` cannot pass."""
        seen = set() if seen is None else seen
        for i, _ in self.readers.get(tensor, []):
            if i in seen:
                continue
            seen.add(i)
            node = self.analysis.nodes[i]
            if node.kind == graph.OPAQUE or isinstance(
                node.layer, keras.layers.Multiply
            ):
                return node.layer
            if node.kind == graph.COUPLED:
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
    goes after each `Dense` and `Conv*D` output at the point where pruning
    is exact: after the `BatchNormalization` and activation layers that
    directly follow it; where that output is added to another branch (a
    residual `Add`), one gate goes after the sum (and its activation), so
    that the channels an `Add` ties are gated once and consistently. No gate
    goes on a model output.

    A unit whose channels reach a layer keras_vib cannot slim through (a
    `Multiply` by a per-channel attention as in squeeze-and-excitation, a
    recurrent layer, a `Lambda`...) is left ungated, with a warning that
    names that layer, so `slim_model` never refuses the result.

    Gates start open with `mu = 1` exactly (the default `mu_initializer`),
    so in inference mode the clone computes what `model` computes, to float
    precision; only training (noise, KL) changes it.

    Args:
        model: a built Sequential or functional Keras model.
        layers: which layers to gate: None (every Dense and Conv), a list of
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
    if not isinstance(gate_input, bool):
        raise ValueError(
            f"Expected `gate_input` to be a bool. Received: gate_input={gate_input!r}"
        )
    g = _Graph(model)
    analysis = g.analysis

    def weight_for(name):
        if isinstance(kl_weight, dict):
            return kl_weight.get(name, 1e-3)
        return kl_weight

    # Where the gates go: tensor id -> name of the layer they gate.
    points = {}
    if gate_input:
        for t in analysis.inputs:
            if len(analysis.tensors[t].shape) >= 2:
                points[t] = "input"
    for node in analysis.nodes:
        layer = node.layer
        if not isinstance(layer, _PRUNABLE) or not select(layer):
            continue
        if node.kind != graph.MIXING:
            continue
        t, name = g.gate_point(node)
        if t in g.outputs:
            continue  # never gate a model output
        blocker = g.blocker(t)
        if blocker is not None:
            warnings.warn(
                f"add_gates: layer {layer.name!r} ({type(layer).__name__}) is "
                f"left ungated: its units reach layer {blocker.name!r} of "
                f"class {type(blocker).__name__}, which keras_vib cannot "
                "slim through.",
                stacklevel=2,
            )
            continue
        points.setdefault(t, name)

    # Rebuild the graph with the gates in.
    new = {}
    new_inputs = []
    names = {node.layer.name for node in analysis.nodes}

    def gate(t, tensor):
        base = points[t]
        name, k = f"{base}_gate", 1
        while name in names:
            name, k = f"{base}_gate_{k}", k + 1
        names.add(name)
        layer = VIBGate(
            kl_weight=weight_for(base),
            mu_initializer=mu_initializer,
            log_sigma2_initializer=log_sigma2_initializer,
            kl_spatial_scaling=kl_spatial_scaling,
            seed=seed,
            name=name,
        )
        return layer(tensor)

    for t in analysis.inputs:
        x = analysis.symbols[t]
        inp = keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name)
        new_inputs.append(inp)
        new[t] = gate(t, inp) if t in points else inp
    for node in analysis.nodes:
        layer = node.layer
        clone = clone_layer(layer)
        mapping = {id(analysis.symbols[t]): new[t] for t in node.inputs}
        args, kwargs = node.keras_node.arguments.fill_in(mapping)
        outputs = keras.tree.flatten(clone(*args, **kwargs))
        if clone is not layer:
            clone.set_weights(layer.get_weights())
        for t, out in zip(node.outputs, outputs):
            new[t] = gate(t, out) if t in points else out
    outputs = [new[t] for t in analysis.outputs]
    return keras.Model(
        new_inputs if len(new_inputs) > 1 else new_inputs[0],
        outputs if len(outputs) > 1 else outputs[0],
        name=f"{model.name}_gated",
    )
