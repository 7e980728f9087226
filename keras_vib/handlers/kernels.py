"""Kernel layers: Dense, Conv, transposed, depthwise and separable convs."""

import math

import keras
import numpy as np

from keras_vib.handlers.base import (
    ALL,
    COUPLED,
    MIXING,
    NEVER,
    OPAQUE,
    OPAQUE_RULE,
    LayerHandler,
    Rule,
    counted,
    positions,
    scaling_of,
    stock_twin,
)

FLOAT = "float64"  # surgery in float64, weights cast back to float32


def numpy(variable):
    return keras.ops.convert_to_numpy(variable).astype(FLOAT)


def _count(mask):
    return int(np.sum(mask))


def _pads(layer):
    """Whether zero padding makes a constant input vary over the output."""
    padding = getattr(layer, "padding", "valid")
    return padding != "valid" and any(k > 1 for k in layer.kernel_size)


class Kernel(LayerHandler):
    """A layer whose every output unit reads every input channel.

    Subclasses say where the kernel is (`inner`), its layout (`to_io`,
    `from_io`: input channels on axis -2, outputs on -1), its window and
    positions (for the counts) and how to build the slim layer.
    """

    twin_args = ()
    prunable = True  # False for a layer gated already (VIBDense)

    def inner(self, layer):
        """The stock layer holding kernel, bias and activation."""
        return layer

    def kernel_rule(self, node, kind=MIXING, **facts):
        """The rule of a kernel call: it takes input and output scales."""
        facts.setdefault("pad_sensitive", self.pad_sensitive(node.layer))
        facts.setdefault("prunable", self.prunable and kind == MIXING)
        scaling = scaling_of(self.activation(node.layer))
        return Rule(kind, absorbs_input_scale=True, output_scaling=scaling, **facts)

    def rule(self, node):
        return self.kernel_rule(node)

    def pad_sensitive(self, layer):
        return False

    def activation(self, layer):
        """The activation applied to the slim layer's output."""
        return self.inner(layer).activation

    def window(self, layer):
        return 1

    def positions(self, node):
        """Positions (per example) at which the kernel is applied (None
        where a size is unknown)."""
        return positions(node.in_shapes[0])

    def counts(self, node, kept):
        cin, cout = kept.inputs[0], kept.output
        window = self.window(node.layer)
        at = self.positions(node)
        k = window * _count(cin) * _count(cout)
        total = window * len(cin) * len(cout)
        return counted(k, total, at)

    def to_io(self, kernel):
        return kernel

    def from_io(self, kernel):
        return kernel

    def bn(self, layer):
        """A batch norm between the kernel and the activation (VIBConv2D)."""
        return None

    def has_bias(self, inner):
        return inner.use_bias

    def new_layer(self, layer, units, use_bias, activation, name):
        inner = self.inner(layer)
        config = inner.get_config()
        config.update(
            name=name,
            use_bias=use_bias,
            activation=activation,
            dtype=layer.dtype_policy,
        )
        config[self.units_arg] = units
        return type(inner).from_config(config)

    units_arg = "filters"

    def slim(self, node, ctx):
        layer = node.layer
        inner = self.inner(layer)
        t_in, t_out = node.inputs[0], node.outputs[0]
        out_present = ctx.present(t_out)
        kernel = self.to_io(numpy(inner.kernel))
        units = kernel.shape[-1]
        has_bias = self.has_bias(inner)
        bias = numpy(inner.bias) if has_bias else np.zeros(units, FLOAT)
        use_bias = has_bias or ctx.folds_constants(node)
        bn = self.bn(layer)
        if bn is None:
            kernel, bias = ctx.slim_kernel(node, kernel, bias)
            bn_weights = None
        else:  # the output scale goes into the batch norm
            kernel, bias = ctx.fold_rows(kernel, bias, t_in)
            kernel, bias = kernel[..., out_present], bias[out_present]
            n = len(out_present)
            bn_weights = [w[out_present] for w in keras_vib_bn_weights(bn, n)]
            s = ctx.output_scale(node)
            if s is not None:
                bn_weights[0] = bn_weights[0] * s
                bn_weights[1] = bn_weights[1] * s
        activation = keras.activations.serialize(self.activation(layer))
        name = ctx.name(layer.name, original=True)
        new = self.new_layer(
            layer,
            int(out_present.sum()),
            use_bias,
            None if bn is not None else activation,
            name,
        )
        kernel = self.from_io(kernel)
        out = ctx.emit(new, [kernel, bias] if use_bias else [kernel], ctx.sym[t_in])
        if bn is not None:
            dtype = layer.dtype_policy
            norm = keras.layers.BatchNormalization(
                epsilon=bn.epsilon, name=ctx.name(f"{layer.name}_bn"), dtype=dtype
            )
            out = ctx.emit(norm, bn_weights, out)
            act = keras.layers.Activation(
                activation, name=ctx.name(f"{layer.name}_act"), dtype=dtype
            )
            out = ctx.emit(act, None, out)
        ctx.sym[t_out] = ctx.finish(node, out)

    def twin(self, node, tf_keras):
        return stock_twin(node.layer, tf_keras, self.twin_args)


