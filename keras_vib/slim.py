"""Slimming: rebuild a gated model with its closed units physically removed.

`graph.analyze` says which channel of which tensor survives and where each
gate's scale goes (`graph.plan_folds`); each layer kind's handler
(`keras_vib.handlers`) does its own weight surgery through the `SlimContext`
below, which walks the graph once (`graph.rebuild`) and assembles a
functional model of stock Keras layers. The same walk, without building
layers, counts the slim model's parameters for `compression_report`.
"""

import contextlib

import keras
import numpy as np

from keras_vib import _validate, graph
from keras_vib.gates import gates as _gates_of
from keras_vib.gates import rounded_mask
from keras_vib.handlers import COUPLED, MIXING, OPAQUE, scale_layer
from keras_vib.handlers.base import combine_scales
from keras_vib.handlers.kernels import FLOAT
from keras_vib.layers import SelectFeatures

__all__ = ["SelectFeatures", "slim_model", "kept_input_indices"]


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
        rule = analysis.rule(node)
        if rule.kind != OPAQUE:
            continue
        for t in node.inputs:
            info = analysis.tensors[t]
            if not info.present.all():
                raise ValueError(
                    f"Cannot slim through {graph.describe(node.layer)}: it "
                    f"reads {info.channels} channels of which gates closed "
                    f"{int((~info.present).sum())}, and "
                    f"{rule.reason}. Move the gate "
                    "so that it does not feed this layer, or keep those channels "
                    "open. The model was not changed."
                )


def _constants(analysis):
    """Values of the constant channels that layers fold into their biases.

    Returns a dict: tensor key -> float64 vector over its channels (0 where
    the channel is not a folded constant).
    """
    wanted = []
    for node in analysis.nodes:
        if analysis.rule(node).kind != MIXING:
            continue
        if not any(analysis.tensors[t].present.any() for t in node.outputs):
            continue
        for t in node.inputs:
            info = analysis.tensors[t]
            if (~info.present & ~info.zero).any() and t not in wanted:
                wanted.append(t)
    if not wanted:
        return {}
    feeds = []
    for t in analysis.inputs:
        x = analysis.symbols[t]
        shape = (1,) + tuple(d if d is not None else 32 for d in x.shape[1:])
        feeds.append(np.zeros(shape, dtype=x.dtype))
    values = graph.evaluate(analysis.graph, feeds, wanted)
    constants = {}
    for t, value in zip(wanted, values):
        info = analysis.tensors[t]
        first = np.asarray(value).reshape(-1, info.channels)[0]
        constants[t] = np.where(info.present | info.zero, 0.0, first).astype(FLOAT)
    return constants


class _Placeholder:
    """Stands for a slim tensor when the builder only counts."""


_COUNTED = _Placeholder()


