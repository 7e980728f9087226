"""The one door to Keras internals: every private Keras name keras_vib uses.

`setup.py` accepts any Keras 3 from 3.15; a Keras release may move or
rename any of what follows, and this module is the only place to mend
then (`tests/test_layering.py` fails if another module uses a private
Keras name). Each use, and why no public API does it:

- `model._functional` (a `Sequential`'s functional graph) and
  `graph._nodes_by_depth` (its calls, in topological order): Keras has no
  public view of a model's layer calls with their arguments
  (`model.layers` and `model.operations` list layers, not calls; a layer
  called twice appears once).
- `Node.operation`, `.is_input`, `.input_tensors`, `.outputs` and
  `.arguments` (`keras.src.ops.node.Node`): what one call read and
  produced, and its other arguments; `arguments.fill_in` puts new tensors
  in the place of the old ones to call the same operation again with the
  same keyword and constant arguments (rebuilding a graph). No public class
  holds a call's arguments.
- `MultiHeadAttention._compute_attention` and
  `GroupQueryAttention._compute_attention`, overridden by
  `ValueScaledAttention` and `ValueScaledGroupAttention`: the hook Keras
  documents for customised attention ("users can override this
  function"), the one place where the projected values are seen per head;
  `keras_vib.layers` gates the heads there. `GroupQueryAttention` holds
  its projections in `_query_dense`, `_key_dense`, `_value_dense` and
  `_output_dense` without public properties (`MultiHeadAttention` has
  them): `attention_projections` reads them.
- `Operation._inbound_nodes` and `._outbound_nodes`, emptied on the
  renamed copy of a stateless layer that does not rebuild from its config
  (`renamed_copy`): the copy must not add its calls to the original's.
- `keras.src.applications.convnext.LayerScale` and `.StochasticDepth`,
  `keras.src.applications.inception_resnet_v2.CustomScaleLayer`: layers of
  `keras.applications` models that `keras.applications` does not export,
  so no public name reaches their classes.

The classes of raw `keras.ops` operations, by contrast, are found through
public API (`keras.Function(...).operations` of symbolic calls of
`keras.ops` by name), in `keras_vib.handlers.ops`.
"""

import contextlib
import inspect

import keras
import numpy as np

__all__ = [
    "Call",
    "model_calls",
    "application_layers",
    "ValueScaledAttention",
    "ValueScaledGroupAttention",
    "attention_projections",
    "renamed_copy",
]


class Call:
    """One call of a layer or operation in a model's graph.

    Attributes:
        operation: the layer or operation called.
        input_tensors: the Keras tensors it read, in order.
        output_tensors: the Keras tensors it produced, in order.
        kwargs: its keyword arguments (tensors included).
    """

    def __init__(self, node):
        self._node = node
        self.operation = node.operation
        self.input_tensors = list(node.input_tensors)
        self.output_tensors = list(node.outputs)
        self.args = list(node.arguments.args)
        self.kwargs = dict(node.arguments.kwargs)

    def constants(self):
        """Every argument that is not a Keras tensor (nor None), flattened."""
        arguments = self._node.arguments
        flat = keras.tree.flatten((arguments.args, arguments.kwargs))
        return [
            v for v in flat if not isinstance(v, keras.KerasTensor) and v is not None
        ]

    def input_index(self, position, name):
        """The index in `input_tensors` of the argument passed at
        `position` or by keyword `name`, if it is one Keras tensor; else
        None (not passed, or not a tensor)."""
        args, kwargs = list(self.args), dict(self.kwargs)
        marker = object()
        if position < len(args):
            found, args[position] = args[position], marker
        elif name in kwargs:
            found, kwargs[name] = kwargs[name], marker
        else:
            return None
        if not isinstance(found, keras.KerasTensor):
            return None
        flat = [
            v
            for v in keras.tree.flatten((args, kwargs))
            if v is marker or isinstance(v, keras.KerasTensor)
        ]
        return flat.index(marker)

    def arguments_for(self, values):
        """`(args, kwargs)` of this call with `values[i]` for input tensor i."""
        mapping = {id(t): v for t, v in zip(self.input_tensors, values)}
        return self._node.arguments.fill_in(mapping)


