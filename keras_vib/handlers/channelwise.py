"""Layers that act on each channel on its own: activations, batch norm,
pooling, dropout, padding... and the normalisations that do not."""

import keras
import numpy as np

from keras_vib import _keras
from keras_vib.handlers.base import (
    ALL,
    COUPLED,
    NEVER,
    OPAQUE,
    OPAQUE_RULE,
    LayerHandler,
    Rule,
    identity_sources,
    keeps_zero,
    scaling_of,
    stock_twin,
)
from keras_vib.handlers.kernels import FLOAT, keras_vib_bn_weights, numpy

PROBE = "probe"


class Channelwise(LayerHandler):
    """A layer that maps each channel on its own, keeping the channels.

    Output channel `j` depends on input channel `j` only (any spatial
    rearrangement is fine: pooling, padding, upsampling). Its weights, if
    any, hold one entry per channel on their last axis (a PReLU's slopes,
    a per-channel scale) and are sliced with the channels. The slim layer is
    rebuilt from the layer's config.

    Args:
        keeps_zero: whether a zero channel stays zero (True, False, or
            `"probe"`: call `function(layer)` on zeros to find out).
        scaling: how a per-channel scale `s` of the input passes to the
            output: `"linear"` (`f(s x) = s f(x)`: a per-channel scale, an
            average pool), `"positive"` (only for `s >= 0`: ReLU, max-pool),
            None (it does not: sigmoid, batch norm), or `"probe"`.
        follower: whether `add_gates` may put a kernel layer's gate after
            it (true of activations and batch norms that directly follow a
            kernel layer).
        pads: whether it zero-pads (a constant channel then varies).
        function: for `"probe"`: a function `layer -> callable` to probe
            (the layer itself by default).
        twin_args: config entries passed to the tf_keras layer of the same
            class name, for `keras_vib.export.quantization_aware`.

    Example:

    >>> keras_vib.register_layer(MyScale, keras_vib.handlers.Channelwise())
    """

    def __init__(
        self,
        keeps_zero=True,
        scaling="linear",
        follower=True,
        pads=False,
        function=None,
        twin_args=None,
    ):
        self.keeps_zero = keeps_zero
        self.scaling_kind = scaling
        self.is_follower = follower
        self.pads = pads
        self.function = function or (lambda layer: layer)
        self.twin_args = twin_args

    def rule(self, node):
        sources = identity_sources(node)
        if sources is None:
            return OPAQUE_RULE
        function = self.function(node.layer)
        keeps, scaling = self.keeps_zero, self.scaling_kind
        if keeps == PROBE:
            keeps = keeps_zero(function)
        if scaling == PROBE:
            scaling = scaling_of(function)
        return Rule(
            COUPLED,
            sources,
            pad_sensitive=self.pads,
            zero=ALL if keeps else NEVER,
            scaling=scaling,
            follower=self.is_follower,
        )

    def slim(self, node, ctx):
        layer = node.layer
        if not layer.weights:  # nothing to slice: called again as it was
            ctx.recall(node)
            return
        t_in, t_out = node.inputs[0], node.outputs[0]
        present = ctx.present(t_out)
        ctx.set_scale(t_out, ctx.scale_of(t_in))
        config = layer.get_config()
        config["name"] = ctx.name(layer.name, original=True)
        new = type(layer).from_config(config)
        weights = [numpy(w)[..., present] for w in layer.weights] or None
        ctx.sym[t_out] = ctx.emit(new, weights, ctx.sym[t_in])

    def twin(self, node, tf_keras):
        if self.twin_args is None:
            return super().twin(node, tf_keras)
        return stock_twin(node.layer, tf_keras, self.twin_args)


class Activation(Channelwise):
    """`keras.layers.Activation` (softmax and log-softmax mix channels)."""

    def __init__(self):
        super().__init__(
            keeps_zero=PROBE,
            scaling=PROBE,
            function=lambda layer: layer.activation,
            twin_args=("activation",),
        )

    def rule(self, node):
        name = getattr(node.layer.activation, "__name__", "")
        if name in ("softmax", "log_softmax"):
            return OPAQUE_RULE
        return super().rule(node)


class ReLU(Channelwise):
    """`ReLU` and `LeakyReLU` (Keras 3 and tf_keras name arguments apart)."""

    def __init__(self):
        super().__init__(keeps_zero=PROBE, scaling=PROBE)

    def twin(self, node, tf_keras):
        layer = node.layer
        config = layer.get_config()
        if isinstance(layer, keras.layers.LeakyReLU):
            return tf_keras.layers.LeakyReLU(
                alpha=config["negative_slope"], name=layer.name
            )
        return tf_keras.layers.ReLU(
            max_value=config["max_value"],
            negative_slope=config["negative_slope"],
            threshold=config["threshold"],
            name=layer.name,
        )


class Rescaling(Channelwise):
    """`keras.layers.Rescaling` with scalar `scale` and `offset`."""

    def __init__(self):
        super().__init__(keeps_zero=PROBE, scaling=PROBE, follower=False)

    def rule(self, node):
        config = node.layer.get_config()
        if any(np.size(config[k]) != 1 for k in ("scale", "offset")):
            return OPAQUE_RULE
        return super().rule(node)


