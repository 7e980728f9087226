"""keras_vib's own layers: `VIBGate`, `VIBDense`, `VIBConv2D`, `InputSize`."""

from keras_vib.handlers.base import OPAQUE_RULE, PassThrough, identity_sources
from keras_vib.handlers.kernels import Conv, Dense
from keras_vib.layers import InputSize, VIBConv2D, VIBDense, VIBGate


class Gate(PassThrough):
    """A `VIBGate`: multiplies channel `j` by `mu_j`, or by 0 once closed."""

    def rule(self, node):
        sources = identity_sources(node)
        return self.coupled(sources) if sources else OPAQUE_RULE

    def gate(self, node):
        return node.layer

    def slim(self, node, ctx):
        ctx.gate(node)


class Size(PassThrough):
    """An `InputSize`: its input, unchanged; the slim model leaves it out."""

    left_out = True

    def rule(self, node):
        sources = identity_sources(node)
        return self.coupled(sources) if sources else OPAQUE_RULE


class GatedDense(Dense):
    """`VIBDense`: a `Dense` and its gate."""

    prunable = False  # gated already

    def inner(self, layer):
        return layer.dense

    def gate(self, node):
        return node.layer.gate


class GatedConv2D(Conv):
    """`VIBConv2D`: a `Conv2D`, an optional batch norm, activation, gate."""

    prunable = False

    def inner(self, layer):
        return layer.conv

    def gate(self, node):
        return node.layer.gate

    def activation(self, layer):
        return layer.activation

    def bn(self, layer):
        return layer.bn


def register_all(register):
    register(VIBGate, Gate())
    register(InputSize, Size())
    register(VIBDense, GatedDense())
    register(VIBConv2D, GatedConv2D())
