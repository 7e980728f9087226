"""Layer handlers: everything keras_vib knows about each kind of layer.

One `LayerHandler` per layer kind owns, in five hooks, its channel rule and
how a gate's scale passes it (`rule`), its gate (`gate`), its kernel and FLOP
counts (`counts`), the slicing of its weights (`slim`) and its tf_keras twin
(`twin`). The analysis, `compression_report`, `add_gates`,
`slim_model` and the export ask `handler_for(layer)`; a new kind is a new
handler and its test. Teach keras_vib a layer of your own with
`keras_vib.register_layer(layer_class, handler)`.
"""

from keras_vib.handlers import (
    attention,
    base,
    channelwise,
    hub,  # (keras-hub itself loads when a model holds one of its layers)
    kernels,
    ops,
    structure,
    vib,
)
from keras_vib.handlers.base import (
    ALL,
    ANY,
    COUPLED,
    MIXING,
    NEVER,
    OPAQUE,
    Composite,
    Kept,
    LayerHandler,
    Rule,
    handler_for,
    is_registered,
    register_layer,
    registered,
    unregister_layer,
)
from keras_vib.handlers.channelwise import (
    BatchNorm,
    Channelwise,
    Normalizing,
    scale_layer,
)
from keras_vib.handlers.kernels import Dense, Kernel
from keras_vib.handlers.ops import Elementwise
from keras_vib.handlers.structure import Merge

__all__ = [
    "COUPLED",
    "MIXING",
    "OPAQUE",
    "ALL",
    "ANY",
    "NEVER",
    "Rule",
    "Kept",
    "LayerHandler",
    "Composite",
    "Channelwise",
    "BatchNorm",
    "Normalizing",
    "Kernel",
    "Dense",
    "Merge",
    "Elementwise",
    "register_layer",
    "unregister_layer",
    "registered",
    "handler_for",
    "is_registered",
    "scale_layer",
]

for _module in (kernels, channelwise, structure, ops, vib, attention):
    _module.register_all(register_layer)


def _register_hub():
    hub.register_all(register_layer)


base._LAZY["keras_hub"] = _register_hub