def model_calls(model):
    """`(inputs, outputs, calls)` of a Sequential or functional model.

    `calls` are the model's `Call`s in topological order (input layers
    left out); None for a model with no graph (a subclassed model).
    """
    graph = model
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
    nodes_by_depth = getattr(graph, "_nodes_by_depth", None)
    if graph is None or nodes_by_depth is None:
        return None
    calls = []
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                calls.append(Call(node))
    return list(graph.inputs), list(graph.outputs), calls


def application_layers():
    """The unexported layer classes of keras.applications models, by role.

    Returns:
        A dict: `"channelwise"` (ConvNeXt's `LayerScale`, `StochasticDepth`)
        and `"scaled_sum"` (InceptionResNetV2's `x + scale * r`), each a
        list of classes (empty where this Keras lacks them).
    """
    found = {"channelwise": [], "scaled_sum": []}
    try:
        from keras.src.applications import convnext

        found["channelwise"] += [convnext.LayerScale, convnext.StochasticDepth]
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    try:
        from keras.src.applications import inception_resnet_v2

        found["scaled_sum"].append(inception_resnet_v2.CustomScaleLayer)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return found


class ValueScaledAttention(keras.layers.MultiHeadAttention):
    """`MultiHeadAttention` whose projected values go through
    `scale_values(value, training)` (shape `(batch, ..., heads,
    value_dim)`) before they are attended to: a per-head factor there is
    a factor on that head's output."""

    def scale_values(self, value, training=None):
        return value

    def _compute_attention(
        self, query, key, value, attention_mask=None, training=None, *args, **kwargs
    ):
        value = self.scale_values(value, training)
        return super()._compute_attention(
            query, key, value, attention_mask, training, *args, **kwargs
        )


class ValueScaledGroupAttention(keras.layers.GroupQueryAttention):
    """`GroupQueryAttention` whose projected values go through
    `scale_values(value, training)` before they are attended to, shaped
    `(batch, length, key_value_heads, repeats, head_dim)`: the values of
    each key/value head, repeated for each of its query heads."""

    def scale_values(self, value, training=None):
        return value

    def _compute_attention(
        self, query, key, value, attention_mask=None, training=None, **kwargs
    ):
        shape = keras.ops.shape(value)
        grouped = keras.ops.reshape(
            value,
            (shape[0], shape[1], self.num_key_value_heads, self.num_repeats, shape[3]),
        )
        value = keras.ops.reshape(self.scale_values(grouped, training), shape)
        return super()._compute_attention(
            query,
            key,
            value,
            attention_mask=attention_mask,
            training=training,
            **kwargs,
        )


def init_arguments(layer):
    """The constructor arguments of `layer` read from its attributes of the
    same names (`units` or `_units`), for a layer whose config does not
    read back (keras-hub's attention layers); None where a required one is
    missing. Base layer arguments (name, dtype, trainable) are left out."""
    try:
        params = inspect.signature(type(layer).__init__).parameters
    except (TypeError, ValueError):
        return None
    found = {}
    for param, spec in list(params.items())[1:]:
        if spec.kind in (spec.VAR_KEYWORD, spec.VAR_POSITIONAL):
            continue
        for attr in (param, f"_{param}"):
            if attr in vars(layer):
                found[param] = vars(layer)[attr]
                break
        else:
            if spec.default is spec.empty:
                return None
    return found


def keep_config(layer, config):
    """Makes `layer.get_config()` return `config`: the arguments it was
    rebuilt from, where its class's own config does not read back
    (keras-hub's layers that record derived values, or have none), so that
    a model holding it saves to `.keras` and reloads."""
    config = {
        key: value
        if isinstance(value, (int, float, str, bool, type(None), list, tuple, dict))
        else keras.saving.serialize_keras_object(value)  # a dtype policy...
        for key, value in config.items()
    }
    object.__setattr__(layer, "get_config", lambda: dict(config))
    return layer


