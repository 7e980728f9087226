"""Layer handlers: everything keras_vib knows about each kind of layer.

One `LayerHandler` per layer kind owns its channel rule, how a gate's scale
folds through it, its kernel and FLOP counts, the slicing of its weights and
its tf_keras twin. The analysis, `compression_report`, `add_gates`,
`slim_model` and the export ask `handler_for(layer)`; a new kind is a new
handler and its test. Teach keras_vib a layer of your own with
`keras_vib.register_layer(layer_class, handler)`.
"""

from keras_vib.handlers import channelwise, kernels, ops, structure, vib
from keras_vib.handlers.base import (
    COUPLED,
    MIXING,
    OPAQUE,
    LayerHandler,
    Rule,
    handler_for,
    is_registered,
    register_layer,
)
from keras_vib.handlers.channelwise import BatchNorm, Channelwise, Normalizing
from keras_vib.handlers.kernels import Dense, Kernel
from keras_vib.handlers.ops import Elementwise
from keras_vib.handlers.structure import Merge

__all__ = [
    "COUPLED",
    "MIXING",
    "OPAQUE",
    "Rule",
    "LayerHandler",
    "Channelwise",
    "BatchNorm",
    "Normalizing",
    "Kernel",
    "Dense",
    "Merge",
    "Elementwise",
    "register_layer",
    "handler_for",
    "is_registered",
]

for _module in (kernels, channelwise, structure, ops, vib):
    _module.register_all(register_layer)