class SlimContext:
    """Emits the slim layers, as the handlers ask (their `slim(node, ctx)`).

    With `build=False` no layer is called: it only adds up the parameters
    of the layers the handlers emit (`params`), which is how
    `compression_report` predicts the slim model's parameter count.

    What a handler's `slim(node, ctx)` uses:

    - `present(key)`: the kept channels of a tensor (boolean mask);
      `rule(node)`: the node's `Rule`;
    - `slim_kernel(node, kernel, bias)`: a kernel layer's weights in one
      step; `output(node, layer, weights)`: calls the new layer and makes it
      the node's slim output (the two a kernel handler needs);
    - `scale_of(key)` / `set_scale(key, s)`: per channel, the factor by which
      the original tensor differs from the slim one (a gate's scale that
      still has to be folded in downstream);
    - `constant(key)`: values of the dropped constant channels a kernel
      layer folds into its bias; `fold_rows` does it for a kernel, and
      `folds_constants(node)` says whether the layer then needs a bias;
    - `output_scale(node)`: the scale the layer must multiply its kept
      outputs by (a gate folded backward into it), or None;
    - `units(node)`: the kept mask and scale of the units of an inner
      gate (attention heads: `Rule.inner_gate`), which the layer takes;
    - `emit(layer, weights, inputs)`: calls a new layer, sets its weights;
      `call(node, layer, weights)`: calls it as `node` was called;
    - `recall(node)`: calls the layer (a clone) as the original was called;
      `copy(node)`: the same with its weights, for a layer nothing changes;
    - `finish(node, out)`: adds the explicit scale of the node's own gate;
    - `sym[key]`: the slim tensor of each key; `name(base)`: a unique name.
    """

    def __init__(self, analysis, keep_input_shape, build=True):
        self.a = analysis
        self.keep_input_shape = keep_input_shape
        self.build = build
        self.params = 0
        self.tensors = analysis.tensors
        # Counting needs no values: the constants only change biases.
        self.constants = _constants(analysis) if build else {}
        self.sym = {}  # key -> slim tensor (None: no channel left)
        self.scale = {}  # key -> original = scale * slim, per channel
        self.reserved = {node.layer.name for node in analysis.nodes}
        self.names = set()
        self.absorbed = {}  # node index -> scale a backward fold asks it to apply
        # Layers called at several nodes, and what their slims emitted.
        calls = {}
        for node in analysis.nodes:
            calls[id(node.layer)] = calls.get(id(node.layer), 0) + 1
        self._shared = {k for k, n in calls.items() if n > 1}
        self._emitted = {}
        self._current, self._step = None, 0
        for i, (mode, absorber) in analysis.folds.items():
            if mode == graph.BACKWARD:
                s = graph.gate_scale(analysis, analysis.nodes[i])
                previous = self.absorbed.get(absorber)
                self.absorbed[absorber] = s if previous is None else previous * s

    # -- the handlers' interface ------------------------------------------

    def name(self, base, original=False):
        """A unique layer name: an original layer keeps its own."""
        name, k = base, 1
        while name in self.names or (not original and name in self.reserved):
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def _set_weights(self, layer, weights):
        """Counts the weights of a new layer and, when building, sets them."""
        weights = [np.asarray(w, "float32") for w in weights or []]
        self.params += sum(w.size for w in weights)
        if self.build and weights:
            layer.set_weights(weights)

    def _reuse(self, layer, weights):
        """The layer emitted for an earlier call of the same original layer
        (a shared layer: ALBERT's blocks) at the same step of its slim, if
        it has the same config and weights: the slim model shares it too.
        Else None (and `layer` is remembered)."""
        if self._current is None or id(self._current.layer) not in self._shared:
            return None
        key = (id(self._current.layer), self._step)
        self._step += 1
        if not isinstance(layer, keras.layers.Layer):
            return None
        weights = [np.asarray(w, "float32") for w in weights or []]
        try:
            config = layer.get_config()
            config.pop("name", None)
        except NotImplementedError:  # a stateless layer without config
            config = None
        before = self._emitted.get(key)
        if before is not None:
            old, old_config, old_weights = before
            if (
                type(old) is type(layer)
                and old_config == config
                and len(old_weights) == len(weights)
                and all(np.array_equal(a, b) for a, b in zip(old_weights, weights))
            ):
                return old
        self._emitted[key] = (layer, config, weights)
        return None

    def emit(self, layer, weights, inputs):
        """Calls a new layer on slim tensors and sets its weights."""
        shared = self._reuse(layer, weights)
        if shared is not None:
            return shared(inputs) if self.build else _COUNTED
        if not self.build:
            out = _COUNTED
        elif weights:
            with _numpy_initializers(layer):  # all of them are overwritten
                out = layer(inputs)
        else:
            out = layer(inputs)
        self._set_weights(layer, weights)
        return out

    def present(self, key):
        return self.tensors[key].present

    def scale_of(self, key):
        if key not in self.scale:
            self.scale[key] = np.ones(self.tensors[key].channels, FLOAT)
        return self.scale[key]

    def set_scale(self, key, scale):
        self.scale[key] = np.asarray(scale, FLOAT)

    def constant(self, key):
        return self.constants.get(key)

    def folds_constants(self, node):
        """Whether the kernel layer of `node` folds dropped constant input
        channels into its bias (it then needs one)."""
        return graph.folds_constants(self.a, node)

    def rule(self, node):
        """The `Rule` of `node`."""
        return self.a.rule(node)

    def fold_rows(self, kernel, bias, key):
        """Applies the input scale and folds the constant input channels.

        `kernel` has the input channels on axis -2 (Dense: (in, out); conv:
        (..., in, out)). Returns the kernel restricted to the present input
        channels and the bias with the constants folded in.
        """
        present = self.present(key)
        scale = self.scale_of(key)
        const = self.constant(key)
        if const is not None and const.any():
            window = kernel.sum(axis=tuple(range(kernel.ndim - 2)))  # (in, out)
            bias = bias + const @ window
        kernel = np.take(kernel, np.flatnonzero(present), axis=-2)
        kernel = kernel * scale[present][:, None]
        return kernel, bias

    def slim_kernel(self, node, kernel, bias):
        """A kernel layer's weights for the slim model, in one step.

        `fold_rows` on the node's first input, then the kept output columns
        only, multiplied by `output_scale(node)`. `kernel` has the input
        channels on axis -2 and the outputs on -1; `bias` is a vector over
        the outputs (zeros for a layer without bias).

        Returns:
            `(kernel, bias)`, float64.
        """
        kernel, bias = self.fold_rows(kernel, bias, node.inputs[0])
        present = self.present(node.outputs[0])
        kernel, bias = kernel[..., present], bias[present]
        s = self.output_scale(node)
        if s is not None:
            kernel, bias = kernel * s, bias * s
        return kernel, bias

    def output(self, node, layer, weights):
        """Calls the new `layer` (with `weights`) on the slim first input of
        `node`, adds its gate's explicit scale if any (`finish`), and makes
        it the slim version of the node's output."""
        out = self.emit(layer, weights, self.sym[node.inputs[0]])
        self.sym[node.outputs[0]] = self.finish(node, out)

    def output_scale(self, node):
        """The scale `node`'s slim layer applies to its kept outputs, or None.

        A gate folded backward into it, its own gate's included; its own
        gate folded forward is recorded as the output's scale instead.
        """
        s = self.absorbed.get(node.index)  # its own gate's too, if backward
        t_out = node.outputs[0]
        if node.index in self.a.folds:
            mode = self.a.folds[node.index][0]
            g = graph.gate_scale(self.a, node)
            if mode == graph.FORWARD:
                scale = np.ones(len(g), FLOAT)
                present = self.present(t_out)
                scale[present] = g[present]
                self.scale[t_out] = scale
        return None if s is None else s[self.present(t_out)]

    def finish(self, node, out):
        """Adds the per-channel scale layer of a gate folded nowhere."""
        if node.index not in self.a.folds:
            return out
        if self.a.folds[node.index][0] != graph.EXPLICIT:
            return out
        present = self.present(node.outputs[0])
        coupled = self.rule(node).kind == COUPLED
        scale = (self.scale_of(node.inputs[0]) if coupled else 1.0) * (
            graph.gate_scale(self.a, node)
        )
        layer, weights = scale_layer(
            np.broadcast_to(scale, present.shape)[present],
            self.name(f"{node.layer.name}_scale"),
            node.layer.dtype_policy,
        )
        return self.emit(layer, weights, out)

    def combined_scale(self, node):
        """The output scale of a coupled node from its inputs' scales."""
        rule = self.rule(node)
        scales = []
        for t, src in zip(node.inputs, rule.sources):
            s = self.scale_of(t)[np.maximum(src, 0)]
            scales.append(np.where(src >= 0, s, 1.0))
        return combine_scales(rule, scales, node.layer.name)

    def units(self, node):
        """`(kept, scale)` of the units of `node`'s inner gate (attention
        heads): boolean and float64 arrays over them, `scale` the gate's
        `mu` (0 where closed); all kept, scale 1, for a call without one."""
        gate = self.a.gate(node)
        if gate is None or not self.rule(node).inner_gate:
            return None
        return self.a.masks[node.index], graph.gate_scale(self.a, node)

    def call(self, node, layer, weights):
        """Calls the new `layer` as `node` was called (on the slim tensors)
        and sets its `weights`; returns its outputs."""
        return self._call(node, layer, weights)

    def _call(self, node, layer, weights):
        """Calls `layer` as `node` was called; returns its slim outputs."""
        shared = self._reuse(layer, weights)
        if shared is not None:
            if not self.build:
                return [_COUNTED] * len(node.outputs)
            values = {t: self.sym[t] for t in node.inputs}
            return graph.call(node, shared, values)
        if self.build:
            values = {t: self.sym[t] for t in node.inputs}
            outputs = graph.call(node, layer, values)
        else:
            outputs = [_COUNTED] * len(node.outputs)
        self._set_weights(layer, weights)
        return outputs

    def recall(self, node):
        """Calls a clone of the layer as the original was (weights kept)."""
        self.set_scale(node.outputs[0], self.combined_scale(node))
        new = self._clone(node)
        weights = [keras.ops.convert_to_numpy(w) for w in new_weights(node.layer)]
        self.sym[node.outputs[0]] = self._call(node, new, weights)[0]

    def copy(self, node):
        """A layer no gate changes: copied with its weights, called as before."""
        layer = node.layer
        for t in node.inputs:
            if self.build and not np.all(self.scale_of(t) == 1.0):
                raise ValueError(
                    f"Cannot slim through {graph.describe(layer)}: a gate's "
                    "scale would have to pass through it."
                )
        new = self._clone(node)
        weights = [keras.ops.convert_to_numpy(w) for w in new_weights(layer)]
        for t, out in zip(node.outputs, self._call(node, new, weights)):
            self.sym[t] = out

    def _clone(self, node):
        layer = node.layer
        if not self.build:
            return layer
        return graph.clone(layer, self.name(layer.name, original=True))

    def pass_on(self, node):
        """A layer the slim model leaves out: its input goes on as its
        output (with its scale)."""
        t_in, t_out = node.inputs[0], node.outputs[0]
        self.scale[t_out] = self.scale_of(t_in)
        self.sym[t_out] = self.sym[t_in]

    def gate(self, node):
        """A standalone `VIBGate`: folded away, or an explicit scale."""
        t_in, t_out = node.inputs[0], node.outputs[0]
        mode = self.a.folds[node.index][0]
        s = graph.gate_scale(self.a, node)
        scale_in = self.scale_of(t_in)
        x = self.sym[t_in]
        if mode == graph.FORWARD:
            self.scale[t_out] = scale_in * s
            self.sym[t_out] = x
        elif mode == graph.BACKWARD:
            self.scale[t_out] = scale_in
            self.sym[t_out] = x
        else:
            self.sym[t_out] = self.finish(node, x)

    # -- the walk --------------------------------------------------------

    def inputs(self):
        new_inputs, values = [], {}
        for t in self.a.inputs:
            x = self.a.symbols[t]
            present = self.present(t)
            shape = tuple(x.shape[1:])
            name = getattr(x, "name", None)
            keep = present.all() or self.keep_input_shape
            if not keep:
                shape = shape[:-1] + (int(present.sum()),)
            inp = keras.Input(shape=shape, dtype=x.dtype, name=name)
            out = inp
            if keep and not present.all():
                select = SelectFeatures(
                    np.flatnonzero(present), name=self.name(f"{name}_select")
                )
                out = self.emit(select, None, inp)
            new_inputs.append(inp)
            values[t] = out
        return new_inputs, values

    def node(self, node, values):
        self.sym = values
        self._current, self._step = node, 0
        # A tensor of unknown channels (an attention mask of any length)
        # is never cut: it stays.
        if not any(
            self.present(t).any() or not self.tensors[t].channels for t in node.outputs
        ):
            return [None] * len(node.outputs)
        if node.handler.left_out:
            self.pass_on(node)
        elif self.rule(node).kind == OPAQUE:
            self.copy(node)
        else:
            node.handler.slim(node, self)
        return [self.sym[t] for t in node.outputs]

    def run(self):
        if self.build:
            new_inputs, values = self.inputs()
        else:
            new_inputs, values = [], {t: _COUNTED for t in self.a.inputs}
        values = graph.rebuild(self.a.graph, values, self.node)
        return new_inputs, [values[t] for t in self.a.outputs]


