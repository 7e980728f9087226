"""The layer-handler base class and the registry that maps layer kinds to it.

A handler holds everything keras_vib knows about one kind of layer (or of
raw `keras.ops` operation): how its output channels depend on its input
channels, how a gate's per-channel scale folds through it, its kernel and
FLOP counts, how its weights are sliced when channels go, and its tf_keras
twin. The analysis (`graph`), `compression_report`, `add_gates`,
`slim_model` and the export ask the registry; they never test layer
classes themselves.
"""

import contextlib
import dataclasses
import inspect
import math
import sys
import weakref

import keras
import numpy as np

from keras_vib import _keras

# How an output channel reads its inputs.
COUPLED = "coupled"  # output channel k reads input channel sources[i][k] only
MIXING = "mixing"  # every output channel reads every input channel (a kernel)
OPAQUE = "opaque"  # unknown: nothing can be said, nothing can be cut

# `Rule.zero`: which zero input channels make an output channel zero.
ALL = "all"  # when every input's is zero (a sum; the one input of a map)
ANY = "any"  # when any input's is (a product, a concatenation)
NEVER = "never"  # never (a bias, an activation with f(0) != 0)

_UNKNOWN = (
    "keras_vib does not know how it maps its input channels to its outputs "
    "(register a handler with keras_vib.register_layer)"
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """Everything the analysis needs to know about one layer call.

    Attributes:
        kind: `COUPLED`, `MIXING` or `OPAQUE`.
        sources: for `COUPLED`: one int array per input giving, for each
            output channel, the input channel it reads (-1: none).
        pad_sensitive: zero padding (or a transposed conv's overlap) makes a
            constant but nonzero input channel vary over the positions.
        zero: which zero input channels make an output channel zero (for
            `COUPLED`): `ALL`, `ANY`, `NEVER`, or a tuple of the indices of
            the inputs any of which does.
        scaling: how a per-channel scale `s` of the inputs passes to the
            output (`COUPLED`): `"linear"` (`f(s x) = s f(x)` for any `s`;
            with several inputs the scales multiply), `"positive"` (only for
            `s >= 0`: ReLU, max-pool) or None (it does not; with several
            inputs they must then carry the same scale: a sum).
        absorbs_input_scale: the slim layer takes a per-channel input scale
            into its weights (a kernel, a batch norm).
        output_scaling: the slim layer can take a per-channel output scale:
            `"linear"`, `"positive"` (a ReLU-like activation) or None.
        prunable: `add_gates` gates its output units (a kernel layer).
        follower: a gate on its input channels may move after it (a
            per-channel map right after a kernel layer: activation, batch
            norm).
        ties: its inputs' channels are one group (a residual `Add`).
        selectable: an output channel may go on its own, without the input
            channel it reads (a `Flatten`: the slim model selects features).
        inner_gate: the call's gate (`LayerHandler.gate`) acts on units
            inside it (attention heads), not on its output channels: the
            analysis does not mask the outputs with it (once every unit is
            closed they are constant), and `counts` and `slim` read its
            mask (`Kept.units`, `SlimContext.units`).
        reason: why nothing is cut through it (`OPAQUE`), for messages.
    """

    kind: str
    sources: list = None
    pad_sensitive: bool = False
    zero: object = ALL
    scaling: str = None
    absorbs_input_scale: bool = False
    output_scaling: str = None
    prunable: bool = False
    follower: bool = False
    ties: bool = False
    selectable: bool = False
    inner_gate: bool = False
    reason: str = _UNKNOWN


OPAQUE_RULE = Rule(OPAQUE)


def output_zero(rule, zeros):
    """Which output channels are zero, from `zeros`, one boolean array per
    input: whether the input channel each output channel reads is zero."""
    if rule.zero == NEVER or (isinstance(rule.zero, tuple) and not rule.zero):
        return np.zeros_like(zeros[0])
    if rule.zero == ALL:
        return np.logical_and.reduce(zeros)
    picked = zeros if rule.zero == ANY else [zeros[i] for i in rule.zero]
    return np.logical_or.reduce(picked)


def combine_scales(rule, scales, name):
    """The output scale of a `COUPLED` call from its inputs' scales (each
    gathered per output channel): their product where a scale passes, else
    the one scale they must all carry (a sum)."""
    if rule.scaling is not None:
        return np.prod(scales, axis=0)
    for s in scales[1:]:
        if not np.allclose(s, scales[0]):
            raise ValueError(
                f"Cannot slim through {name!r}: its inputs carry different gate scales."
            )
    return scales[0]


def positions(shape):
    """The positions of one example of a tensor of `shape` (the axes between
    the batch and the channels): their product, or None where one is
    unknown (an input of any length without a reference size)."""
    inner = shape[1:-1]
    if any(d is None for d in inner):
        return None
    return math.prod(inner)


def counted(kept, total, at):
    """`counts`' answer for kernel entries applied at `at` positions per
    example (None: unknown, so are the FLOPs)."""
    if at is None:
        return kept, total, None, None
    return kept, total, kept * at, total * at


def identity_sources(node):
    """`COUPLED` sources of a one-input layer that keeps its channels, or None."""
    if len(node.in_shapes) != 1 or node.in_shapes[0][-1] != node.out_shape[-1]:
        return None
    return [np.arange(node.out_shape[-1])]


_PROBE = np.linspace(-3.0, 3.0, 13, dtype="float32")
# `x`, `2.5 x`, `0 x` and `-x` in one batch: one call of the activation (on
# JAX, one compilation per activation rather than one per probe and op).
_PROBES = np.stack([_PROBE, 2.5 * _PROBE, 0.0 * _PROBE, -_PROBE])
_PROBED = {}  # function -> (scaling, keeps zero), for hashable functions


def _probe(fn):
    try:
        return _PROBED[fn]
    except (KeyError, TypeError):
        pass
    fx, f_scaled, f_zero, f_negated = keras.ops.convert_to_numpy(
        fn(keras.ops.convert_to_tensor(_PROBES))
    )

    def close(a, b):
        return np.allclose(a, b, rtol=1e-6, atol=1e-6)

    keeps = bool(np.all(f_zero == 0))
    scaling = None
    if close(f_scaled, 2.5 * fx) and close(f_zero, 0.0):
        scaling = "linear" if close(f_negated, -fx) else "positive"
    try:
        _PROBED[fn] = scaling, keeps
    except TypeError:
        pass
    return scaling, keeps


def scaling_of(fn):
    """How `fn` commutes with a scale: `"linear"`, `"positive"` or None.

    `"positive"`: `f(a x) = a f(x)` for `a >= 0` only (ReLU, leaky ReLU).
    None as `fn` is the identity.
    """
    return "linear" if fn is None else _probe(fn)[0]


def keeps_zero(fn):
    """Whether `fn` maps 0 to 0."""
    return _probe(fn)[1]


def passes(scaling, positive):
    """Whether a scale (all >= 0 when `positive`) passes a `scaling` kind."""
    return scaling == "linear" or (scaling == "positive" and positive)


class LayerHandler:
    """What keras_vib knows about one kind of layer: five hooks.

    The base class describes a layer keras_vib knows nothing about: nothing
    is cut through it, no scale passes it, and it is copied as it is into
    the gated and the slim model. Subclass it (or use a ready-made handler
    of `keras_vib.handlers`) and register it with `keras_vib.register_layer`
    to teach keras_vib a layer kind of your own (README, "Your own layers").

    Every hook receives first the graph node of one call of the layer
    (`keras_vib.graph.Node`): `node.layer` (the layer or operation),
    `node.in_shapes` and `node.out_shape` (static shapes), `node.inputs` and
    `node.outputs` (the keys of its tensors). Hooks read the node; none
    writes to it.

    Two optional hooks go beyond one call: `gated`, the copy of a layer
    with units inside it (attention heads) that `add_gates` puts in its
    place; and `inside`, the functional graph of a composite layer (a
    transformer block), which the analysis then walks instead of the call
    (`Composite`).
    """

    # Whether `rule` takes inputs whose last axis is unknown (an attention
    # mask of any length); else such a call is opaque.
    open_inputs = False
    # Whether the slim model leaves the layer out (its output is its input,
    # whatever its rule): keras_vib's own `InputSize`.
    left_out = False

    def rule(self, node) -> Rule:
        """How this call maps channels, and what passes through it.

        Returns:
            A `Rule`, computed once per analysis of the model.
        """
        return OPAQUE_RULE

    def gate(self, node):
        """The `VIBGate` this call applies to its outputs, or None."""
        return None

    def counts(self, node, kept):
        """Kernel entries and multiply-accumulates of this call, or None.

        Args:
            node: the graph node.
            kept: a `Kept`: `kept.inputs` (one boolean array per input,
                over its channels) and `kept.output` (over the channels of
                the first output) say which channels the slim model keeps;
                `kept.rule` is the call's `Rule`.

        Returns:
            `(kept, total, flops, total_flops)`: kernel entries kept and in
            all, and multiply-accumulates per example kept and in all; None
            for a call without kernel. By default the kernels (trainable
            weights of rank >= 2) of an `OPAQUE` call count as kept, with no
            FLOPs.
        """
        weights = getattr(node.layer, "trainable_weights", [])
        kernels = [w for w in weights if len(w.shape) >= 2]
        if kept.rule.kind != OPAQUE or not kernels:
            return None
        total = int(sum(np.prod(w.shape) for w in kernels))
        return total, total, 0, 0

    def slim(self, node, ctx):
        """Emits the slim version of this call through `ctx` (a
        `keras_vib.slim.SlimContext`: see its methods). By default the
        layer is copied with its weights (it must lose no channel)."""
        ctx.copy(node)

    def twin(self, node, tf_keras):
        """The tf_keras (Keras 2) twin of this call's layer (of a slim
        model), for quantization-aware training."""
        raise no_twin(node.layer)

    def gated(self, node, name, **gate_args):
        """A copy of this call's layer, built and with its weights, whose
        inner units (attention heads) are gated, or None (the default:
        `add_gates` gates a layer's output channels instead).

        Args:
            node: the graph node.
            name: the copy's name.
            **gate_args: the gate's arguments (`kl_weight`,
                `mu_initializer`, ...: see `VIBGate`).
        """
        return None

    def inside(self, node):
        """A functional `keras.Model` computing this call from its tensor
        arguments (in the order of `node.inputs`), made of the layer's
        sublayers, or None (the default: the call is one node). The
        analysis walks it in place of the call, so the gated and the slim
        model hold its sublayers instead of the layer."""
        return None


class Composite(LayerHandler):
    """A layer made of other layers and `keras.ops` (a transformer block):
    opened into its sublayers, in the order its `call` uses them.

    `inside` calls the layer's `call` on symbolic inputs like the tensors
    of the call (once per layer and input signature): every sublayer call
    and op becomes a node of a functional graph, which the analysis walks
    like a nested model. The heads and feed-forward units inside are then
    gated and cut like those of a functional model; the gated and the slim
    model hold the sublayers, not the composite layer. A `call` that
    cannot run symbolically (Python branches on tensor values) leaves the
    layer whole (opaque).

    Example:

    >>> keras_vib.register_layer(MyBlock, keras_vib.handlers.Composite())
    """

    def inside(self, node):
        layer = node.layer
        call = node.call
        signature = tuple((tuple(t.shape), str(t.dtype)) for t in call.input_tensors)
        signature += (repr(call.constants()),)
        cached = _OPENED.setdefault(layer, {})
        if signature not in cached:
            cached[signature] = self.trace(layer, call)
        return cached[signature]

    def trace(self, layer, call):
        """The functional model of this call, or None (the layer stays
        whole): by default its `call` on symbolic copies of the call's
        tensors. A layer whose `call` cannot run symbolically overrides it,
        rebuilding the computation from its sublayers (`opened`)."""

        def run(inputs):
            args, kwargs = call.arguments_for(inputs)
            return layer.call(*args, **kwargs)

        return opened(layer, call, run)


_OPENED = weakref.WeakKeyDictionary()  # layer -> {signature: model or None}


def opened(layer, call, build):
    """The functional model of `build(inputs)`, `inputs` symbolic copies of
    the call's tensors, or None where it does not build (not traceable: the
    layer stays one opaque call)."""
    inputs = [
        keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype)
        for t in call.input_tensors
    ]
    try:
        model = keras.Model(inputs, build(inputs), name=f"{layer.name}_inside")
    except Exception:
        return None
    # Every weight must be a sublayer's, called in the graph (a weight the
    # layer reads itself would be shared with the gated copy).
    if {id(w) for w in model.weights} != {id(w) for w in layer.weights}:
        return None
    return model


