"""keras-hub's layers: loaded only when a model holds one, or once keras-hub
is imported (an optional dependency: `pip install keras_vib[hub]`).

The rotary attention of Mistral, Qwen3, Gemma and Gemma3 (`RotaryAttention`)
has key/value heads as units (wrapped in a `VIBAttentionHeads` by
`add_gates`); Gemma's decoder blocks are opened with their mask rebuilt
for any length (`GemmaDecoder`).

Its transformer blocks are composite layers, opened into their sublayers
(`Composite`); the attention layers inside them are Keras's own
`MultiHeadAttention` or keras-hub's `CachedMultiHeadAttention` (the same
computation when called without a cache), whose heads are units.

keras-hub internals used here (this module is their one door, as
`keras_vib._keras` is Keras's): the decoders' `_compute_self_attention_mask`
builds a causal mask (banded for Mistral's `sliding_window`) with
`ops.arange` of the sequence length, which a graph of any length does not
know; while a decoder is opened, it is replaced by the same mask built from
positions counted with `ops.cumsum`,
and its `CachedMultiHeadAttention` is called without the `cache` arguments
it would not use (`_symbolic_causal_mask`).
"""

import contextlib
import importlib
import inspect
import math

import keras
import numpy as np
from keras import ops

from keras_vib import _keras
from keras_vib.handlers.attention import (
    Attention,
    _Shape,
    kept_heads,
    sliced_projection,
)
from keras_vib.handlers.base import (
    OPAQUE,
    Composite,
    opened,
    positions,
    register_layer,
    remade,
)
from keras_vib.handlers.kernels import FLOAT, numpy
from keras_vib.layers import VIBAttentionHeads


def _classes(*paths):
    """The keras-hub classes at `paths` (dotted, under `keras_hub`) that
    this keras-hub version has."""
    found = []
    for path in paths:
        module, _, name = f"keras_hub.{path}".rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), name, None)
        except ImportError:  # pragma: no cover (another keras-hub version)
            obj = None
        if isinstance(obj, type):
            found.append(obj)
    return found


# keras-hub's composite layers, opened into their sublayers.
COMPOSITES = (
    "layers.TransformerEncoder",
    "src.models.vit.vit_layers.ViTEncoder",
    "src.models.vit.vit_layers.ViTEncoderBlock",
    "src.models.vit.vit_layers.MLP",
    "src.models.dinov2.dinov2_layers.DINOV2Encoder",
    "src.models.dinov2.dinov2_layers.DINOV2Layer",
    "src.models.dinov2.dinov2_layers.DINOV2Attention",
    "src.models.dinov2.dinov2_layers.DINOV2MLP",
    "src.models.deberta_v3.disentangled_attention_encoder.DisentangledAttentionEncoder",
    "src.models.deit.deit_layers.DeiTIntermediate",
    "src.models.deit.deit_layers.DeiTOutput",
)


class Decoder(Composite):
    """keras-hub's decoder blocks (`TransformerDecoder`: GPT-2's, OPT's;
    Llama's, Mistral's, Qwen's), called without a cache: opened with their
    causal mask built for any length. The attention layers of Llama,
    Mistral and Qwen (rotary embeddings, their own einsums) stay whole:
    their feed-forward units are cut, not their heads."""

    def inside(self, node):
        with _symbolic_causal_mask(type(node.layer)):
            return super().inside(node)


