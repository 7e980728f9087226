"""Raw `keras.ops` calls in a functional graph (`x + 3.0`, `ops.tanh(x)`...).

Elementwise operations act on each channel on their own; their constant
arguments must be scalars (a per-channel constant would need slicing).
Whether a zero channel stays zero and how a scale passes are probed by
calling the operation on small arrays. Any other operation is unknown:
nothing is cut through it.
"""

import keras
import numpy as np

from keras_vib.handlers.base import (
    COUPLED,
    OPAQUE_RULE,
    LayerHandler,
    Rule,
    same_scales,
    scaling_of,
)
from keras_vib.handlers.structure import broadcast_sources

_UNARY = {
    "keras.src.ops.numpy": (
        "Abs Absolute Negative Square Sqrt Exp Exp2 Expm1 Log Log1p Log2 Log10 "
        "Sin Cos Tan Tanh Sinh Cosh Arctan Arcsinh Sign Floor Ceil Round Trunc "
        "Clip Reciprocal Cbrt Fabs Copy NanToNum"
    ),
    "keras.src.ops.nn": (
        "Relu Relu6 Sigmoid Softplus Softsign Silu Gelu Elu Selu LeakyRelu "
        "HardSigmoid HardSilu HardTanh Celu LogSigmoid TanhShrink HardShrink "
        "SoftShrink Squareplus SparsePlus SparseSigmoid Threshold"
    ),
    "keras.src.ops.math": "Erf Erfc Rsqrt",
    "keras.src.ops.core": "Cast",
}
_BINARY = "Add Subtract Multiply Divide TrueDivide Maximum Minimum Power"
_TIES = {"Add", "Subtract", "Maximum", "Minimum"}


def _is_tensor(value):
    return isinstance(value, keras.KerasTensor)


def _scalar(value):
    try:
        return np.size(value) == 1
    except Exception:
        return False


def _call(node, values):
    """Calls the operation of `node` with `values` for its tensor arguments."""
    mapping = {id(t): v for t, v in zip(node.keras_node.input_tensors, values)}
    args, kwargs = node.keras_node.arguments.fill_in(mapping)
    return keras.ops.convert_to_numpy(node.layer(*args, **kwargs))


def _probe_input(shape, fill):
    """A small array of the tensor's rank and channels: zeros or random."""
    small = (1,) * (len(shape) - 1) + (shape[-1],)
    if fill == "zero":
        return np.zeros(small, "float32")
    rng = np.random.default_rng(len(shape))
    return rng.uniform(0.5, 1.5, small).astype("float32")


class Elementwise(LayerHandler):
    """An elementwise `keras.ops` operation on same-channel tensors."""

    def rule(self, node):
        arguments = node.keras_node.arguments
        constants = [
            v
            for v in keras.tree.flatten((arguments.args, arguments.kwargs))
            if not _is_tensor(v) and v is not None
        ]
        if not all(_scalar(v) for v in constants if not isinstance(v, str)):
            return OPAQUE_RULE
        if not node.in_shapes:
            return OPAQUE_RULE
        sources = broadcast_sources(node.in_shapes, node.out_shape[-1])
        if sources is None:
            return OPAQUE_RULE
        try:
            node.extra["zero"] = self._zero_facts(node)
        except Exception:
            return OPAQUE_RULE
        return Rule(COUPLED, sources)

    def _zero_facts(self, node):
        """`(all, forcing)`: zero out of all-zero inputs; inputs forcing zero."""
        shapes = node.in_shapes
        zeros = [_probe_input(s, "zero") for s in shapes]
        all_zero = bool(np.all(_call(node, zeros) == 0))
        forcing = []
        for k in range(len(shapes)):
            values = [
                _probe_input(s, "zero" if i == k else "random")
                for i, s in enumerate(shapes)
            ]
            forcing.append(bool(np.all(_call(node, values) == 0)))
        return all_zero, forcing

    def output_zero(self, node, zeros):
        all_zero, forcing = node.extra["zero"]
        out = np.zeros(node.out_shape[-1], bool)
        if all_zero:
            out |= np.logical_and.reduce(zeros)
        for zero, forces in zip(zeros, forcing):
            if forces:
                out |= zero
        return out

    def _name(self, node):
        return type(node.layer).__name__

    def scaling(self, node):
        if len(node.inputs) == 1:
            return scaling_of(lambda x: _call(node, [x]))
        return "linear" if self._name(node) == "Multiply" else None

    def combine_scales(self, node, scales):
        if len(scales) > 1 and self._name(node) == "Multiply":
            return np.prod(scales, axis=0)
        return same_scales(node, scales)

    def follower(self, node):
        return len(node.inputs) == 1

    def ties(self, node):
        return len(node.inputs) > 1 and self._name(node) in _TIES

    def counts(self, node, tensors):
        return None

    def slim(self, ctx, node):
        ctx.recall(node)


def register_all(register):
    import importlib

    handler = Elementwise()
    groups = dict(_UNARY)
    groups["keras.src.ops.numpy"] += " " + _BINARY
    for module_name, names in groups.items():
        module = importlib.import_module(module_name)
        for name in names.split():
            cls = getattr(module, name, None)
            if isinstance(cls, type):
                register(cls, handler)
