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
    ALL,
    COUPLED,
    NEVER,
    OPAQUE_RULE,
    LayerHandler,
    Rule,
    scaling_of,
)
from keras_vib.handlers.structure import broadcast_sources

# The elementwise `keras.ops`, by public name: unary, then binary.
_UNARY = (
    "abs negative square sqrt exp exp2 expm1 log log1p log2 log10 sin cos tan "
    "tanh sinh cosh arctan arcsinh sign floor ceil round trunc clip reciprocal "
    "cbrt copy nan_to_num relu relu6 sigmoid softplus softsign silu gelu elu "
    "selu leaky_relu hard_sigmoid hard_silu hard_tanh celu log_sigmoid "
    "tanh_shrink hard_shrink soft_shrink squareplus sparse_plus sparse_sigmoid "
    "threshold erf erfc rsqrt cast"
)
_BINARY = "add subtract multiply divide true_divide maximum minimum power"
_TIES = ("add", "subtract", "maximum", "minimum")
_EXTRA_ARGS = {"clip": (0.0, 1.0), "cast": ("float32",), "threshold": (0.5, 0.0)}


def op_classes():
    """The operation class of each elementwise `keras.ops` function.

    Found through public API: each function is called on a symbolic input
    and `keras.Function(...).operations` gives the operation it recorded.

    Returns:
        A dict: class -> `(name, arity)`, the function's name and its number
        of tensor arguments.
    """
    x = keras.Input((4,))
    calls = []
    for arity, names in ((1, _UNARY), (2, _BINARY)):
        for name in names.split():
            fn = getattr(keras.ops, name, None)
            if fn is None:  # pragma: no cover (an older Keras)
                continue
            calls.append((name, arity, fn(*[x] * arity, *_EXTRA_ARGS.get(name, ()))))
    classes = {}
    for name, arity, y in calls:
        ops = keras.Function([x], [y]).operations
        found = [op for op in ops if not isinstance(op, keras.layers.InputLayer)]
        classes[type(found[-1])] = (name, arity)
    return classes


def _is_tensor(value):
    return isinstance(value, keras.KerasTensor)


def _scalar(value):
    try:
        return np.size(value) == 1
    except Exception:
        return False


def _call(node, values):
    """Calls the operation of `node` with `values` for its tensor arguments."""
    args, kwargs = node.call.arguments_for(values)
    return keras.ops.convert_to_numpy(node.layer(*args, **kwargs))


def _probe_input(shape, fill):
    """A small array of the tensor's rank and channels: zeros or random."""
    small = (1,) * (len(shape) - 1) + (shape[-1],)
    if fill == "zero":
        return np.zeros(small, "float32")
    rng = np.random.default_rng(len(shape))
    return rng.uniform(0.5, 1.5, small).astype("float32")


class Elementwise(LayerHandler):
    """An elementwise `keras.ops` operation on same-channel tensors.

    Args:
        name: the `keras.ops` function's name (`"multiply"`...).
    """

    def __init__(self, name=""):
        self.name = name

    def rule(self, node):
        constants = node.call.constants()
        if not all(_scalar(v) for v in constants if not isinstance(v, str)):
            return OPAQUE_RULE
        if not node.in_shapes:
            return OPAQUE_RULE
        sources = broadcast_sources(node.in_shapes, node.out_shape[-1])
        if sources is None:
            return OPAQUE_RULE
        try:
            zero = self._zero(node)
        except Exception:
            return OPAQUE_RULE
        several = len(node.inputs) > 1
        if several:
            scaling = "linear" if self.name == "multiply" else None
        else:
            scaling = scaling_of(lambda x: _call(node, [x]))
        return Rule(
            COUPLED,
            sources,
            zero=zero,
            scaling=scaling,
            follower=not several,
            ties=several and self.name in _TIES,
        )

    def _zero(self, node):
        """`Rule.zero`, probed: the inputs whose zero forces a zero output,
        else `ALL` when all-zero inputs give zero, else `NEVER`."""
        shapes = node.in_shapes
        zeros = [_probe_input(s, "zero") for s in shapes]
        all_zero = bool(np.all(_call(node, zeros) == 0))
        forcing = []
        for k in range(len(shapes)):
            values = [
                _probe_input(s, "zero" if i == k else "random")
                for i, s in enumerate(shapes)
            ]
            if np.all(_call(node, values) == 0):
                forcing.append(k)
        if forcing:
            return tuple(forcing)
        return ALL if all_zero else NEVER

    def slim(self, node, ctx):
        ctx.recall(node)


def register_all(register):
    for cls, (name, _) in op_classes().items():
        register(cls, Elementwise(name))