def new_weights(layer):
    """The weights a copied layer carries (none for a `keras.ops` call)."""
    return getattr(layer, "weights", [])


def slim_params(analysis):
    """The parameter count of the slim model of an analysed model."""
    builder = SlimContext(analysis, keep_input_shape=True, build=False)
    builder.run()
    return builder.params


class _NumpyZeros(keras.initializers.Initializer):
    """Zeros made by numpy: no backend op to compile (JAX compiles every
    random initializer per shape, seconds for a handful of layers)."""

    def __call__(self, shape, dtype=None):
        zeros = np.zeros(shape, keras.backend.standardize_dtype(dtype or "float32"))
        if keras.backend.backend() == "jax":
            # Placed as it is: `jnp.asarray` would compile a conversion per
            # shape (a fifth of a second for LeNet-5's four layers).
            import jax

            return jax.device_put(zeros)
        return zeros


@contextlib.contextmanager
def _numpy_initializers(layer):
    """Builds `layer` with numpy zeros in place of its initializers, for
    weights that are set right after; its own initializers come back (its
    config is unchanged)."""
    saved = {
        name: value
        for name, value in vars(layer).items()
        if name.endswith("_initializer")
        and isinstance(value, keras.initializers.Initializer)
    }
    for name in saved:
        setattr(layer, name, _NumpyZeros())
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(layer, name, value)


