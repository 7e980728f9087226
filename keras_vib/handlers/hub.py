"""keras-hub's layers: loaded only when a model holds one (keras-hub is an
optional dependency: `pip install keras_vib[hub]`).

Its transformer blocks are composite layers, opened into their sublayers
(`Composite`); the attention layers inside them are Keras's own
`MultiHeadAttention` or keras-hub's `CachedMultiHeadAttention` (the same
computation when called without a cache), whose heads are units.
"""

import keras_hub

from keras_vib.handlers.attention import Attention
from keras_vib.handlers.base import Composite


def _classes(*paths):
    """The keras-hub classes at `paths` (dotted, under `keras_hub`) that
    this keras-hub version has."""
    found = []
    for path in paths:
        obj = keras_hub
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type):
            found.append(obj)
    return found


# keras-hub's composite layers, opened into their sublayers.
COMPOSITES = ("layers.TransformerEncoder", "layers.TransformerDecoder")


def register_all(register):
    composite = Composite()
    for cls in _classes(*COMPOSITES):
        register(cls, composite)
    from keras_hub.src.layers.modeling import cached_multi_head_attention as cached

    register(cached.CachedMultiHeadAttention, Attention())