def built_by_call(layer):
    """Saves `layer` without a build config where its class has no `build`
    but it holds sublayers, which it builds by calling itself (keras-hub's
    `RelativeEmbedding`): given one, a loaded copy would be marked built
    without them (Keras's default `build` builds nothing); without one,
    the loaded model calls it, and that builds them."""
    if (
        isinstance(layer, keras.layers.Layer)
        and getattr(type(layer).build, "_is_default", False)
        and layer._layers
    ):
        object.__setattr__(layer, "get_build_config", lambda: None)
    return layer


def has_kept_config(layer):
    """Whether `layer`'s config is one `keep_config` gave it."""
    return "get_config" in vars(layer)


def attribute(layer, name):
    """A layer's attribute `name`, public or underscored (keras-hub's
    attention layers differ), or None."""
    for attr in (name, f"_{name}"):
        value = getattr(layer, attr, None)
        if value is not None:
            return value
    return None


def scalar_factor(op, args, kwargs):
    """`(x, c)` if `op` is `keras.ops.multiply` of a symbolic tensor `x` by
    a scalar constant `c` (a number), else None. Keras marks such a
    product sparse (`Multiply.compute_output_spec` takes a constant for a
    sparse tensor), which breaks the layers after it when a saved model is
    rebuilt: callers emit a `Rescaling(c)` instead, the same product."""
    from keras.src.ops.numpy import Multiply

    if not isinstance(op, Multiply) or kwargs or len(args) != 2:
        return None
    for x, c in (args, args[::-1]):
        if (
            isinstance(x, keras.KerasTensor)
            and not isinstance(c, keras.KerasTensor)
            and "float" in str(x.dtype)
        ):
            try:
                value = np.asarray(keras.ops.convert_to_numpy(c))
            except Exception:
                return None
            if value.ndim == 0:
                return x, float(value)
    return None


def mark_dense(tensor):
    """Clears the `sparse` flag of a symbolic tensor that holds dense values
    (Keras sets it on `x * eager_constant`)."""
    tensor._sparse = False


def traced_output_spec(layer, args, kwargs):
    """The output spec of calling `layer` (built) on specs of known shapes,
    traced through its `call` (an `EinsumDense` answers from its configured
    `output_shape`, which may leave a length open)."""
    from keras.src import backend

    return backend.compute_output_spec(layer.call, *args, **kwargs)


@contextlib.contextmanager
def values_scaled(layer, scale):
    """While in the block, `layer`'s `_compute_attention(query, key, value,
    ...)` (the hook of keras-hub's attention layers, as of Keras's) attends
    to `scale(value)` instead of `value`."""
    method = type(layer)._compute_attention

    def scaled(query, key, value, *args, **kwargs):
        return method(layer, query, key, scale(value), *args, **kwargs)

    object.__setattr__(layer, "_compute_attention", scaled)
    try:
        yield
    finally:
        object.__delattr__(layer, "_compute_attention")


def has_attention_hook(layer):
    """Whether `layer` attends through `_compute_attention(query, key,
    value, ...)` (Keras's and keras-hub's attention layers)."""
    return callable(getattr(type(layer), "_compute_attention", None))


def attention_projections(layer):
    """The `(query, key, value, output)` `EinsumDense` layers of a built
    `MultiHeadAttention`, `GroupQueryAttention` or keras-hub attention layer
    (Gemma's have public names, Mistral's and Qwen's underscored ones)."""
    if isinstance(layer, keras.layers.MultiHeadAttention) or hasattr(
        layer, "query_dense"
    ):
        return layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense
    return layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense


def renamed_copy(layer, name):
    """A copy of a layer without weights (one that Keras cannot rebuild
    from its config: keras-hub's `DropPath`) under another name, with no
    calls recorded yet."""
    new = object.__new__(type(layer))  # `copy.copy` would go through the config
    new.__dict__.update(layer.__dict__)
    new.name = name
    new._inbound_nodes = []
    new._outbound_nodes = []
    return new