@dataclasses.dataclass(frozen=True)
class Kept:
    """The channels the slim model keeps around one call (see `counts`).

    `units`: for a call with an inner gate (`Rule.inner_gate`), its kept
    units (boolean, over the gate's units); else None.
    """

    rule: Rule
    inputs: list
    output: np.ndarray
    units: np.ndarray = None


class PassThrough(LayerHandler):
    """A `COUPLED` kind that moves values without changing them (Flatten,
    Reshape, a gate's selection of channels): a zero channel stays zero
    and any per-channel scale passes."""

    def coupled(self, sources, **facts):
        """The `COUPLED` rule of such a call with these `sources`."""
        return Rule(COUPLED, sources, scaling="linear", **facts)


def no_twin(layer):
    """The error for a layer without a tf_keras twin."""
    return ValueError(
        f"Cannot build the tf_keras twin of layer {layer.name!r} of class "
        f"{type(layer).__name__}: its handler has no tf_keras twin."
    )


def stock_twin(layer, tf_keras, names=(), **kwargs):
    """The tf_keras layer of `layer`'s class name with the config entries
    `names` (those both Keras versions share) and `kwargs`."""
    cls = getattr(tf_keras.layers, type(layer).__name__, None)
    if cls is None:
        raise no_twin(layer)
    config = layer.get_config()
    kwargs.update({k: config[k] for k in names if k in config})
    return cls(name=layer.name, trainable=layer.trainable, **kwargs)


