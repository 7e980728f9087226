"""The layer-handler base class and the registry that maps layer kinds to it.

A handler holds everything keras_vib knows about one kind of layer (or of
raw `keras.ops` operation): how its output channels depend on its input
channels, how a gate's per-channel scale folds through it, its kernel and
FLOP counts, how its weights are sliced when channels go, and its tf_keras
twin. The analysis (`graph`), `compression_report`, `add_gates`,
`slim_model` and the export ask the registry; they never test layer
classes themselves.
"""

import dataclasses

import keras
import numpy as np

# How an output channel reads its inputs.
COUPLED = "coupled"  # output channel k reads input channel sources[i][k] only
MIXING = "mixing"  # every output channel reads every input channel (a kernel)
OPAQUE = "opaque"  # unknown: nothing can be said, nothing can be cut


@dataclasses.dataclass
class Rule:
    """The channel rule of one layer call.

    Attributes:
        kind: `COUPLED`, `MIXING` or `OPAQUE`.
        sources: for `COUPLED`: one int array per input giving, for each
            output channel, the input channel it reads (-1: none).
        pad_sensitive: zero padding (or a transposed conv's overlap) makes a
            constant but nonzero input channel vary over the positions.
    """

    kind: str
    sources: list = None
    pad_sensitive: bool = False


OPAQUE_RULE = Rule(OPAQUE)


def identity_sources(node):
    """`COUPLED` sources of a one-input layer that keeps its channels, or None."""
    if len(node.in_shapes) != 1 or node.in_shapes[0][-1] != node.out_shape[-1]:
        return None
    return [np.arange(node.out_shape[-1])]


_PROBE = np.linspace(-3.0, 3.0, 13, dtype="float32")
# `x`, `2.5 x`, `0 x` and `-x` in one batch: one call of the activation (on
# JAX, one compilation per activation rather than one per probe and op).
_PROBES = np.stack([_PROBE, 2.5 * _PROBE, 0.0 * _PROBE, -_PROBE])


def scaling_of(fn):
    """How `fn` commutes with a scale: `"linear"`, `"positive"` or None.

    `"positive"`: `f(a x) = a f(x)` for `a >= 0` only (ReLU, leaky ReLU).
    None as `fn` is the identity.
    """
    if fn is None:
        return "linear"
    fx, f_scaled, f_zero, f_negated = keras.ops.convert_to_numpy(
        fn(keras.ops.convert_to_tensor(_PROBES))
    )

    def close(a, b):
        return np.allclose(a, b, rtol=1e-6, atol=1e-6)

    if not (close(f_scaled, 2.5 * fx) and close(f_zero, 0.0)):
        return None
    return "linear" if close(f_negated, -fx) else "positive"


def keeps_zero(fn):
    """Whether `fn` maps 0 to 0."""
    value = keras.ops.convert_to_numpy(fn(keras.ops.zeros((1, 1))))
    return bool(np.all(value == 0))


def passes(scaling, positive):
    """Whether a scale (all >= 0 when `positive`) passes a `scaling` kind."""
    return scaling == "linear" or (scaling == "positive" and positive)


class LayerHandler:
    """What keras_vib knows about one kind of layer.

    The base class describes a layer keras_vib knows nothing about: nothing
    is cut through it, no scale passes it, and it is copied as it is into
    the gated and the slim model. Subclass it (or use one of the ready-made
    handlers of `keras_vib.handlers`) and register it with
    `keras_vib.register_layer` to teach keras_vib a layer kind of your own.

    Every method receives the graph node of one call of the layer:
    `node.layer` (the layer or operation), `node.in_shapes` and
    `node.out_shape` (static shapes), `node.keras_node` (the Keras node, with
    the call's arguments) and, once the rule is known, `node.sources`.
    """

    # -- the channel rule ------------------------------------------------

    def rule(self, node) -> Rule:
        """How the output channels of this call depend on its input channels."""
        return OPAQUE_RULE

    def output_zero(self, node, zeros):
        """Which output channels are identically zero (a `COUPLED` call).

        Args:
            node: the graph node.
            zeros: one boolean array per input: whether the input channel
                each output channel reads (`node.sources`) is zero.
        """
        return np.zeros(node.out_shape[-1], bool)

    def gate(self, node):
        """The `VIBGate` this call applies to its outputs, or None."""
        return None

    def blocked_reason(self, layer):
        """Why channels cannot be cut through this layer (for messages)."""
        return (
            "keras_vib does not know how it maps its input channels to its "
            "outputs (register a handler with keras_vib.register_layer)"
        )

    # -- how a per-channel scale passes ------------------------------------

    def scaling(self, node):
        """How a per-channel scale `s` of the inputs passes to the output.

        `"linear"`: `f(s x) = s f(x)` for any `s` (per channel); `"positive"`:
        only for `s >= 0` (ReLU, max-pool); None: it does not pass.
        """
        return None

    def absorbs_input_scale(self, node):
        """Whether the slim layer takes a per-channel input scale into its weights."""
        return False

    def output_scaling(self, node):
        """Whether the slim layer can take a per-channel output scale.

        `"linear"`, `"positive"` (only a scale >= 0, because of a ReLU-like
        activation) or None.
        """
        return None

    def combine_scales(self, node, scales):
        """The output scale given the input scales gathered per output channel."""
        return scales[0]

    # -- add_gates -------------------------------------------------------

    def prunable(self, node):
        """Whether `add_gates` gates this layer's output units (a kernel layer)."""
        return False

    def follower(self, node):
        """Whether a gate on its input channels may move after it (per-channel map)."""
        return False

    def ties(self, node):
        """Whether its inputs' channels are one group (a residual `Add`)."""
        return False

    # -- accounting ------------------------------------------------------

    def counts(self, node, tensors):
        """`(kept, total, flops, total_flops)` of its kernels, or None.

        Kernel entries kept and in all, and multiply-accumulates per example
        kept and in all, given the `present` channels of `tensors`. By
        default an opaque layer's kernels (weights of rank >= 2) count as
        kept, with no FLOPs; a channel-wise layer has no kernel.
        """
        weights = getattr(node.layer, "trainable_weights", [])
        kernels = [w for w in weights if len(w.shape) >= 2]
        if node.kind != OPAQUE or not kernels:  # an unknown layer's kernels
            return None
        total = int(sum(np.prod(w.shape) for w in kernels))
        return total, total, 0, 0

    # -- slimming --------------------------------------------------------

    def slim(self, ctx, node):
        """Emits the slim version of this call (see `keras_vib.slim`)."""
        ctx.copy(node)

    # -- export ----------------------------------------------------------

    def twin(self, layer, tf_keras):
        """The tf_keras (Keras 2) twin of a slim layer, for QAT."""
        raise ValueError(
            f"Cannot build the tf_keras twin of layer {layer.name!r} of class "
            f"{type(layer).__name__}: its handler has no tf_keras twin."
        )


