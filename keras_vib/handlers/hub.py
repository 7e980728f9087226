"""keras-hub's layers: loaded only when a model holds one (keras-hub is an
optional dependency: `pip install keras_vib[hub]`).

Its transformer blocks are composite layers, opened into their sublayers
(`Composite`); the attention layers inside them are Keras's own
`MultiHeadAttention` or keras-hub's `CachedMultiHeadAttention` (the same
computation when called without a cache), whose heads are units.
"""

import importlib

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
    "layers.TransformerDecoder",
    "src.models.vit.vit_layers.ViTEncoder",
    "src.models.vit.vit_layers.ViTEncoderBlock",
    "src.models.vit.vit_layers.MLP",
    "src.models.dinov2.dinov2_layers.DINOV2Encoder",
    "src.models.dinov2.dinov2_layers.DINOV2Layer",
    "src.models.dinov2.dinov2_layers.DINOV2Attention",
    "src.models.dinov2.dinov2_layers.DINOV2MLP",
    "src.models.deberta_v3.disentangled_attention_encoder.DisentangledAttentionEncoder",
)


def register_all(register):
    composite = Composite()
    for cls in _classes(*COMPOSITES):
        register(cls, composite)
    from keras_hub.src.layers.modeling import cached_multi_head_attention as cached

    register(cached.CachedMultiHeadAttention, Attention())
