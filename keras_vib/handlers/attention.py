"""Attention layers: heads (and key/value groups) as units.

`keras.layers.MultiHeadAttention` and `GroupQueryAttention` are one kernel
call each to the analysis (every output channel reads every input
channel); their units are inside: the heads of a `MultiHeadAttention`, the
key/value heads of a `GroupQueryAttention` (each with its query heads).
`add_gates` puts the gated versions in their place (`VIBMultiHeadAttention`,
`VIBGroupQueryAttention`: a gate on the values of each head), and the slim
model has stock attention layers with fewer heads, each layer its own
count.
"""

import dataclasses

import keras
import numpy as np

from keras_vib import _keras
from keras_vib.handlers.base import (
    MIXING,
    OPAQUE,
    LayerHandler,
    Rule,
    positions,
)
from keras_vib.handlers.kernels import FLOAT, numpy
from keras_vib.layers import VIBGroupQueryAttention, VIBMultiHeadAttention

# The gate arguments of the gated layers that are not the attention's.
_GATE_KEYS = (
    "kl_weight",
    "threshold",
    "kl_spatial_scaling",
    "mu_initializer",
    "log_sigma2_initializer",
    "gate_seed",
)


@dataclasses.dataclass(frozen=True)
class _Shape:
    """An attention layer's geometry: `units` key/value heads, each read by
    `repeats` query heads; `key_dim` and `value_dim` per head."""

    units: int
    repeats: int
    key_dim: int
    value_dim: int

    @property
    def query_heads(self):
        return self.units * self.repeats


def _shape(layer):
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return _Shape(layer.num_heads, 1, layer.key_dim, layer.value_dim)
    return _Shape(
        layer.num_key_value_heads,
        layer.num_repeats,
        layer.head_dim,
        layer.head_dim,
    )


def _roles(node):
    """The input indices of `(query, key, value)` in `node.inputs`, or None."""
    call = node.call
    query = call.input_index(0, "query")
    value = call.input_index(1, "value")
    key = call.input_index(2, "key")
    if query is None or value is None:
        return None
    return query, value if key is None else key, value


def _refusal(node):
    """Why the heads of this call cannot be cut, or None."""
    layer = node.layer
    config = layer.get_config()
    if config.get("use_gate"):
        return "it is built with `use_gate=True`, which keras_vib does not slice"
    if isinstance(layer, keras.layers.MultiHeadAttention):
        if config.get("output_shape") is not None:
            return "its `output_shape` is set, which keras_vib does not slice"
        rank = len(node.in_shapes[0])
        if tuple(layer.attention_axes) != tuple(range(1, rank - 1)):
            return "it attends over some axes only (`attention_axes`)"
    if _roles(node) is None:
        return "its query and value are not tensors of the model"
    return None


def kept_heads(ctx, node, shape):
    """`(units, scale, heads)` of a call: its kept key/value units, their
    gate's `mu`, and the kept query heads (each unit's `repeats`)."""
    found = ctx.units(node)
    units, scale = (
        found if found else (np.ones(shape.units, bool), np.ones(shape.units))
    )
    return units, scale, np.repeat(units, shape.repeats)


def sliced_projection(ctx, kernel, bias, mask, head_scale, key):
    """A query, key or value kernel `(inputs, heads, dim)` and its bias
    `(heads, dim)`: the heads of `mask`, times the gate's `mu` per head
    (`head_scale`, values only), their input rows folded as the tensor `key`
    lost or scaled its channels (`ctx.fold_rows`)."""
    kernel, bias = kernel[:, mask], bias[mask]
    if head_scale is not None:
        kernel = kernel * head_scale[mask][None, :, None]
        bias = bias * head_scale[mask][:, None]
    kept = kernel.shape[1:]
    flat, bias = ctx.fold_rows(kernel.reshape(len(kernel), -1), bias.reshape(-1), key)
    return flat.reshape((-1,) + kept), bias.reshape(kept)