class PassThrough(LayerHandler):
    """A `COUPLED` kind that moves values without changing them.

    A zero channel stays zero and any per-channel scale passes (Flatten,
    Reshape, a gate's selection of channels).
    """

    def output_zero(self, node, zeros):
        return zeros[0]

    def scaling(self, node):
        return "linear"


def same_scales(node, scales):
    """The one scale all inputs of a sum carry (they must agree)."""
    for s in scales[1:]:
        if not np.allclose(s, scales[0]):
            raise ValueError(
                f"Cannot slim through {node.layer.name!r}: its inputs carry "
                "different gate scales."
            )
    return scales[0]


def stock_twin(layer, tf_keras, names=(), **kwargs):
    """The tf_keras layer of `layer`'s class name with the config entries
    `names` (those both Keras versions share) and `kwargs`."""
    cls = getattr(tf_keras.layers, type(layer).__name__, None)
    if cls is None:
        return LayerHandler().twin(layer, tf_keras)
    config = layer.get_config()
    kwargs.update({k: config[k] for k in names if k in config})
    return cls(name=layer.name, trainable=layer.trainable, **kwargs)


_REGISTRY = {}
_OPAQUE = LayerHandler()


def register_layer(layer_class: type, handler: LayerHandler) -> None:
    """Teaches keras_vib a layer kind: how to gate through and slim it.

    The handler owns everything keras_vib knows about the kind: its channel
    rule, how a gate's scale folds through it, its weight counts and
    slicing. Layers of that exact class (or of a subclass that does not
    override `call`) use it from then on. Registering a class again
    replaces its handler.

    Args:
        layer_class: a `keras.layers.Layer` subclass (or `keras.Operation`).
        handler: a `keras_vib.handlers.LayerHandler` instance, e.g.
            `keras_vib.handlers.Channelwise()` for a layer that acts on each
            channel on its own.

    Example:

    >>> @keras.saving.register_keras_serializable()
    ... class Scale(keras.layers.Layer):  # x * w, one w per channel
    ...     def build(self, shape):
    ...         self.w = self.add_weight(shape=(shape[-1],))
    ...     def call(self, x):
    ...         return x * self.w
    >>> keras_vib.register_layer(Scale, keras_vib.handlers.Channelwise())
    """
    if not isinstance(layer_class, type):
        raise ValueError(
            "Expected `layer_class` to be a class. "
            f"Received: layer_class={layer_class!r}"
        )
    if not isinstance(handler, LayerHandler):
        raise ValueError(
            "Expected `handler` to be a keras_vib.handlers.LayerHandler "
            f"instance. Received: handler={handler!r}"
        )
    _REGISTRY[layer_class] = handler


def handler_for(layer) -> LayerHandler:
    """The handler of a layer (the opaque one when none is registered)."""
    cls = type(layer)
    if cls in _REGISTRY:
        return _REGISTRY[cls]
    for base in cls.__mro__[1:]:
        if base in _REGISTRY:
            # A subclass keeps its base's handler only if it computes the same.
            if getattr(cls, "call", None) is getattr(base, "call", None):
                return _REGISTRY[base]
            break
    return _OPAQUE


def is_registered(layer) -> bool:
    """Whether keras_vib has a handler (other than the opaque one) for `layer`."""
    return handler_for(layer) is not _OPAQUE