class BatchNorm(LayerHandler):
    """`BatchNormalization` on the last axis: a per-channel affine map.

    It takes a gate's scale from either side into `gamma` and `beta`.
    """

    def rule(self, node):
        layer = node.layer
        sources = identity_sources(node)
        if sources is None or layer.axis not in (-1, len(node.out_shape) - 1):
            return OPAQUE_RULE
        return Rule(
            COUPLED,
            sources,
            zero=NEVER,
            absorbs_input_scale=True,
            output_scaling="linear",
            follower=True,
        )

    def slim(self, node, ctx):
        layer = node.layer
        t_in, t_out = node.inputs[0], node.outputs[0]
        present = ctx.present(t_out)
        n = len(present)
        gamma, beta, mean, var = (w[present] for w in keras_vib_bn_weights(layer, n))
        scale, center = layer.scale, layer.center
        s_in = ctx.scale_of(t_in)[present]
        if not np.all(s_in == 1.0):
            # gamma * (s x - m) / sd + beta == (gamma s) (x - 0) / sd + beta'
            sd = np.sqrt(var + layer.epsilon)
            beta = beta - gamma * mean / sd
            gamma = gamma * s_in
            mean = np.zeros_like(mean)
            scale = center = True
        s_out = ctx.output_scale(node)
        if s_out is not None:
            gamma, beta = gamma * s_out, beta * s_out
            scale = True
        config = layer.get_config()
        config.update(
            axis=-1,
            name=ctx.name(layer.name, original=True),
            scale=scale,
            center=center,
        )
        weights = ([gamma] if scale else []) + ([beta] if center else [])
        weights = [np.asarray(w, FLOAT) for w in weights + [mean, var]]
        ctx.output(node, type(layer).from_config(config), weights)

    def twin(self, node, tf_keras):
        names = ("axis", "momentum", "epsilon", "center", "scale")
        return stock_twin(node.layer, tf_keras, names)


def scale_layer(scale, name, dtype):
    """The layer `slim_model` puts where a gate's per-channel scale `s` has
    nowhere to fold: a `BatchNormalization` computing `s * x` exactly.

    Returns:
        `(layer, weights)`: the layer (not built) and its weights, float64.
    """
    eps = 1e-3
    # Not trainable: Keras then runs it in inference mode, so that fitting
    # the slim model does not turn the fixed scale into a batch norm.
    layer = keras.layers.BatchNormalization(
        epsilon=eps, name=name, dtype=dtype, trainable=False
    )
    n = len(scale)
    weights = [
        np.asarray(scale, FLOAT),
        np.zeros(n, FLOAT),
        np.zeros(n, FLOAT),
        np.full(n, 1.0 - eps, FLOAT),
    ]
    return layer, weights


class Normalizing(LayerHandler):
    """A layer that normalises over its channels (LayerNormalization...).

    Every output channel depends on all input channels through the
    statistics, so no channel can go: the layer is kept whole.
    """

    def rule(self, node):
        return Rule(
            OPAQUE,
            reason="it normalises over its channels, so removing one would "
            "change the others",
        )


def register_all(register):
    L = keras.layers

    def nd(name, dims=(1, 2, 3)):
        return [getattr(L, f"{name}{d}D") for d in dims]

    def each(classes, handler):
        for cls in classes:
            register(cls, handler)

    each([L.BatchNormalization], BatchNorm())
    each([L.Activation], Activation())
    each([L.ReLU, L.LeakyReLU], ReLU())
    register(L.PReLU, Channelwise(scaling="positive", twin_args=("shared_axes",)))
    register(L.ELU, Channelwise(scaling=None, twin_args=()))
    register(L.Rescaling, Rescaling())
    identity = Channelwise(follower=False, twin_args=())
    dropout = Channelwise(follower=False, twin_args=("rate", "noise_shape", "seed"))
    spatial = Channelwise(follower=False, twin_args=("rate",))
    each([L.Identity, L.GaussianDropout, L.GaussianNoise, L.AlphaDropout], identity)
    register(L.Dropout, dropout)
    each([L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D], spatial)
    pool_args = ("pool_size", "strides", "padding")
    each(
        nd("MaxPooling"),
        Channelwise(scaling="positive", follower=False, twin_args=pool_args),
    )
    each(nd("AveragePooling"), Channelwise(follower=False, twin_args=pool_args))
    global_args = ("keepdims",)
    each(
        nd("GlobalMaxPooling"),
        Channelwise(scaling="positive", follower=False, twin_args=global_args),
    )
    each(nd("GlobalAveragePooling"), Channelwise(follower=False, twin_args=global_args))
    each(nd("Cropping"), Channelwise(follower=False, twin_args=("cropping",)))
    each(
        nd("UpSampling"),
        Channelwise(follower=False, twin_args=("size", "interpolation")),
    )
    each(
        nd("ZeroPadding"),
        Channelwise(follower=False, pads=True, twin_args=("padding",)),
    )
    norms = ["LayerNormalization", "GroupNormalization", "UnitNormalization"]
    norms.append("RMSNormalization")  # Keras >= 3.9
    each([getattr(L, n) for n in norms if hasattr(L, n)], Normalizing())
    # keras.applications' ConvNeXt blocks (LayerScale, StochasticDepth).
    each(_keras.application_layers()["channelwise"], Channelwise())
