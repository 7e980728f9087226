"""Which gates a model has: the one place every caller asks.

Above the graph (it reads the flattened graph and asks each layer's
handler for its gate), below everyone who asks: the report, the budget,
the warm-up, the callbacks and the deployment.
"""

from keras_vib import graph

__all__ = ["gated_layers", "gates", "has_gates"]


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


def has_gates(model):
    """Whether `model` holds any keras_vib gate."""
    return bool(_gated(model))