def rounded_masks(model, round_to: int) -> dict:
    """Each gate's kept units, their count made a multiple of `round_to`.

    The count goes to the nearest multiple (half-way: up), at least
    `round_to` where any unit is kept and at most the gate's units: the
    closed units of lowest `log_alpha` reopen, or the open units of highest
    close, as few as it takes. A gate that keeps nothing keeps nothing; one
    with fewer units than `round_to` keeps them all. The gates are not
    changed.

    Args:
        model: a model with keras_vib gates.
        round_to: positive int, the multiple (4, 8 or 16: what a runtime's
            kernels take in one vector).

    Returns:
        A dict `id(gate) -> kept mask`, as `graph.analyze` takes it.
    """
    round_to = _validate.integer("round_to", round_to, minimum=1)
    return {
        id(gate): rounded_mask(
            gate.kept_mask(), keras.ops.convert_to_numpy(gate.log_alpha()), round_to
        )
        for _, gate in _gates_of(model)
    }


def slim_model(
    model, keep_input_shape: bool = True, round_to: int | None = None
) -> keras.Model:
    """Rebuilds `model` with every closed neuron and channel removed.

    The result is a new functional `keras.Model` of stock Keras layers
    (`Dense`, `Conv2D`, `BatchNormalization`, pooling, `Add`...), in which
    the closed units of every gate are gone from their layer, and the
    matching input rows or slices are gone from every layer that reads them
    (through `Flatten`, pooling, `Add`, `Concatenate`, `DepthwiseConv2D`,
    `SeparableConv2D`, raw `keras.ops` calls...). The kept gate means `mu`
    are folded into neighbouring weights (into the layer before the gate
    when its activation allows, else into the layers after it, else into a
    per-channel scale `BatchNormalization`), and the constant value a closed
    unit leaves behind is folded into downstream biases, so the slim model
    computes what `model(x, training=False)` computes. Nested models are
    flattened: the slim model is one functional graph. The original model
    is not modified.

    An input gate that closed input features: by default the slim model
    still takes the original input and starts with a `SelectFeatures`
    layer (the one keras_vib layer it may hold; load such a model after
    `import keras_vib`). With `keep_input_shape=False` it takes only the
    kept features: feed it `x[..., kept_input_indices(model)[0]]`.

    With `round_to=k`, each gate keeps a multiple of `k` units (the
    runtime's kernels run whole vectors of 4, 8 or 16 channels): the closed
    units of lowest `log_alpha` reopen, or the open units of highest close,
    as few as it takes (`rounded_masks`); the slim model then computes what
    the gated model computes with those units open or closed.

    Args:
        model: a built Sequential or functional model with keras_vib gates.
        keep_input_shape: whether the slim model takes the original inputs.
        round_to: optional positive int, the multiple each gate's kept count
            is rounded to (None: as the gates have it).

    Returns:
        The slim `keras.Model`. `keras_vib.compression_report(slim,
        reference=model)` measures it against the gated model.

    Raises:
        ValueError: if a layer keras_vib cannot see through (an LSTM, a
            Lambda, a custom layer with no registered handler) would lose
            channels: the error names it.

    Example:

    >>> slim = keras_vib.slim_model(model)
    >>> slim.count_params() < model.count_params()
    True
    """
    keep_input_shape = _validate.boolean("keep_input_shape", keep_input_shape)
    masks = None if round_to is None else rounded_masks(model, round_to)
    return slim_masked(model, masks, keep_input_shape)


def slim_masked(model, masks, keep_input_shape=True):
    """`slim_model` with the kept units of `masks` (`id(gate)` -> kept
    mask, as `rounded_masks` gives; None or a missing gate: the gate's own)
    instead of the gates' own. The gates are not changed."""
    analysis = graph.analyze(model, masks)
    _check_supported(analysis)
    builder = SlimContext(analysis, keep_input_shape)
    inputs, outputs = builder.run()
    return keras.Model(
        analysis.graph.pack("input", inputs),
        analysis.graph.pack("output", outputs),
        name=f"{model.name}_slim",
    )