@contextlib.contextmanager
def _symbolic_causal_mask(cls):
    """`cls._compute_self_attention_mask` without `ops.arange`, while the
    block is traced."""
    from keras_hub.src.layers.modeling.transformer_layer_utils import (
        merge_padding_and_attention_mask,
    )

    original = cls._compute_self_attention_mask

    def mask(self, **kwargs):
        # Every keras-hub decoder calls it with keywords: the sequence, its
        # padding and attention masks, the cache and its index (and
        # TransformerDecoder's `use_causal_mask`).
        if kwargs.get("self_attention_cache") is not None:
            return original(self, **kwargs)
        sequence = kwargs["decoder_sequence"]
        merged = merge_padding_and_attention_mask(
            sequence,
            kwargs.get("decoder_padding_mask"),
            kwargs.get("decoder_attention_mask"),
        )
        if not kwargs.get("use_causal_mask", True):
            return merged
        # Mistral's band: its `sliding_window`.
        causal = _causal(sequence, getattr(self, "sliding_window", None))
        return causal if merged is None else ops.minimum(merged, causal)

    from keras_hub.src.layers.modeling.cached_multi_head_attention import (
        CachedMultiHeadAttention as cached,
    )

    def call(self, *args, cache=None, cache_update_index=None, **kwargs):
        # Without a cache, the call of a `MultiHeadAttention` (whose
        # `compute_output_spec` takes no cache arguments).
        if cache is not None:
            kwargs.update(cache=cache, cache_update_index=cache_update_index)
        return keras.layers.Layer.__call__(self, *args, **kwargs)

    own_call = cached.__dict__.get("__call__")
    cls._compute_self_attention_mask = mask
    cached.__call__ = call
    try:
        yield
    finally:
        cls._compute_self_attention_mask = original
        if own_call is None:
            del cached.__call__
        else:  # pragma: no cover
            cached.__call__ = own_call


@contextlib.contextmanager
def _symbolic_gemma_mask(cls):
    """Gemma's `_compute_attention_mask(x, padding_mask, [vision_mask,]
    cache, cache_update_index)` without `ops.arange`, while the block is
    traced (no cache, no vision mask, not bidirectional)."""
    from keras_hub.src.layers.modeling.transformer_layer_utils import (
        merge_padding_and_attention_mask,
    )

    original = cls._compute_attention_mask

    def mask(self, x, padding_mask, *rest):
        cache, vision = rest[-2], rest[0] if len(rest) == 3 else None
        if (
            cache is not None
            or vision is not None
            or getattr(self, "use_bidirectional_attention", False)
        ):
            return original(self, x, padding_mask, *rest)
        merged = merge_padding_and_attention_mask(x, padding_mask, None)
        causal = _causal(x)
        return causal if merged is None else ops.minimum(merged, causal)

    cls._compute_attention_mask = mask
    try:
        yield
    finally:
        cls._compute_attention_mask = original


def _causal(sequence, window=None):
    """The causal mask (batch, length, length) of a sequence, from positions
    counted with `ops.cumsum` (any length); banded by `window` if given."""
    ones = ops.ones_like(ops.take(sequence, 0, axis=-1), dtype="int32")
    position = ops.cumsum(ops.cast(ones, "int32"), axis=1)
    query, key = ops.expand_dims(position, 2), ops.expand_dims(position, 1)
    causal = ops.cast(ops.greater_equal(query, key), "int32")
    if window is not None:
        band = ops.cast(ops.less(query, key + window), "int32")
        causal = ops.minimum(causal, band)
    return causal


class GemmaDecoder(Composite):
    """Gemma's and Gemma3's decoder blocks, called without a cache: opened
    with their causal mask built for any length."""

    def inside(self, node):
        with _symbolic_gemma_mask(type(node.layer)):
            return super().inside(node)


# keras-hub's rotary attention layers whose config takes `head_dim`, so
# that a slim layer can have fewer heads of the same size; Llama's takes
# none, and its slim layer is Mistral's (the same computation when its
# rotary embedding is plain: no Llama 3.1 frequency adjustment, positions
# not scaled).
ROTARY = (
    "src.models.llama.llama_attention.LlamaAttention",
    "src.models.mistral.mistral_attention.CachedMistralAttention",
    "src.models.qwen3.qwen3_attention.Qwen3Attention",
    "src.models.gemma.gemma_attention.CachedGemmaAttention",
    "src.models.gemma3.gemma3_attention.CachedGemma3Attention",
    "src.models.qwen.qwen_attention.QwenAttention",
    "src.models.gpt_oss.gpt_oss_attention.GptOssAttention",
)
# Qwen2's attention derives its head size from hidden_dim / num_query_heads
# and has query/key/value biases: the one keras-hub class that takes a head
# size and has those biases is GPT-OSS's, whose slim copy of a Qwen2 layer
# has its per-head sink logits at -1e30 (no weight in any softmax), its
# sliding window off, its output bias 0 and its YaRN rotary embedding at
# factor 1 (plain RoPE, to float rounding).
GPT_OSS = "src.models.gpt_oss.gpt_oss_attention.GptOssAttention"
_NO_SINK = -1e30