_BASE_ARGS = ("name", "trainable", "dtype", "autocast")


def accepted(cls, config):
    """`config` less the entries `cls.__init__` does not name (a config
    that records derived values, which its own `from_config` refuses), or
    None where nothing is left out."""
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return None
    named = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
    kept = {k: v for k, v in config.items() if k in named or k in _BASE_ARGS}
    return kept if len(kept) < len(config) else None


def from_attributes(layer, name=None, **changes):
    """A new layer of `layer`'s class, its constructor given the values of
    the layer's attributes of the same names (`units` or `_units`) and
    `changes`, or None where one is missing or the constructor refuses."""
    kwargs = _keras.init_arguments(layer)
    if kwargs is None:
        return None
    kwargs.update(changes)
    kwargs.update(name=name or layer.name, dtype=layer.dtype_policy)
    kwargs["trainable"] = layer.trainable
    try:
        new = type(layer)(**kwargs)
    except Exception:
        return None
    return _keras.keep_config(new, kwargs)


def remade(layer, name=None, **changes):
    """A new layer (no weights yet) of `layer`'s class with `changes` to
    its constructor arguments: from its config, or where that does not read
    back, from its attributes (`from_attributes`); None where neither
    works."""
    try:
        config = layer.get_config()
    except Exception:
        config = None
    if config is not None:
        config.update(changes)
        if name is not None:
            config["name"] = name
        fewer = accepted(type(layer), config)
        for attempt in (config, fewer):
            if attempt is None:
                continue
            try:
                new = type(layer).from_config(attempt)
            except Exception:
                continue
            return _keras.keep_config(new, attempt)
    return from_attributes(layer, name, **changes)


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