def keras_vib_bn_weights(bn, n):
    """`[gamma, beta, moving_mean, moving_variance]` of a batch norm, float64.

    A batch norm without `scale` (`center`) gives ones (zeros) instead.
    """
    gamma = numpy(bn.gamma) if bn.scale else np.ones(n, FLOAT)
    beta = numpy(bn.beta) if bn.center else np.zeros(n, FLOAT)
    return [gamma, beta, numpy(bn.moving_mean), numpy(bn.moving_variance)]


class Dense(Kernel):
    """`keras.layers.Dense` (on the last axis of any rank)."""

    units_arg = "units"
    twin_args = ("units", "activation", "use_bias")


def _dense_equation(layer):
    """Whether an `EinsumDense` is a `Dense` on the last axis (`"btd,df->btf"`,
    `"...d,df->...f"`), its bias (if any) on the output units."""
    config = layer.get_config()
    try:
        inputs, output = config["equation"].replace(" ", "").split("->")
        x, kernel = inputs.split(",")
    except ValueError:
        return False
    if len(kernel) != 2 or not x or not output:
        return False
    d, f = kernel
    return (
        x[-1] == d
        and output == x[:-1] + f
        and d not in output
        and f not in x
        and config.get("bias_axes") in (None, f)
    )


class DenseEinsum(Kernel):
    """An `EinsumDense` that is a `Dense` on the last axis (keras-hub's
    Gemma feed-forward layers, `"btd,df->btf"`); other equations are
    opaque."""

    def rule(self, node):
        if not _dense_equation(node.layer):
            return OPAQUE_RULE
        return self.kernel_rule(node)

    def has_bias(self, inner):
        return inner.bias is not None

    def counts(self, node, kept):
        if kept.rule.kind != OPAQUE:
            return super().counts(node, kept)
        # Any other equation: its kernel, kept; a MAC per combination of
        # the indices it names, the batch's aside.
        layer = node.layer
        entries = math.prod(layer.kernel.shape)
        spec = layer.get_config()["equation"].replace(" ", "")
        inputs, out = spec.split("->")
        x, kernel = inputs.split(",")
        sizes = dict(zip(x, node.in_shapes[0]))
        sizes.update(zip(kernel, layer.kernel.shape))
        letters = set(x + kernel + out) - {x[0]}
        if "." in spec or any(sizes.get(c) is None for c in letters):
            return entries, entries, None, None
        macs = math.prod(sizes[c] for c in letters)
        return entries, entries, macs, macs

    def new_layer(self, layer, units, use_bias, activation, name):
        config = layer.get_config()
        shape = list(config["output_shape"])
        shape[-1] = units
        f = config["equation"].split("->")[0].split(",")[1].strip()[-1]
        config.update(
            name=name,
            output_shape=shape,
            activation=activation,
            bias_axes=f if use_bias else None,
            dtype=layer.dtype_policy,
        )
        return type(layer).from_config(config)

    def twin(self, node, tf_keras):
        return super(Kernel, self).twin(node, tf_keras)


class Conv(Kernel):
    """`Conv1D`, `Conv2D`, `Conv3D` with `groups=1`.

    A grouped conv with one group per channel (`groups == filters == input
    channels`, ConvNeXt's depthwise conv) acts channel by channel: see
    `GroupedConv`. Other grouped convs are opaque.
    """

    twin_args = (
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "dilation_rate",
        "groups",
        "activation",
        "use_bias",
    )

    def pad_sensitive(self, layer):
        layer = self.inner(layer)
        return _pads(layer) or layer.padding == "causal"

    def rule(self, node):
        if self.inner(node.layer).groups != 1:
            return OPAQUE_RULE
        return self.kernel_rule(node)

    def window(self, layer):
        return math.prod(self.inner(layer).kernel_size)

    def positions(self, node):
        return positions(node.out_shape)