def _inner(layer):
    return layer.layer if isinstance(layer, VIBAttentionHeads) else layer


def _projections(layer):
    """The query, key, value and output `EinsumDense` of a rotary attention
    layer, and whether its query/key/value kernels put the heads first
    (Gemma's `(heads, model, head_dim)`; else `(model, heads, head_dim)`)."""
    dense = _keras.attention_projections(layer)
    x, kernel = dense[0].get_config()["equation"].split("->")[0].split(",")
    return dense, kernel.strip()[0] != x.strip()[-1]


def _is_llama(layer):
    return type(layer).__name__ == "LlamaAttention"


def _is_qwen2(layer):
    return type(layer).__name__ == "QwenAttention"


def _qwen2_slim(layer, name, weights, heads):
    """A GPT-OSS attention computing what Qwen2's `layer` computes with the
    kept heads, and its weights (Qwen2's `weights`: the query, key and value
    kernels and biases, then the output kernel)."""
    gpt_oss = _classes(GPT_OSS)
    if not gpt_oss:  # pragma: no cover (another keras-hub version)
        return None, weights
    slim = gpt_oss[0](
        rope_max_wavelength=layer.rope_max_wavelength,
        rope_scaling_factor=1.0,
        sliding_window=None,
        kernel_initializer=layer.kernel_initializer,
        dropout=layer.dropout,
        name=name,
        dtype=layer.dtype_policy,
        **heads,
    )
    out_kernel = weights[6]
    sinks = np.full(heads["num_query_heads"], _NO_SINK, FLOAT)
    bias = np.zeros(out_kernel.shape[-1], FLOAT)
    # GPT-OSS's weights: the sinks, then query, key, value, output.
    return slim, [sinks, *weights[:6], out_kernel, bias]