class Attention(LayerHandler):
    """`MultiHeadAttention` and `GroupQueryAttention`, gated or not."""

    open_inputs = True  # an attention mask may have any length

    # What the counts and the rule read of a layer (a subclass for another
    # library's attention layers overrides them).
    def geometry(self, layer):
        """The layer's `_Shape`."""
        return _shape(layer)

    def roles(self, node):
        """The input indices of `(query, key, value)`, or None."""
        return _roles(node)

    def refusal(self, node):
        """Why the heads of this call cannot be cut, or None."""
        return _refusal(node)

    def projections(self, layer):
        """The layer's query, key, value and output `EinsumDense` layers."""
        return _keras.attention_projections(layer)

    def rule(self, node):
        reason = self.refusal(node)
        if reason is not None:
            return Rule(OPAQUE, reason=reason)
        roles = self.roles(node)
        if any(not node.in_shapes[i][-1] for i in roles):
            return Rule(OPAQUE, reason="its inputs' channels are unknown")
        return Rule(
            MIXING,
            absorbs_input_scale=True,
            output_scaling="linear",
            inner_gate=self.gate(node) is not None,
        )

    def gate(self, node):
        return getattr(node.layer, "gate", None)

    def gated(self, node, name, **gate_args):
        layer = node.layer
        if self.gate(node) is not None or len(node.outputs) != 1:
            return None
        config = layer.get_config()
        config["name"] = name
        seed = gate_args.pop("seed", None)
        config.update(gate_args, gate_seed=seed)
        cls = (
            VIBMultiHeadAttention
            if isinstance(layer, keras.layers.MultiHeadAttention)
            else VIBGroupQueryAttention
        )
        new = cls.from_config(config)
        q, k, v = (node.in_shapes[i] for i in _roles(node))
        new.build(q, v, k)
        for old, fresh in zip(
            _keras.attention_projections(layer), _keras.attention_projections(new)
        ):
            fresh.set_weights(old.get_weights())
        return new

    def counts(self, node, kept):
        if kept.rule.kind == OPAQUE:  # its kernels, kept, no FLOPs counted
            proj = self.projections(node.layer)
            total = sum(int(np.prod(p.kernel.shape)) for p in proj)
            return total, total, 0, 0
        shape = self.geometry(node.layer)
        q, k, v = self.roles(node)
        units = kept.units if kept.units is not None else np.ones(shape.units, bool)
        n = int(units.sum())
        heads = n * shape.repeats
        cq, ck, cv = (int(kept.inputs[i].sum()) for i in (q, k, v))
        cout = int(kept.output.sum())
        dq, dk, dv = (len(kept.inputs[i]) for i in (q, k, v))
        dout = len(kept.output)
        at_q = positions(node.in_shapes[q])
        at_k = positions(node.in_shapes[k])
        at_v = positions(node.in_shapes[v])

        def projections(heads, units, cq, ck, cv, cout, at=(1, 1, 1)):
            """Kernel entries of the four projections (times the positions
            they are applied at, `at`: query, key, value)."""
            return (
                at[0] * heads * shape.key_dim * cq
                + at[1] * units * shape.key_dim * ck
                + at[2] * units * shape.value_dim * cv
                + at[0] * heads * shape.value_dim * cout
            )

        if n == 0:  # its output bias only (a Dense when widths differ)
            kept_entries = 0 if cq == cout else cq * cout
        else:
            kept_entries = projections(heads, n, cq, ck, cv, cout)
        total = projections(shape.query_heads, shape.units, dq, dk, dv, dout)
        if None in (at_q, at_k, at_v):
            return kept_entries, total, None, None

        def macs(heads, units, cq, ck, cv, cout):
            # The projections, then the scores and weighted sums of values.
            attend = at_q * at_v * heads * (shape.key_dim + shape.value_dim)
            at = (at_q, at_k, at_v)
            return projections(heads, units, cq, ck, cv, cout, at) + attend

        if n == 0:
            flops = 0 if cq == cout else at_q * cq * cout
        else:
            flops = macs(heads, n, cq, ck, cv, cout)
        total_flops = macs(shape.query_heads, shape.units, dq, dk, dv, dout)
        return kept_entries, total, flops, total_flops

    def slim(self, node, ctx):
        layer = node.layer
        shape = _shape(layer)
        q_in, k_in, v_in = (node.inputs[i] for i in _roles(node))
        t_out = node.outputs[0]
        units, scale, heads = kept_heads(ctx, node, shape)
        n = int(units.sum())
        present = ctx.present(t_out)
        proj = _keras.attention_projections(layer)
        use_bias = layer.get_config()["use_bias"]
        kernels = [numpy(p.kernel) for p in proj]
        biases = [
            numpy(p.bias) if use_bias else np.zeros(p.kernel.shape[1:], FLOAT)
            for p in proj[:3]
        ]
        out_bias = numpy(proj[3].bias) if use_bias else np.zeros(len(present))
        out_bias = out_bias[present]
        out_scale = ctx.output_scale(node)
        if out_scale is not None:
            out_bias = out_bias * out_scale
        if n == 0:
            self._constant(node, ctx, out_bias, q_in)
            return
        # Query, key and value: the kept heads, their input rows folded.
        weights = []
        for kernel, bias, mask, key, head_scale in (
            (kernels[0], biases[0], heads, q_in, None),
            (kernels[1], biases[1], units, k_in, None),
            (kernels[2], biases[2], units, v_in, scale),
        ):
            weights += sliced_projection(ctx, kernel, bias, mask, head_scale, key)
        out_kernel = kernels[3][heads][..., present]
        if out_scale is not None:
            out_kernel = out_kernel * out_scale
        weights += [out_kernel, out_bias]
        use_bias = use_bias or ctx.folds_constants(node)
        if not use_bias:
            weights = weights[0::2]
        new = self._slim_layer(layer, ctx, n, use_bias, int(present.sum()), q_in)
        ctx.sym[t_out] = ctx.call(node, new, weights)[0]

    def _slim_layer(self, layer, ctx, n, use_bias, width, q_in):
        config = layer.get_config()
        for key in _GATE_KEYS:
            config.pop(key, None)
        config.update(
            name=ctx.name(layer.name, original=True),
            use_bias=use_bias,
            dtype=layer.dtype_policy,
        )
        query_width = int(ctx.present(q_in).sum())
        if isinstance(layer, keras.layers.MultiHeadAttention):
            config["num_heads"] = n
            if width != query_width:
                config["output_shape"] = width
            return keras.layers.MultiHeadAttention.from_config(config)
        if width != query_width:
            raise ValueError(
                f"Cannot slim {layer.name!r}: a GroupQueryAttention's output "
                "is as wide as its query, and gates would keep "
                f"{width} output channels of a query of {query_width}."
            )
        config.update(num_key_value_heads=n, num_query_heads=n * _shape(layer).repeats)
        return keras.layers.GroupQueryAttention.from_config(config)

    def _constant(self, node, ctx, bias, q_in):
        """Every head closed: the layer computes its output bias, at every
        position of its query."""
        width = int(ctx.present(q_in).sum())
        name = ctx.name(f"{node.layer.name}_bias")
        dtype = node.layer.dtype_policy
        if width == len(bias):
            new = keras.layers.Rescaling(
                0.0, offset=bias.tolist(), name=name, dtype=dtype
            )
            weights = None
        else:  # a Dense with a zero kernel, to change the width
            new = keras.layers.Dense(len(bias), name=name, dtype=dtype)
            weights = [np.zeros((width, len(bias))), bias]
        ctx.sym[node.outputs[0]] = ctx.emit(new, weights, ctx.sym[q_in])


def register_all(register):
    handler = Attention()
    for cls in (
        keras.layers.MultiHeadAttention,
        keras.layers.GroupQueryAttention,
        VIBMultiHeadAttention,
        VIBGroupQueryAttention,
    ):
        register(cls, handler)