class GroupedConv(Conv):
    """A Conv with `groups == filters == input channels`: per channel."""

    def rule(self, node):
        layer = node.layer
        channels = node.in_shapes[0][-1]
        if layer.groups == 1:
            return super().rule(node)
        if not (layer.groups == layer.filters == channels):
            return OPAQUE_RULE
        return self.kernel_rule(
            node,
            COUPLED,
            sources=[np.arange(channels)],
            zero=NEVER if layer.use_bias else ALL,
            follower=True,
        )

    def counts(self, node, kept):
        layer = node.layer
        window = self.window(layer)
        at = self.positions(node)
        if layer.groups == 1:
            return super().counts(node, kept)
        if kept.rule.kind != COUPLED:
            # Other grouped convs are opaque: kept whole, each output
            # channel reading the channels of its group.
            k = window * (len(kept.inputs[0]) // layer.groups) * len(kept.output)
            return counted(k, k, at)
        out = kept.output
        k, total = window * _count(out), window * len(out)
        return counted(k, total, at)

    def slim(self, node, ctx):
        if node.layer.groups == 1:
            return super().slim(node, ctx)
        layer = node.layer
        t_in, t_out = node.inputs[0], node.outputs[0]
        present = ctx.present(t_out)
        kernel = numpy(layer.kernel) * ctx.scale_of(t_in)  # (..., 1, C)
        weights = [kernel[..., present]]
        bias = numpy(layer.bias) if layer.use_bias else None
        s = ctx.output_scale(node)
        if s is not None:
            weights[0] = weights[0] * s
        if bias is not None:
            weights.append(bias[present] * (1.0 if s is None else s))
        kept = int(present.sum())
        config = layer.get_config()
        config.update(name=ctx.name(layer.name, original=True), filters=kept)
        config["groups"] = kept
        ctx.output(node, type(layer).from_config(config), weights)


class ConvTranspose(Conv):
    """`Conv1DTranspose`, `Conv2DTranspose`, `Conv3DTranspose`.

    Their kernel is `(*window, filters, input channels)`; a constant input
    channel does not give a constant output (the windows overlap unevenly),
    so one is never folded away.
    """

    twin_args = (
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "output_padding",
        "dilation_rate",
        "activation",
        "use_bias",
    )

    def pad_sensitive(self, layer):
        flat = all(k == 1 for k in layer.kernel_size)
        return not (flat and all(s == 1 for s in layer.strides))

    def rule(self, node):
        return self.kernel_rule(node)

    def positions(self, node):
        return positions(node.in_shapes[0])

    def to_io(self, kernel):
        return np.swapaxes(kernel, -1, -2)

    def from_io(self, kernel):
        return np.swapaxes(kernel, -1, -2)


class Depthwise(LayerHandler):
    """`DepthwiseConv1D`, `DepthwiseConv2D`: output `k` reads input `k // m`."""

    twin_args = (
        "kernel_size",
        "strides",
        "padding",
        "depth_multiplier",
        "dilation_rate",
        "activation",
        "use_bias",
    )

    def rule(self, node):
        layer = node.layer
        m = layer.depth_multiplier
        return Rule(
            COUPLED,
            [np.arange(node.out_shape[-1]) // m],
            pad_sensitive=_pads(layer),
            zero=NEVER if layer.use_bias else ALL,
            absorbs_input_scale=True,
            output_scaling=scaling_of(layer.activation),
            follower=m == 1,
        )

    def counts(self, node, kept):
        out = kept.output
        window = math.prod(node.layer.kernel_size)
        at = positions(node.out_shape)
        k, total = window * _count(out), window * len(out)
        return counted(k, total, at)

    def slim(self, node, ctx):
        layer = node.layer
        t_in, t_out = node.inputs[0], node.outputs[0]
        in_present, out_present = ctx.present(t_in), ctx.present(t_out)
        kernel = numpy(layer.kernel)  # (..., in, multiplier)
        kernel = kernel * ctx.scale_of(t_in)[:, None]
        kernel = kernel[..., in_present, :]
        s = ctx.output_scale(node)
        if s is not None:
            kernel = kernel * s.reshape(-1, layer.depth_multiplier)
        weights = [kernel]
        if layer.use_bias:
            bias = numpy(layer.bias)[out_present]
            weights.append(bias if s is None else bias * s)
        config = layer.get_config()
        config["name"] = ctx.name(layer.name, original=True)
        ctx.output(node, type(layer).from_config(config), weights)

    def twin(self, node, tf_keras):
        return stock_twin(node.layer, tf_keras, self.twin_args)


class Separable(Kernel):
    """`SeparableConv1D`, `SeparableConv2D`: a depthwise then a pointwise conv.

    Input channel `i` feeds the depthwise channels `i * m ... i * m + m - 1`
    and, through them, every output; output channels are pointwise columns.
    """

    twin_args = ("filters",) + Depthwise.twin_args

    def pad_sensitive(self, layer):
        return _pads(layer)

    def counts(self, node, kept):
        layer = node.layer
        cin, cout = kept.inputs[0], kept.output
        m = layer.depth_multiplier
        window = math.prod(layer.kernel_size)
        at = positions(node.out_shape)
        kin, kout = _count(cin), _count(cout)
        k = window * kin * m + kin * m * kout
        total = window * len(cin) * m + len(cin) * m * len(cout)
        return counted(k, total, at)

    def slim(self, node, ctx):
        layer = node.layer
        t_in, t_out = node.inputs[0], node.outputs[0]
        in_present, out_present = ctx.present(t_in), ctx.present(t_out)
        m = layer.depth_multiplier
        depthwise = numpy(layer.depthwise_kernel)  # (..., in, m)
        pointwise = numpy(layer.pointwise_kernel)  # (1.., in * m, out)
        units = pointwise.shape[-1]
        bias = numpy(layer.bias) if layer.use_bias else np.zeros(units, FLOAT)
        depthwise = depthwise * ctx.scale_of(t_in)[:, None]
        const = ctx.constant(t_in)
        if const is not None and const.any():
            # A dropped constant channel c_i adds c_i * sum(window) per
            # depthwise channel, then goes through the pointwise kernel.
            spatial = tuple(range(depthwise.ndim - 2))
            per_depth = (const[:, None] * depthwise.sum(axis=spatial)).reshape(-1)
            bias = bias + per_depth @ pointwise.reshape(-1, units)
        depthwise = depthwise[..., in_present, :]
        rows = np.repeat(in_present, m)
        pointwise = pointwise[..., rows, :][..., out_present]
        bias = bias[out_present]
        s = ctx.output_scale(node)
        if s is not None:
            pointwise, bias = pointwise * s, bias * s
        use_bias = layer.use_bias or ctx.folds_constants(node)
        config = layer.get_config()
        config.update(
            name=ctx.name(layer.name, original=True),
            filters=int(out_present.sum()),
            use_bias=use_bias,
        )
        weights = [depthwise, pointwise] + ([bias] if use_bias else [])
        ctx.output(node, type(layer).from_config(config), weights)


class Embedding(LayerHandler):
    """`keras.layers.Embedding`: a table with a row per token; its columns
    are the output channels (a gate after it cuts columns). A lookup: no
    multiply-accumulates."""

    open_inputs = True  # token ids: their last axis is the length, any

    def rule(self, node):
        return Rule(MIXING, output_scaling="linear", prunable=True)

    def counts(self, node, kept):
        rows = node.layer.input_dim
        return _count(kept.output) * rows, len(kept.output) * rows, 0, 0

    def slim(self, node, ctx):
        layer = node.layer
        present = ctx.present(node.outputs[0])
        table = numpy(layer.embeddings)[:, present]
        s = ctx.output_scale(node)
        if s is not None:
            table = table * s
        config = layer.get_config()
        config.update(
            output_dim=int(present.sum()),
            name=ctx.name(layer.name, original=True),
            dtype=layer.dtype_policy,
        )
        ctx.output(node, type(layer).from_config(config), [table])

    def twin(self, node, tf_keras):
        return stock_twin(node.layer, tf_keras, ("input_dim", "output_dim"))


def register_all(register):
    L = keras.layers
    register(L.Embedding, Embedding())
    register(L.Dense, Dense())
    register(L.EinsumDense, DenseEinsum())
    for d in (1, 2, 3):
        register(getattr(L, f"Conv{d}D"), GroupedConv())
        register(getattr(L, f"Conv{d}DTranspose"), ConvTranspose())
    for d in (1, 2):
        register(getattr(L, f"DepthwiseConv{d}D"), Depthwise())
        register(getattr(L, f"SeparableConv{d}D"), Separable())
