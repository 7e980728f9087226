"""Which gates a model has: the one place every caller asks.

Above the graph (it reads the flattened graph and asks each layer's
handler for its gate), below everyone who asks: the report, the budget,
the warm-up, the callbacks and the deployment.
"""

import numpy as np

from keras_vib import graph
from keras_vib.layers import InputSize

__all__ = [
    "gated_layers",
    "gates",
    "gates_of_callback",
    "has_gates",
    "recorded_input_shape",
    "records_input_size",
    "rounded_mask",
]


def _gated(model):
    """`(name, layer, gate)` of each gated layer, first call only."""
    seen, out = set(), []
    g = model if isinstance(model, graph.Graph) else graph.Graph(model)
    for node in g.nodes:
        gate = node.handler.gate(node)
        if gate is not None and id(node.layer) not in seen:
            seen.add(id(node.layer))
            out.append((node.layer.name, node.layer, gate))
    return out


def gated_layers(model):
    """The gated layers of a model, in graph order.

    Args:
        model: a built Sequential or functional Keras model.

    Returns:
        A list of `(name, layer)`: each `VIBGate`, `VIBDense` or `VIBConv2D`
        (any layer whose handler holds a gate) with its name. Every such
        layer has `kept_mask()`, `num_kept()`, `log_alpha()` and `kl_loss()`.
    """
    return [(name, layer) for name, layer, _ in _gated(model)]


def gates(model):
    """The `VIBGate` of each gated layer of a model, in graph order.

    Args:
        model: a built Sequential or functional Keras model (or its
            `graph.Graph`).

    Returns:
        A list of `(name, gate)`, named as in `gated_layers`: a `VIBDense` or
        `VIBConv2D` holds its gate in `.gate`, a bare `VIBGate` is its own.
    """
    return [(name, gate) for name, _, gate in _gated(model)]


def rounded_mask(mask, log_alpha, round_to):
    """A kept mask whose count is the nearest multiple of `round_to`.

    Half-way goes up; at least `round_to` where any unit is kept, at most
    the gate's units (all of them where it has fewer than `round_to`). The
    closed units of lowest `log_alpha` reopen, or the open units of highest
    close, as few as it takes. A mask that keeps nothing stays so.

    Args:
        mask: bool array, the units kept.
        log_alpha: float array of the same length, the gate's `log_alpha`.
        round_to: positive int.

    Returns:
        A new bool array.
    """
    mask = np.array(mask, dtype=bool)
    log_alpha = np.asarray(log_alpha)
    kept, units = int(mask.sum()), len(mask)
    if kept == 0 or round_to == 1:
        return mask
    target = max(round_to, int(np.floor(kept / round_to + 0.5)) * round_to)
    if target > units:
        target = units - units % round_to or units
    if target > kept:  # reopen the closed units nearest to the threshold
        closed = np.flatnonzero(~mask)
        order = np.argsort(log_alpha[closed], kind="stable")
        mask[closed[order][: target - kept]] = True
    elif target < kept:  # close the open units farthest from it
        kept_units = np.flatnonzero(mask)
        order = np.argsort(-log_alpha[kept_units], kind="stable")
        mask[kept_units[order][: kept - target]] = False
    return mask


def gates_of_callback(model, callback, remedy="remove it"):
    """`gates(model)` for a callback's `on_train_begin`; a `ValueError` that
    names the callback (and what to do) when the model has none."""
    found = gates(model)
    if not found:
        raise ValueError(
            f"{callback} found no VIB gate in the model {model.name!r}: add "
            f"`VIBGate`, `VIBDense` or `VIBConv2D` layers, or {remedy}."
        )
    return found


def has_gates(model):
    """Whether `model` holds any keras_vib gate."""
    return bool(_gated(model))


def recorded_input_shape(model):
    """The input size `model` last trained on, from the `InputSize` layers
    `add_gates` puts after inputs of open sizes: one shape per input (no
    batch axis); None for a model without open sizes, or where an open input
    has no record (a model built by hand, or not trained yet).

    Args:
        model: a built Sequential or functional Keras model (or its
            `graph.Graph`).
    """
    if not _open(model.model if isinstance(model, graph.Graph) else model):
        return None
    g = model if isinstance(model, graph.Graph) else graph.Graph(model)
    recorded = {}
    for node in g.nodes:
        if isinstance(node.layer, InputSize) and node.inputs[0] in g.inputs:
            recorded[node.inputs[0]] = node.layer.recorded()
    shapes = []
    for key in g.inputs:
        shape = tuple(g.symbols[key].shape[1:])
        if None in shape:
            shape = recorded.get(key)
            if shape is None:
                return None
        shapes.append(shape)
    return shapes


def records_input_size(model):
    """Whether `model` has inputs of open sizes that `InputSize` layers
    record (a model `add_gates` made)."""
    if not _open(model):
        return False
    return any(isinstance(node.layer, InputSize) for node in graph.Graph(model).nodes)


def _open(model):
    """Whether a model has inputs of sizes left open (False for what has
    no inputs: the graph then says what it is)."""
    inputs = getattr(model, "inputs", None) or []
    try:
        return any(None in tuple(x.shape[1:]) for x in inputs)
    except (AttributeError, TypeError):
        return False
