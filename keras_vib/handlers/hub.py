"""keras-hub's layers: loaded only when a model holds one (keras-hub is an
optional dependency: `pip install keras_vib[hub]`).

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

import keras
from keras import ops

from keras_vib.handlers.attention import Attention
from keras_vib.handlers.base import Composite


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
        ones = ops.ones_like(sequence[..., 0], dtype="int32")
        position = ops.cumsum(ops.cast(ones, "int32"), axis=1)
        query, key = ops.expand_dims(position, 2), ops.expand_dims(position, 1)
        causal = ops.cast(ops.greater_equal(query, key), "int32")
        window = getattr(self, "sliding_window", None)  # Mistral's band
        if window is not None:
            band = ops.cast(ops.less(query, key + window), "int32")
            causal = ops.minimum(causal, band)
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


# keras-hub's decoder blocks, opened with a causal mask for any length.
DECODERS = (
    "layers.TransformerDecoder",
    "src.models.llama.llama_decoder.LlamaTransformerDecoder",
    "src.models.mistral.mistral_transformer_decoder.MistralTransformerDecoder",
    "src.models.qwen.qwen_decoder.QwenTransformerDecoder",
    "src.models.qwen3.qwen3_decoder.Qwen3TransformerDecoder",
)


def register_all(register):
    composite = Composite()
    for cls in _classes(*COMPOSITES):
        register(cls, composite)
    for cls in _classes(*DECODERS):
        register(cls, Decoder())
    from keras_hub.src.layers.modeling import cached_multi_head_attention as cached

    register(cached.CachedMultiHeadAttention, Attention())