def unregister_layer(layer_class: type) -> None:
    """Forgets the handler registered for `layer_class` (tests, notebooks).

    Its layers are opaque again (or use the handler of a registered base
    class they inherit `call` from).

    Args:
        layer_class: a class given to `register_layer` before.

    Raises:
        ValueError: if no handler is registered for exactly that class.
    """
    if layer_class not in _REGISTRY:
        raise ValueError(
            "Expected a layer class registered with keras_vib.register_layer. "
            f"Received: layer_class={layer_class!r}"
        )
    del _REGISTRY[layer_class]


@contextlib.contextmanager
def registered(layer_class: type, handler: LayerHandler):
    """Registers `handler` for `layer_class` inside a `with` block only.

    The handler registered before (if any) is back afterwards.

    Example:

    >>> with keras_vib.handlers.registered(Scale, Channelwise()):
    ...     gated = keras_vib.add_gates(model)
    """
    previous = _REGISTRY.get(layer_class)
    register_layer(layer_class, handler)
    try:
        yield handler
    finally:
        if previous is None:
            _REGISTRY.pop(layer_class, None)
        else:
            _REGISTRY[layer_class] = previous


# Handlers of other libraries' layers, registered the first time a layer
# of theirs is seen: top-level module name -> a function registering them.
_LAZY = {}


def handler_for(layer) -> LayerHandler:
    """The handler of a layer (the opaque one when none is registered)."""
    cls = type(layer)
    library = cls.__module__.split(".")[0]
    # A library's handlers load with its first layer seen, or once it is
    # imported (keras_vib's wrappers of its layers then find theirs).
    for name in [n for n in _LAZY if n == library or n in sys.modules]:
        _LAZY.pop(name)()
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
