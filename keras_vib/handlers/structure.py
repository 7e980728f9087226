"""Layers that move channels around: Flatten, Reshape, merges, Concatenate,
and keras_vib's `SelectFeatures`."""

import functools

import keras
import numpy as np

from keras_vib import _keras
from keras_vib.handlers.base import (
    ALL,
    ANY,
    COUPLED,
    OPAQUE_RULE,
    LayerHandler,
    PassThrough,
    Rule,
    stock_twin,
)
from keras_vib.layers import SelectFeatures


def broadcast_sources(in_shapes, channels):
    """Sources of an elementwise merge: same channels, or one broadcast."""
    sources = []
    for shape in in_shapes:
        if shape[-1] == channels:
            sources.append(np.arange(channels))
        elif shape[-1] == 1:
            sources.append(np.zeros(channels, int))
        else:
            return None
    return sources


class Flatten(PassThrough):
    """`Flatten` of a channels-last tensor: feature `p * C + c` reads channel `c`.

    A flattened feature can go on its own (the slim model then selects the
    kept features after the Flatten).
    """

    def rule(self, node):
        channels = node.in_shapes[0][-1]
        width = node.out_shape[-1]
        if width is None or width % channels:
            return OPAQUE_RULE
        sources = [np.tile(np.arange(channels), width // channels)]
        return self.coupled(sources, selectable=True)

    def slim(self, node, ctx):
        layer = node.layer
        t_in, t_out = node.inputs[0], node.outputs[0]
        out_present = ctx.present(t_out)
        src = ctx.rule(node).sources[0]
        ctx.set_scale(t_out, ctx.scale_of(t_in)[src])
        config = layer.get_config()
        config["name"] = ctx.name(layer.name, original=True)
        out = ctx.emit(type(layer).from_config(config), None, ctx.sym[t_in])
        # The flattened features of the kept channels, less those dropped
        # one by one (an input gate after a Flatten).
        flat = ctx.present(t_in)[src]
        if not np.array_equal(flat, out_present):
            select = SelectFeatures(
                np.flatnonzero(out_present[flat]),
                name=ctx.name(f"{layer.name}_select"),
            )
            out = ctx.emit(select, None, out)
        ctx.sym[t_out] = out

    def twin(self, node, tf_keras):
        return stock_twin(node.layer, tf_keras)


class Reshape(PassThrough):
    """`Reshape` that keeps the last axis."""

    def rule(self, node):
        if node.in_shapes[0][-1] != node.out_shape[-1]:
            return OPAQUE_RULE
        return self.coupled([np.arange(node.out_shape[-1])])

    def slim(self, node, ctx):
        layer = node.layer
        t_in, t_out = node.inputs[0], node.outputs[0]
        ctx.set_scale(t_out, ctx.scale_of(t_in))
        config = layer.get_config()
        config["name"] = ctx.name(layer.name, original=True)
        kept = int(ctx.present(t_out).sum())
        config["target_shape"] = tuple(config["target_shape"][:-1]) + (kept,)
        new = type(layer).from_config(config)
        ctx.sym[t_out] = ctx.emit(new, None, ctx.sym[t_in])

    def twin(self, node, tf_keras):
        layer = node.layer
        return stock_twin(layer, tf_keras, target_shape=tuple(layer.target_shape))


class Merge(LayerHandler):
    """Elementwise merges of same-channel tensors (`Add`, `Multiply`...).

    Args:
        product: a product (`Multiply`): an output channel is zero when any
            factor's is, and a scale on one factor passes to the product.
            Otherwise (`Add`, `Subtract`, `Average`, `Maximum`, `Minimum`) it
            is zero only when every input's is, no scale passes, and the
            inputs' channels are one group for `add_gates`.
    """

    def __init__(self, product=False):
        self.product = product

    def rule(self, node):
        if len(node.in_shapes) < 2:
            return OPAQUE_RULE
        sources = broadcast_sources(node.in_shapes, node.out_shape[-1])
        if not sources:
            return OPAQUE_RULE
        if self.product:
            return Rule(COUPLED, sources, zero=ANY, scaling="linear")
        return Rule(COUPLED, sources, zero=ALL, ties=True)

    def slim(self, node, ctx):
        ctx.recall(node)

    def twin(self, node, tf_keras):
        return stock_twin(node.layer, tf_keras)


class Concatenate(LayerHandler):
    """`Concatenate` on the last axis: each output channel from one input."""

    def rule(self, node):
        layer = node.layer
        if layer.axis not in (-1, len(node.out_shape) - 1):
            return OPAQUE_RULE
        sources, offset = [], 0
        for shape in node.in_shapes:
            src = np.full(node.out_shape[-1], -1)
            src[offset : offset + shape[-1]] = np.arange(shape[-1])
            sources.append(src)
            offset += shape[-1]
        return Rule(COUPLED, sources, zero=ANY, scaling="linear")

    def slim(self, node, ctx):
        layer = node.layer
        live = [t for t in node.inputs if ctx.sym.get(t) is not None]
        t_out = node.outputs[0]
        ctx.set_scale(t_out, ctx.combined_scale(node))
        if len(live) == 1:
            ctx.sym[t_out] = ctx.sym[live[0]]
            return
        config = layer.get_config()
        config["name"] = ctx.name(layer.name, original=True)
        new = type(layer).from_config(config)
        ctx.sym[t_out] = ctx.emit(new, None, [ctx.sym[t] for t in live])

    def twin(self, node, tf_keras):
        return stock_twin(node.layer, tf_keras, ("axis",))


@functools.cache
def select_features_twin(tf_keras):
    """The tf_keras class twin of `SelectFeatures`, defined once, on demand.

    Registered with tf_keras (package keras_vib) so that tfmot can clone and
    wrap it; it gathers the kept indices of the last axis like the original.
    """
    import tensorflow as tf

    @tf_keras.utils.register_keras_serializable(package="keras_vib")
    class SelectFeatures(tf_keras.layers.Layer):
        def __init__(self, indices, **kwargs):
            super().__init__(**kwargs)
            self.indices = [int(i) for i in indices]

        def call(self, inputs):
            return tf.gather(inputs, self.indices, axis=-1)

        def compute_output_shape(self, input_shape):
            shape = tf.TensorShape(input_shape)
            return shape[:-1].concatenate([len(self.indices)])

        def get_config(self):
            config = super().get_config()
            config["indices"] = list(self.indices)
            return config

    return SelectFeatures


class Select(PassThrough):
    """keras_vib's `SelectFeatures`: output `k` reads input `indices[k]`."""

    def rule(self, node):
        return self.coupled([np.asarray(node.layer.indices)])

    def slim(self, node, ctx):
        layer = node.layer
        t_in, t_out = node.inputs[0], node.outputs[0]
        ctx.set_scale(t_out, ctx.scale_of(t_in)[ctx.rule(node).sources[0]])
        in_present, out_present = ctx.present(t_in), ctx.present(t_out)
        position = np.cumsum(in_present) - 1  # index among the kept inputs
        indices = position[np.asarray(layer.indices)[out_present]]
        if np.array_equal(indices, np.arange(int(in_present.sum()))):
            ctx.sym[t_out] = ctx.sym[t_in]
            return
        new = SelectFeatures(indices, name=ctx.name(layer.name, original=True))
        ctx.sym[t_out] = ctx.emit(new, None, ctx.sym[t_in])

    def twin(self, node, tf_keras):
        layer = node.layer
        return select_features_twin(tf_keras)(layer.indices, name=layer.name)


def register_all(register):
    L = keras.layers
    register(L.Flatten, Flatten())
    register(L.Reshape, Reshape())
    for cls in (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum):
        register(cls, Merge())
    register(L.Multiply, Merge(product=True))
    register(L.Concatenate, Concatenate())
    register(SelectFeatures, Select())
    # keras.applications' InceptionResNetV2: x + scale * r.
    for cls in _keras.application_layers()["scaled_sum"]:
        register(cls, Merge())
