"""Slimming: rebuild a gated model with its closed units physically removed.

`graph.analyze` says which channel of which tensor survives and where each
gate's scale goes (`graph.plan_folds`); this module does the weight
surgery and builds a functional model of stock Keras layers.
"""

import keras
import numpy as np

from keras_vib import graph
from keras_vib.layers import VIBConv2D, VIBDense, VIBGate

__all__ = ["SelectFeatures", "slim_model", "kept_input_indices", "clone_layer"]

_FLOAT = "float64"  # surgery in float64, weights cast back to float32


@keras.saving.register_keras_serializable(package="keras_vib")
class SelectFeatures(keras.layers.Layer):
    """Keeps the given indices of the last axis (an input gate's survivors).

    Args:
        indices: list of ints, the kept indices of the last axis.
        **kwargs: base layer keyword arguments.

    Example:

    >>> layer = keras_vib.slim.SelectFeatures([0, 2])
    >>> layer(np.array([[1.0, 2.0, 3.0]])).shape
    (1, 2)
    """

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]
        if not self.indices:
            raise ValueError(
                "Expected `indices` to hold at least one index. "
                f"Received: indices={indices!r}"
            )

    def call(self, inputs):
        return keras.ops.take(inputs, self.indices, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def get_config(self):
        config = super().get_config()
        config["indices"] = list(self.indices)
        return config


def clone_layer(layer, name=None):
    """A new layer with the config of `layer` (weights are set once built).

    A stateless layer Keras will not rebuild from its config (a `Lambda` in
    safe mode) is returned as it is, to be called again.
    """
    config = layer.get_config()
    if name is not None:
        config["name"] = name
    try:
        return type(layer).from_config(config)
    except Exception:
        if layer.weights:
            raise
        return layer


def kept_input_indices(model):
    """The indices of the input features a slim model still reads.

    With `slim_model(model, keep_input_shape=False)` the slim model takes
    `x[..., indices]` for each input `x` instead of `x`.

    Args:
        model: the gated model (before slimming).

    Returns:
        A list with one numpy int array per model input.
    """
    analysis = graph.analyze(model)
    return [np.flatnonzero(analysis.tensors[t].present) for t in analysis.inputs]


def _check_supported(analysis):
    """Raises if a layer the slimmer cannot see through loses channels."""
    for node in analysis.nodes:
        if node.kind != graph.OPAQUE:
            continue
        for t in node.inputs:
            info = analysis.tensors[t]
            if not info.present.all():
                layer = node.layer
                raise ValueError(
                    f"Cannot slim through layer {layer.name!r} of class "
                    f"{type(layer).__name__}: it reads {info.channels} channels "
                    f"of which gates closed {int((~info.present).sum())}, and "
                    "keras_vib does not know how it maps its input channels to "
                    "its outputs. Move the gate so that it does not feed this "
                    "layer, or keep those channels open. The model was not "
                    "changed."
                )


def _constants(analysis):
    """Values of the constant channels that layers fold into their biases.

    Returns a dict: tensor id -> float64 vector over its channels (0 where the
    channel is not a folded constant).
    """
    wanted = []
    for node in analysis.nodes:
        if node.kind != graph.MIXING:
            continue
        if not any(analysis.tensors[t].present.any() for t in node.outputs):
            continue
        for t in node.inputs:
            info = analysis.tensors[t]
            if (~info.present & ~info.zero).any() and t not in wanted:
                wanted.append(t)
    if not wanted:
        return {}
    graph_inputs = [analysis.symbols[t] for t in analysis.inputs]
    probe = keras.Model(graph_inputs, [analysis.symbols[t] for t in wanted])
    feeds = [
        np.zeros(
            (1,) + tuple(d if d is not None else 32 for d in x.shape[1:]),
            dtype=x.dtype,
        )
        for x in graph_inputs
    ]
    values = keras.tree.flatten(probe(feeds, training=False))
    constants = {}
    for t, value in zip(wanted, values):
        info = analysis.tensors[t]
        first = keras.ops.convert_to_numpy(value).reshape(-1, info.channels)[0]
        constants[t] = np.where(info.present | info.zero, 0.0, first).astype(_FLOAT)
    return constants


def _gather_mask(mask, src):
    """`mask[src]`, False where `src` is -1."""
    return np.where(src >= 0, mask[np.maximum(src, 0)], False)


def _affine_bn(scale, name, dtype):
    """A BatchNormalization computing `scale * x` exactly (inference)."""
    eps = 1e-3
    # Not trainable: Keras then runs it in inference mode, so that fitting
    # the slim model does not turn the fixed scale into a batch norm.
    layer = keras.layers.BatchNormalization(
        epsilon=eps, name=name, dtype=dtype, trainable=False
    )
    n = len(scale)
    weights = [
        np.asarray(scale, "float32"),
        np.zeros(n, "float32"),
        np.zeros(n, "float32"),
        np.full(n, 1.0 - eps, "float32"),
    ]
    return layer, weights


class _Builder:
    """Walks the analysed graph and emits the slim layers."""

    def __init__(self, analysis, keep_input_shape):
        self.a = analysis
        self.keep_input_shape = keep_input_shape
        self.tensors = analysis.tensors
        self.constants = _constants(analysis)
        self.sym = {}  # tensor id -> slim Keras tensor (None: no channel left)
        self.scale = {}  # tensor id -> original = scale * slim, per channel
        self.reserved = {node.layer.name for node in analysis.nodes}
        self.names = set()
        self.absorbed = {}  # node index -> scale a backward fold asks it to apply
        for i, (mode, absorber) in analysis.folds.items():
            if mode == graph.BACKWARD:
                gate_layer = analysis.nodes[i].layer
                self.absorbed[absorber] = graph.gate_scale(gate_layer)

    # -- helpers ---------------------------------------------------------

    def _name(self, base, original=False):
        """A unique layer name: an original layer keeps its own."""
        name, k = base, 1
        while name in self.names or (not original and name in self.reserved):
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def _emit(self, layer, weights, inputs):
        """Calls a new layer on slim tensors and sets its weights."""
        out = layer(inputs)
        if weights is not None:
            layer.set_weights([np.asarray(w, "float32") for w in weights])
        return out

    def _present(self, t):
        return self.tensors[t].present

    def _scale_of(self, t):
        if t not in self.scale:
            self.scale[t] = np.ones(self.tensors[t].channels, _FLOAT)
        return self.scale[t]

    # -- inputs ----------------------------------------------------------

    def inputs(self):
        new_inputs = []
        for t in self.a.inputs:
            x = self.a.symbols[t]
            present = self._present(t)
            shape = tuple(x.shape[1:])
            name = x.name if hasattr(x, "name") else None
            if present.all() or self.keep_input_shape:
                inp = keras.Input(shape=shape, dtype=x.dtype, name=name)
                out = inp
                if not present.all():
                    select = SelectFeatures(
                        np.flatnonzero(present), name=self._name(f"{name}_select")
                    )
                    out = select(inp)
            else:
                inp = keras.Input(
                    shape=shape[:-1] + (int(present.sum()),), dtype=x.dtype, name=name
                )
                out = inp
            new_inputs.append(inp)
            self.sym[t] = out
        return new_inputs

    # -- the rules -------------------------------------------------------

    def _fold_rows(self, kernel, bias, t):
        """Applies the input scale and folds the constant input channels.

        `kernel` has the input channels on axis -2 (Dense: (in, out); conv:
        (..., in, out)). Returns the kernel restricted to the present input
        channels and the bias with the constants folded in.
        """
        present = self._present(t)
        scale = self._scale_of(t)
        const = self.constants.get(t)
        if const is not None and const.any():
            window = kernel.sum(axis=tuple(range(kernel.ndim - 2)))  # (in, out)
            bias = bias + const @ window
        kernel = np.take(kernel, np.flatnonzero(present), axis=-2)
        kernel = kernel * scale[present][:, None]
        return kernel, bias

    def _mixing(self, i, node):
        layer = node.layer
        t_in, t_out = node.inputs[0], node.outputs[0]
        out_present = self._present(t_out)
        inner = layer
        if isinstance(layer, VIBDense):
            inner = layer.dense
        elif isinstance(layer, VIBConv2D):
            inner = layer.conv
        kernel = keras.ops.convert_to_numpy(inner.kernel).astype(_FLOAT)
        units = kernel.shape[-1]
        bias = (
            keras.ops.convert_to_numpy(inner.bias).astype(_FLOAT)
            if inner.use_bias
            else np.zeros(units, _FLOAT)
        )
        kernel, bias = self._fold_rows(kernel, bias, t_in)
        kernel, bias = kernel[..., out_present], bias[out_present]
        use_bias = inner.use_bias or graph.folds_constants(node, self.tensors)

        bn = layer.bn if isinstance(layer, VIBConv2D) else None
        bn_weights = self._bn_weights(bn, out_present) if bn is not None else None
        s_backward = self.absorbed.get(i)
        if node.gate is not None:
            mode = self.a.folds[i][0]
            s = graph.gate_scale(layer)
            if mode == graph.BACKWARD:
                s_backward = s
            elif mode == graph.FORWARD:
                scale = np.ones(len(out_present), _FLOAT)
                scale[out_present] = s[out_present]
                self.scale[t_out] = scale
        if s_backward is not None:
            s_kept = s_backward[out_present]
            if bn_weights is not None:
                bn_weights[0] = bn_weights[0] * s_kept
                bn_weights[1] = bn_weights[1] * s_kept
            else:
                kernel, bias = kernel * s_kept, bias * s_kept

        activation = keras.activations.serialize(inner.activation)
        if isinstance(layer, VIBConv2D) and bn is not None:
            activation = keras.activations.serialize(layer.activation)
        units = int(out_present.sum())
        name = self._name(layer.name, original=True)
        dtype = layer.dtype_policy
        if isinstance(inner, keras.layers.Dense):
            new = keras.layers.Dense(
                units,
                activation=activation,
                use_bias=use_bias,
                name=name,
                dtype=dtype,
            )
        else:
            config = inner.get_config()
            config.update(
                name=name,
                filters=units,
                use_bias=use_bias,
                activation=None if bn is not None else activation,
            )
            new = type(inner).from_config(config)
        x = self.sym[t_in]
        out = self._emit(new, [kernel, bias] if use_bias else [kernel], x)
        if bn is not None:
            out = self._emit(
                keras.layers.BatchNormalization(
                    epsilon=bn.epsilon, name=self._name(f"{layer.name}_bn"), dtype=dtype
                ),
                bn_weights,
                out,
            )
            out = keras.layers.Activation(
                activation, name=self._name(f"{layer.name}_act"), dtype=dtype
            )(out)
        if node.gate is not None and self.a.folds[i][0] == graph.EXPLICIT:
            s = graph.gate_scale(layer)[out_present]
            scale_layer, weights = _affine_bn(
                s, self._name(f"{layer.name}_scale"), dtype
            )
            out = self._emit(scale_layer, weights, out)
        self.sym[t_out] = out

    def _bn_weights(self, bn, present):
        """[gamma, beta, moving_mean, moving_variance] of the kept channels."""
        n = len(present)
        gamma = (
            keras.ops.convert_to_numpy(bn.gamma) if bn.scale else np.ones(n)
        ).astype(_FLOAT)
        beta = (
            keras.ops.convert_to_numpy(bn.beta) if bn.center else np.zeros(n)
        ).astype(_FLOAT)
        mean = keras.ops.convert_to_numpy(bn.moving_mean).astype(_FLOAT)
        var = keras.ops.convert_to_numpy(bn.moving_variance).astype(_FLOAT)
        return [gamma[present], beta[present], mean[present], var[present]]

    def _batch_norm(self, i, node):
        layer = node.layer
        t_in, t_out = node.inputs[0], node.outputs[0]
        present = self._present(t_out)
        gamma, beta, mean, var = self._bn_weights(layer, present)
        scale = self._scale_of(t_in)[present]
        if not np.all(scale == 1.0):
            # gamma * (s x - m) / sd + beta == (gamma s) (x - 0) / sd + beta'
            sd = np.sqrt(var + layer.epsilon)
            beta = beta - gamma * mean / sd
            gamma = gamma * scale
            mean = np.zeros_like(mean)
        s = self.absorbed.get(i)
        if s is not None:
            gamma, beta = gamma * s[present], beta * s[present]
        new = keras.layers.BatchNormalization(
            axis=-1,
            epsilon=layer.epsilon,
            name=self._name(layer.name, original=True),
            dtype=layer.dtype_policy,
        )
        self.sym[t_out] = self._emit(new, [gamma, beta, mean, var], self.sym[t_in])

    def _depthwise(self, i, node):
        layer = node.layer
        t_in, t_out = node.inputs[0], node.outputs[0]
        in_present, out_present = self._present(t_in), self._present(t_out)
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype(_FLOAT)
        scale = self._scale_of(t_in)
        kernel = kernel * scale[None, None, :, None]
        kernel = kernel[:, :, in_present, :]
        weights = [kernel]
        if layer.use_bias:
            bias = keras.ops.convert_to_numpy(layer.bias).astype(_FLOAT)
            weights.append(bias[out_present])
        config = layer.get_config()
        config["name"] = self._name(layer.name, original=True)
        new = type(layer).from_config(config)
        self.sym[t_out] = self._emit(new, weights, self.sym[t_in])

    def _gate(self, i, node):
        t_in, t_out = node.inputs[0], node.outputs[0]
        mode = self.a.folds[i][0]
        s = graph.gate_scale(node.layer)
        scale_in = self._scale_of(t_in)
        x = self.sym[t_in]
        if mode == graph.FORWARD:
            self.scale[t_out] = scale_in * s
            self.sym[t_out] = x
        elif mode == graph.BACKWARD:
            self.scale[t_out] = scale_in
            self.sym[t_out] = x
        else:
            present = self._present(t_out)
            layer, weights = _affine_bn(
                (scale_in * s)[present],
                self._name(f"{node.layer.name}_scale"),
                node.layer.dtype_policy,
            )
            self.sym[t_out] = self._emit(layer, weights, x)

    def _coupled(self, i, node):
        """Channel-wise layers, merges and concatenations: clone and rewire."""
        layer = node.layer
        t_out = node.outputs[0]
        out_present = self._present(t_out)
        scale = np.ones(len(out_present), _FLOAT)
        for t, src in zip(node.inputs, node.sources):
            valid = src >= 0
            scale[valid] = self._scale_of(t)[src[valid]]
        self.scale[t_out] = scale
        live_inputs = [t for t in node.inputs if self.sym.get(t) is not None]
        if isinstance(layer, keras.layers.Concatenate) and len(live_inputs) == 1:
            self.sym[t_out] = self.sym[live_inputs[0]]
            return
        config = layer.get_config()
        config["name"] = self._name(layer.name, original=True)
        if isinstance(layer, keras.layers.Reshape):
            config["target_shape"] = tuple(config["target_shape"][:-1]) + (
                int(out_present.sum()),
            )
        new = type(layer).from_config(config)
        weights = None
        if layer.weights:  # PReLU: per-channel parameters on the last axis
            weights = [
                keras.ops.convert_to_numpy(w)[..., out_present] for w in layer.weights
            ]
        if isinstance(layer, keras.layers.Concatenate):
            args = [self.sym[t] for t in live_inputs]
        elif len(node.inputs) > 1:
            args = [self.sym[t] for t in node.inputs]
        else:
            args = self.sym[node.inputs[0]]
        out = self._emit(new, weights, args)
        if isinstance(layer, keras.layers.Flatten):
            # The flattened features of the kept channels, less those dropped
            # one by one (an input gate after a Flatten).
            flat = _gather_mask(self._present(node.inputs[0]), node.sources[0])
            if not np.array_equal(flat, out_present):
                select = SelectFeatures(
                    np.flatnonzero(out_present[flat]),
                    name=self._name(f"{layer.name}_select"),
                )
                out = select(out)
        self.sym[t_out] = out

    def _opaque(self, i, node):
        """A layer no gate changes: copied with its weights, called as before."""
        layer = node.layer
        for t in node.inputs:
            if not np.all(self._scale_of(t) == 1.0):
                raise ValueError(
                    f"Cannot slim through layer {layer.name!r} of class "
                    f"{type(layer).__name__}: a gate's scale would have to pass "
                    "through it."
                )
        new = clone_layer(layer, self._name(layer.name, original=True))
        mapping = {id(self.a.symbols[t]): self.sym[t] for t in node.inputs}
        args, kwargs = node.keras_node.arguments.fill_in(mapping)
        outputs = new(*args, **kwargs)
        if new is not layer:
            new.set_weights(layer.get_weights())
        outputs = keras.tree.flatten(outputs)
        for t, out in zip(node.outputs, outputs):
            self.sym[t] = out

    def run(self):
        new_inputs = self.inputs()
        for i, node in enumerate(self.a.nodes):
            if not any(self._present(t).any() for t in node.outputs):
                for t in node.outputs:
                    self.sym[t] = None
                continue
            layer = node.layer
            if isinstance(layer, VIBGate):
                self._gate(i, node)
            elif node.kind == graph.MIXING:
                self._mixing(i, node)
            elif isinstance(layer, keras.layers.BatchNormalization):
                self._batch_norm(i, node)
            elif isinstance(layer, keras.layers.DepthwiseConv2D):
                self._depthwise(i, node)
            elif node.kind == graph.COUPLED:
                self._coupled(i, node)
            else:
                self._opaque(i, node)
        outputs = [self.sym[t] for t in self.a.outputs]
        return new_inputs, outputs


def slim_model(model, keep_input_shape: bool = True) -> keras.Model:
    """Rebuilds `model` with every closed neuron and channel removed.

    The result is a new functional `keras.Model` of stock Keras layers
    (`Dense`, `Conv2D`, `BatchNormalization`, pooling, `Add`...), in which
    the closed units of every gate are gone from their layer, and the
    matching input rows or slices are gone from every layer that reads them
    (through `Flatten`, pooling, `Add`, `Concatenate`, `DepthwiseConv2D`...).
    The kept gate means `mu` are folded into neighbouring weights (into the
    layer before the gate when its activation allows, else into the layers
    after it, else into a per-channel scale `BatchNormalization`), and the
    constant value a closed unit leaves behind is folded into downstream
    biases, so the slim model computes what `model(x, training=False)`
    computes. The original model is not modified.

    An input gate that closed input features: by default the slim model
    still takes the original input and starts with a `SelectFeatures`
    layer (the one keras_vib layer it may hold; load such a model after
    `import keras_vib`). With `keep_input_shape=False` it takes only the
    kept features: feed it `x[..., kept_input_indices(model)[0]]`.

    Args:
        model: a built Sequential or functional model with keras_vib gates.
        keep_input_shape: whether the slim model takes the original inputs.

    Returns:
        The slim `keras.Model`. `keras_vib.compression_report(slim)` gives
        the same figures as on `model` while the slim model lives in this
        process (the figures of the original are not saved with it).

    Raises:
        ValueError: if a layer keras_vib cannot see through (an LSTM, a
            Lambda, an unknown custom layer) would lose channels: the error
            names it.

    Example:

    >>> slim = keras_vib.slim_model(model)
    >>> slim.count_params() < model.count_params()
    True
    """
    if not isinstance(keep_input_shape, bool):
        raise ValueError(
            "Expected `keep_input_shape` to be a bool. "
            f"Received: keep_input_shape={keep_input_shape!r}"
        )
    analysis = graph.analyze(model)
    _check_supported(analysis)
    builder = _Builder(analysis, keep_input_shape)
    inputs, outputs = builder.run()
    slim = keras.Model(
        inputs if len(inputs) > 1 else inputs[0],
        outputs if len(outputs) > 1 else outputs[0],
        name=f"{model.name}_slim",
    )
    from keras_vib import report

    slim._keras_vib_source = report.compression_report(model)
    return slim