class RotaryAttention(Attention):
    """keras-hub's rotary attention (Llama, Mistral, Qwen2, Qwen3, Gemma,
    Gemma3): the unit is a key/value head with its query heads. `add_gates`
    wraps it in a `VIBAttentionHeads`; the slim model has the same keras-hub
    class with fewer heads in that layer (`num_query_heads`,
    `num_key_value_heads`, `head_dim` of its config), Mistral's for Llama's,
    GPT-OSS's for Qwen2's."""

    def geometry(self, layer):
        layer = _inner(layer)
        units = int(_keras.attribute(layer, "num_key_value_heads"))
        queries = int(_keras.attribute(layer, "num_query_heads"))
        head_dim = int(_projections(layer)[0][0].kernel.shape[-1])
        return _Shape(units, queries // units, head_dim, head_dim)

    def roles(self, node):
        layer = _inner(node.layer)
        first = next(iter(inspect.signature(layer.call).parameters))
        i = node.call.input_index(0, first)
        return None if i is None else (i, i, i)

    def refusal(self, node):
        layer = _inner(node.layer)
        if not layer.built:
            return "it is not built"
        if _is_llama(layer) and (
            layer.rope_frequency_adjustment_factor is not None
            or layer.rope_position_scaling_factor != 1
        ):
            return (
                "its rotary embedding is scaled (Llama 3.1), which the "
                "attention that takes fewer heads (Mistral's) does not do"
            )
        if _is_qwen2(layer):
            if not _classes(GPT_OSS):  # pragma: no cover
                return "this keras-hub has no attention that takes its heads"
            if layer.use_sliding_window_attention or layer.rope_scaling_factor != 1:
                return (
                    "its sliding window or scaled rotary embedding is not "
                    "what the attention that takes fewer heads (GPT-OSS's) does"
                )
        if _keras.attribute(layer, "query_head_dim_normalize") is False:
            return (
                "its queries are scaled by hidden_dim / num_query_heads, "
                "which would change with the heads"
            )
        if self.roles(node) is None:
            return "its hidden states are not a tensor of the model"
        return None

    def projections(self, layer):
        return _projections(_inner(layer))[0]

    def gated(self, node, name, **gate_args):
        layer = node.layer
        if self.gate(node) is not None or len(node.outputs) != 1:
            return None
        copy = remade(layer)
        if copy is None:
            return None
        copy.build(node.in_shapes[self.roles(node)[0]])
        copy.set_weights(layer.get_weights())
        seed = gate_args.pop("seed", None)
        return VIBAttentionHeads(copy, name=name, gate_seed=seed, **gate_args)

    def slim(self, node, ctx):
        layer = _inner(node.layer)
        shape = self.geometry(layer)
        x_in, t_out = node.inputs[self.roles(node)[0]], node.outputs[0]
        units, scale, heads = kept_heads(ctx, node, shape)
        n = int(units.sum())
        present = ctx.present(t_out)
        width = int(ctx.present(x_in).sum())
        if int(present.sum()) != width:
            raise ValueError(
                f"Cannot slim {layer.name!r}: its output is as wide as its "
                f"input, and gates would keep {int(present.sum())} output "
                f"channels of an input of {width}."
            )
        if n == 0:  # no head left: it adds nothing (no output bias)
            self._constant(node, ctx, np.zeros(width, FLOAT), x_in)
            return
        (q, k, v, o), heads_first = _projections(layer)
        new = {}
        for proj, mask, head_scale in (
            (q, heads, None),
            (k, units, None),
            (v, units, scale),
        ):
            kernel = numpy(proj.kernel)
            if heads_first:  # Gemma's (heads, model, head_dim)
                kernel = kernel.transpose(1, 0, 2)
            has_bias = proj.bias is not None
            bias = numpy(proj.bias) if has_bias else np.zeros(kernel.shape[1:])
            kernel, bias = sliced_projection(ctx, kernel, bias, mask, head_scale, x_in)
            if not has_bias and np.any(bias):
                raise ValueError(
                    f"Cannot slim {layer.name!r}: constant input channels "
                    "would need a bias its projections do not have."
                )
            new[id(proj.kernel)] = kernel.transpose(1, 0, 2) if heads_first else kernel
            if has_bias:
                new[id(proj.bias)] = bias
        sinks = getattr(layer, "sinks", None)  # GPT-OSS: a logit per query head
        if sinks is not None:
            new[id(sinks)] = numpy(sinks)[heads]
        out_kernel = numpy(o.kernel)[heads][..., present]
        out_scale = ctx.output_scale(node)
        if out_scale is not None:
            out_kernel = out_kernel * out_scale
        new[id(o.kernel)] = out_kernel
        if o.bias is not None:
            bias = numpy(o.bias)[present]
            new[id(o.bias)] = bias if out_scale is None else bias * out_scale
        weights = [new.get(id(w), numpy(w)) for w in layer.weights]
        name = ctx.name(node.layer.name, original=True)
        heads = dict(
            num_query_heads=n * shape.repeats,
            num_key_value_heads=n,
            head_dim=shape.key_dim,
        )
        if _is_qwen2(layer):  # GPT-OSS's attention, which takes `head_dim`
            slim, weights = _qwen2_slim(layer, name, weights, heads)
        elif _is_llama(layer):  # Mistral's attention, which takes `head_dim`
            mistral = _classes(ROTARY[1])[0]
            slim = mistral(
                rope_max_wavelength=layer.rope_max_wavelength,
                kernel_initializer=layer.kernel_initializer,
                dropout=layer.dropout,
                name=name,
                dtype=layer.dtype_policy,
                **heads,
            )
        else:
            slim = remade(layer, name, **heads)
        if slim is None:
            raise ValueError(
                f"Cannot slim {layer.name!r}: its class does not rebuild with "
                "fewer heads."
            )
        ctx.sym[t_out] = ctx.call(node, slim, weights)[0]


# DeBERTaV3's disentangled self-attention derives its head size from
# hidden_dim / num_heads (and reshapes its heads to hidden_dim): its slim
# layers are of a subclass that takes a head size (`sized_disentangled`),
# saved under the name `_SIZED_NAME` and loaded through `_SizedLoader`,
# which this module registers (Keras finds it by that name) without
# importing keras-hub until a model holds one.
DEBERTA = "src.models.deberta_v3.disentangled_self_attention.DisentangledSelfAttention"
_SIZED_NAME = "KerasVibDisentangledHeads"
_SIZED = []


def sized_disentangled():
    """keras-hub's `DisentangledSelfAttention` with `head_size=` of its own
    (its `hidden_dim` stays the model's width)."""
    if _SIZED:
        return _SIZED[0]
    (base,) = _classes(DEBERTA)

    class Sized(base):
        def __init__(self, head_size, **kwargs):
            super().__init__(**kwargs)
            self.head_size = int(head_size)
            self.attn_head_size = self.head_size
            self.scale_factor = 1.0 / math.sqrt(3.0 * self.head_size)

        def build(self, inputs_shape, rel_embeddings_shape=None):
            # keras-hub's build, its output reading num_heads * head_size.
            def dense(name, equation, output_shape, bias_axes, built_on):
                layer = keras.layers.EinsumDense(
                    equation=equation,
                    output_shape=output_shape,
                    bias_axes=bias_axes,
                    **self._get_common_kwargs_for_sublayer(use_bias=True),
                    dtype=self.dtype_policy,
                    name=name,
                )
                layer.build(built_on)
                return layer

            heads = (None, self.num_heads, self.head_size)
            shape = tuple(inputs_shape)
            self._query_dense = dense("query", "abc,cde->abde", heads, "de", shape)
            self._key_dense = dense("key", "abc,cde->abde", heads, "de", shape)
            self._value_dense = dense("value", "abc,cde->abde", heads, "de", shape)
            self._position_dropout_layer = keras.layers.Dropout(
                self.dropout, dtype=self.dtype_policy
            )
            self._attn_dropout_layer = keras.layers.Dropout(
                self.dropout, dtype=self.dtype_policy, name="attention_dropout"
            )
            self._softmax = keras.layers.Softmax(
                axis=-1, dtype="float32", name="attention_softmax"
            )
            width = shape[:-1] + (self.num_heads * self.head_size,)
            self._output_dense = dense(
                "attention_output", "abc,cd->abd", (None, self.hidden_dim), "d", width
            )
            self.built = True

        def call(self, inputs, rel_embeddings, *args, **kwargs):
            model_width = self.hidden_dim  # the heads' reshape reads it
            self.hidden_dim = self.num_heads * self.head_size
            try:
                return super().call(inputs, rel_embeddings, *args, **kwargs)
            finally:
                self.hidden_dim = model_width

        def get_config(self):
            return {**super().get_config(), "head_size": self.head_size}

    Sized.__name__ = Sized.__qualname__ = _SIZED_NAME
    _SIZED.append(Sized)
    register_layer(Sized, DisentangledAttention())
    return Sized


def _is_disentangled(layer):
    return type(_inner(layer)).__name__ in ("DisentangledSelfAttention", _SIZED_NAME)


class _SizedLoader:
    """What Keras finds under `_SIZED_NAME` when it loads a slim DeBERTaV3:
    builds the class (keras-hub imported then)."""

    @classmethod
    def from_config(cls, config):
        return sized_disentangled().from_config(config)


keras.saving.get_custom_objects().setdefault(_SIZED_NAME, _SizedLoader)


class DisentangledAttention(RotaryAttention):
    """DeBERTaV3's disentangled self-attention: the unit is a head (its
    query, key and value, which also project the relative embeddings).
    `add_gates` wraps it in a `VIBAttentionHeads`; the slim layer is
    `sized_disentangled()` with fewer heads."""

    def geometry(self, layer):
        layer = _inner(layer)
        size = int(layer.attn_head_size)
        return _Shape(int(layer.num_heads), 1, size, size)

    def refusal(self, node):
        if not _inner(node.layer).built:
            return "it is not built"
        if self.roles(node) is None or self._relative(node) is None:
            return "its hidden states are not a tensor of the model"
        return None

    def projections(self, layer):
        return _keras.attention_projections(_inner(layer))

    @staticmethod
    def _relative(node):
        return node.call.input_index(1, "rel_embeddings")

    def counts(self, node, kept):
        counted = super().counts(node, kept)
        kept_entries, total, flops, total_flops = counted
        at_rel = positions(node.in_shapes[self._relative(node) or 0])
        if kept.rule.kind == OPAQUE or flops is None or at_rel is None:
            return counted
        shape = self.geometry(node.layer)
        at_q = positions(node.in_shapes[self.roles(node)[0]])
        width = node.in_shapes[self._relative(node)][-1]

        def relative(heads):
            # Query and key of the relative embeddings, and the scores
            # of the contents against the positions both ways.
            return 2 * heads * shape.key_dim * (at_rel * width + at_q * at_rel)

        units = kept.units if kept.units is not None else np.ones(shape.units, bool)
        flops += relative(int(units.sum()))
        return kept_entries, total, flops, total_flops + relative(shape.units)

    def slim(self, node, ctx):
        layer = _inner(node.layer)
        shape = self.geometry(layer)
        x_in, t_out = node.inputs[self.roles(node)[0]], node.outputs[0]
        rel = node.inputs[self._relative(node)]
        units, scale, heads = kept_heads(ctx, node, shape)
        n = int(units.sum())
        present = ctx.present(t_out)
        width = int(ctx.present(x_in).sum())
        if int(present.sum()) != width or not np.array_equal(
            ctx.present(x_in), ctx.present(rel)
        ):
            raise ValueError(
                f"Cannot slim {layer.name!r}: its hidden states, relative "
                "embeddings and output must keep the same channels."
            )
        q, k, v, o = self.projections(layer)
        out_scale = ctx.output_scale(node)
        out_bias = numpy(o.bias)[present]
        if out_scale is not None:
            out_bias = out_bias * out_scale
        if n == 0:  # no head left: its output bias
            self._constant(node, ctx, out_bias, x_in)
            return
        new = {}
        for proj, head_scale in ((q, None), (k, None), (v, scale)):
            kernel, bias = sliced_projection(
                ctx, numpy(proj.kernel), numpy(proj.bias), units, head_scale, x_in
            )
            new[id(proj.kernel)], new[id(proj.bias)] = kernel, bias
        out_kernel = numpy(o.kernel).reshape(shape.units, shape.key_dim, -1)
        out_kernel = out_kernel[heads].reshape(n * shape.key_dim, -1)[:, present]
        if out_scale is not None:
            out_kernel = out_kernel * out_scale
        new[id(o.kernel)], new[id(o.bias)] = out_kernel, out_bias
        weights = [new.get(id(w), numpy(w)) for w in layer.weights]
        slim = sized_disentangled()(
            head_size=shape.key_dim,
            num_heads=n,
            hidden_dim=width,
            max_position_embeddings=layer.max_position_embeddings,
            bucket_size=layer.bucket_size,
            dropout=layer.dropout,
            name=ctx.name(node.layer.name, original=True),
            dtype=layer.dtype_policy,
        )
        ctx.sym[t_out] = ctx.call(node, slim, weights)[0]


class _Wrapped(RotaryAttention):
    """`VIBAttentionHeads`: the handler of the layer it wraps."""

    def __init__(self, rotary, disentangled):
        self.rotary, self.disentangled = rotary, disentangled

    def _of(self, layer):
        return self.disentangled if _is_disentangled(layer) else self.rotary

    def geometry(self, layer):
        return self._of(layer).geometry(layer)

    def refusal(self, node):
        return self._of(node.layer).refusal(node)

    def projections(self, layer):
        return self._of(layer).projections(layer)

    def counts(self, node, kept):
        return self._of(node.layer).counts(node, kept)

    def slim(self, node, ctx):
        return self._of(node.layer).slim(node, ctx)


# keras-hub's decoder blocks, opened with a causal mask for any length.
DECODERS = (
    "layers.TransformerDecoder",
    "src.models.llama.llama_decoder.LlamaTransformerDecoder",
    "src.models.mistral.mistral_transformer_decoder.MistralTransformerDecoder",
    "src.models.qwen.qwen_decoder.QwenTransformerDecoder",
    "src.models.qwen3.qwen3_decoder.Qwen3TransformerDecoder",
)


GEMMA_DECODERS = (
    "src.models.gemma.gemma_decoder_block.GemmaDecoderBlock",
    "src.models.gemma3.gemma3_decoder_block.Gemma3DecoderBlock",
)


class DeiTEncoder(Composite):
    """keras-hub's DeiT encoder: its blocks return None beside their output
    (no attention scores), which a Keras graph cannot hold, so its `call`
    does not trace; opened by calling each block's sublayers as the block's
    `call` does (no attention mask, no hidden states or scores asked for:
    its two other outputs are the empty tensors it returns then)."""

    def trace(self, layer, call):
        if call.constants() or len(call.input_tensors) != 1:
            return None  # masks, hidden states or scores asked for: whole
        return opened(layer, call, lambda x: self._blocks(layer, x[0], call))

    @staticmethod
    def _blocks(layer, x, call):
        shape, dtype = tuple(x.shape), x.dtype
        h = x
        for block in layer.encoder_layers:  # a nested model each (their
            # sublayers share names from block to block)
            b_in = keras.Input(batch_shape=shape, dtype=dtype)
            y = block.layer_norm_1(b_in)
            y = ops.add(block.mha(y, y), b_in)
            z = block.mlp(block.layer_norm_2(y))
            h = keras.Model(b_in, block.output_layer(z, y), name=block.name)(h)
        h = layer.layer_norm(h)
        # The empty `(0, ...)` tensors of hidden states and scores it was
        # not asked for, from the output (they are read by nothing).
        empty = ops.slice(h, (0, 0, 0), (0, 1, 1))
        extra = [
            ops.broadcast_to(ops.reshape(empty, (0,) + (1,) * (len(t.shape) - 1)),
                             tuple(t.shape))
            for t in call.output_tensors[1:]
        ]  # fmt: skip
        return [h, *extra]


def register_all(register):
    composite = Composite()
    for cls in _classes(*COMPOSITES):
        register(cls, composite)
    for cls in _classes(*DECODERS):
        register(cls, Decoder())
    for cls in _classes(*GEMMA_DECODERS):
        register(cls, GemmaDecoder())
    for cls in _classes("src.models.deit.deit_layers.DeiTEncoder"):
        register(cls, DeiTEncoder())
    rotary = RotaryAttention()
    for cls in _classes(*ROTARY):
        register(cls, rotary)
    disentangled = DisentangledAttention()
    for cls in _classes(DEBERTA):
        register(cls, disentangled)
    register(VIBAttentionHeads, _Wrapped(rotary, disentangled))
    from keras_hub.src.layers.modeling import cached_multi_head_attention as cached

    register(cached.CachedMultiHeadAttention, Attention())
