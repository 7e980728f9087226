"""The contract every gated model keeps, checked by one function for tests.

`check_contract(model, x, rng)`:

1. the gated clone (`add_gates`, or `model` itself when it has gates)
   computes the original's function with its gates open;
2. with about half of every gate closed (random mu of both signs), the
   slim model computes the gated model's function (1e-5), is made of
   stock layers with no empty tensor, and leaves the gated model as it was;
3. counted on the slim model itself (a model without gates, every unit
   kept): its parameters, its kernel entries (counted from its weights by
   name, without keras_vib) and its own report equal what
   `compression_report(gated)` predicts;
4. on TensorFlow, the slim model's multiply-accumulates counted from its
   traced graph (`count_macs`: TensorFlow's ops and their static shapes,
   no keras_vib) equal the report's `flops`;
5. the slim model reloads from `.keras` with the same function.

Only public keras_vib behaviour is used: `add_gates`, `slim_model`,
`compression_report`, `keras_vib.gates.gates` and the gates' `mu`,
`units`, `set_kept` and `kept_mask`.
"""

import dataclasses
import math

import keras
import numpy as np
from helpers import assert_close as _assert_close

import keras_vib as kv

L = keras.layers

# Weight names (a variable's `name`, the last part of its path) of the
# kernels the report counts, by layer kind: Dense, ConvND, ConvNDTranspose
# and DepthwiseConvND hold a `kernel`, SeparableConvND a `depthwise_kernel`
# and a `pointwise_kernel`, the recurrent layers (LSTM, GRU, SimpleRNN,
# opaque to the analysis, their kernels counted as kept) a `kernel` and a
# `recurrent_kernel`, an `Embedding` its table (`embeddings`), the
# attention layers' projections each a `kernel`.
KERNEL_NAMES = (
    "kernel",
    "depthwise_kernel",
    "pointwise_kernel",
    "recurrent_kernel",
    "embeddings",
    "reverse_embeddings",  # keras-hub's untied output embedding
)

# The layer kinds whose multiply-accumulates the report counts (see
# `compression_report`): the layers the analysis cannot see through (an
# LSTM, say) count their kernels but no FLOPs.
KERNEL_LAYERS = (
    L.Dense,
    L.Conv1D,
    L.Conv2D,
    L.Conv3D,
    L.Conv1DTranspose,
    L.Conv2DTranspose,
    L.Conv3DTranspose,
    L.DepthwiseConv1D,
    L.DepthwiseConv2D,
    L.SeparableConv1D,
    L.SeparableConv2D,
    L.MultiHeadAttention,
    L.GroupQueryAttention,
    L.EinsumDense,  # a Dense on the last axis (Gemma's feed-forward)
)
# Layers whose ops reading no weight count too (an attention's scores and
# weighted sums of values), found by the name scope of the op.
SCOPED_LAYERS = (L.MultiHeadAttention, L.GroupQueryAttention)


def _hub_attention():
    """keras-hub's rotary attention classes whose heads keras_vib cuts (as
    `keras_vib.handlers.hub.ROTARY`), if keras-hub is installed."""
    try:
        from keras_vib.handlers import hub
    except ImportError:
        return ()
    return tuple(hub._classes(*hub.ROTARY))


KERNEL_LAYERS += _hub_attention()
SCOPED_LAYERS += _hub_attention()


# --------------------------------------------------------------------------
# Kernel entries, from the weights


def kernel_entries(model):
    """The kernel entries of `model`, summed over its weights by name."""
    return sum(
        math.prod(v.shape) for v in model.weights if v.name in KERNEL_NAMES
    )  # `model.weights` lists a shared layer's once


# --------------------------------------------------------------------------
# Multiply-accumulates, from the TensorFlow graph


@dataclasses.dataclass
class OpMacs:
    """The multiply-accumulates of one kernel op of a traced graph."""

    op: str  # the op's type, e.g. "Conv2D"
    name: str  # its name, with the names of the calls it is inside
    macs: int
    layer: object  # the layer owning the weight it reads, or None
    in_loop: bool  # inside a while loop's body (runs many times)


def _prod(dims):
    return math.prod(int(d) for d in dims)


def _einsum_macs(equation, shapes):
    """Every index of a two-operand einsum: one multiply-add per tuple."""
    inputs = equation.split("->")[0].split(",")
    if "." in equation or len(inputs) != len(shapes):
        raise NotImplementedError(f"einsum {equation!r}")
    sizes = {}
    for labels, shape in zip(inputs, shapes):
        sizes.update(zip(labels, shape))
    return _prod(sizes.values())


# The ops `_op_macs` counts.
_KERNEL_OPS = {
    "MatMul",
    "BatchMatMul",
    "BatchMatMulV2",
    "BatchMatMulV3",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv2dNative",
    "Conv2DBackpropInput",
    "Conv3DBackpropInputV2",
    "Einsum",
}


def _op_macs(op, attrs, ins, out):
    """Multiply-accumulates of one op from its static shapes (`ins`: the
    shapes of its data inputs, `out`: of its first output), or None for an
    op without them.

    - MatMul `(M, K) x (K, N)`: M * K * N;
    - BatchMatMul: every output entry sums K products;
    - Conv2D, Conv3D (filter `(*window, in / groups, out)`): every output
      entry sums window * in / groups products;
    - DepthwiseConv2dNative (filter `(*window, in, multiplier)`): every
      output entry sums window products;
    - Conv2DBackpropInput, Conv3DBackpropInputV2 (a transposed conv; filter
      `(*window, out, in)`, its third input the layer's input): every input
      entry is spread over window * out outputs;
    - Einsum: one product per tuple of all its indices.
    """
    if op == "MatMul":
        a = ins[0]
        k = a[0] if attrs["transpose_a"].b else a[1]
        return _prod(out) * k
    if op in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        x = ins[0]
        k = x[-2] if attrs["adj_x"].b else x[-1]
        return _prod(out) * k
    if op in ("Conv2D", "Conv3D"):
        return _prod(out) * _prod(ins[1][:-1])
    if op == "DepthwiseConv2dNative":
        return _prod(out) * _prod(ins[1][:-2])
    if op in ("Conv2DBackpropInput", "Conv3DBackpropInputV2"):
        return _prod(ins[2]) * _prod(ins[1][:-1])
    if op == "Einsum":
        return _einsum_macs(attrs["equation"].s.decode(), ins)
    return None


# Ops that pass a weight on unchanged but for its layout or dtype.
_PASS_THROUGH = {
    "Identity",
    "ReadVariableOp",
    "Cast",
    "ExpandDims",
    "Reshape",
    "Squeeze",
    "Transpose",
}


def _shape(proto):
    dims = tuple(d.size for d in proto.dim)
    if proto.unknown_rank or any(d < 0 for d in dims):
        raise ValueError(f"an unknown shape in the traced graph: {dims}")
    return dims


class _Scope:
    """The nodes of the top graph or of one function body, with where its
    arguments come from (a `(scope, input reference)` of the caller)."""

    def __init__(self, nodes, prefix, args=None, arg_shapes=None, in_loop=False):
        self.nodes = {node.name: node for node in nodes}
        self.order = list(nodes)
        self.prefix = prefix
        self.args = args or {}  # argument name -> (caller scope, reference)
        self.arg_shapes = arg_shapes or {}
        self.in_loop = in_loop
        self.consumers = {}
        for node in nodes:
            for ref in _data_inputs(node):
                self.consumers.setdefault(self.split(ref)[0], []).append(node)

    def split(self, ref):
        """`(node name, output index)` of an input reference: `name` and
        `name:i` in the top graph, `name:output_arg:i` in a function (the
        index within the output argument: the first output argument is
        assumed, which every producer of a kernel's inputs has)."""
        parts = ref.split(":")
        return parts[0], int(parts[-1]) if len(parts) > 1 else 0

    def shape(self, ref):
        if ref in self.args:
            if ref in self.arg_shapes:
                return self.arg_shapes[ref]
            caller, outer = self.args[ref]
            return caller.shape(outer)
        name, index = self.split(ref)
        shapes = self.nodes[name].attr["_output_shapes"].list.shape
        return _shape(shapes[index])

    def source(self, ref, captured):
        """The variable handle a reference reads, if it is a weight."""
        while True:
            if ref in self.args:
                caller, outer = self.args[ref]
                return caller.source(outer, captured)
            node = self.nodes[self.split(ref)[0]]
            if node.op == "Placeholder":
                return captured.get(node.name)
            if node.op not in _PASS_THROUGH:
                return None
            ref = _data_inputs(node)[0]


def _data_inputs(node):
    return [ref for ref in node.input if not ref.startswith("^")]


def _result(scope, node):
    """The node giving a kernel op's result: TensorFlow runs a dilated conv
    on blocks (SpaceToBatchND, the conv, BatchToSpaceND); the MACs are
    those of the outputs BatchToSpaceND keeps, not of the blocks' padding.
    """
    consumers = scope.consumers.get(node.name, [])
    if len(consumers) == 1 and consumers[0].op == "BatchToSpaceND":
        return consumers[0]
    return node


def _functions_called(node):
    """Names of the functions an op calls (a call, a loop or a branch)."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names += [f.name for f in value.list.func]
    return names


def _walk(scope, library, captured, owners, out):
    for node in scope.order:
        inputs = _data_inputs(node)
        macs = None
        if node.op in _KERNEL_OPS:
            shapes = [scope.shape(ref) for ref in inputs]
            out_shape = _shape(
                _result(scope, node).attr["_output_shapes"].list.shape[0]
            )
            macs = _op_macs(node.op, node.attr, shapes, out_shape)
        if macs is not None:
            handles = [scope.source(ref, captured) for ref in inputs]
            layers = {owners[h] for h in handles if h is not None}
            if len(layers) > 1:
                raise ValueError(f"{node.name} reads weights of {layers}")
            out.append(
                OpMacs(
                    node.op,
                    scope.prefix + node.name,
                    int(macs),
                    layers.pop() if layers else None,
                    scope.in_loop,
                )
            )
        for name in _functions_called(node):
            fdef = library[name]
            params = [arg.name for arg in fdef.signature.input_arg]
            # A call passes its inputs in order; an `If` or a `Case` has
            # the branch's selector first: the last inputs are the args.
            passed = inputs[len(inputs) - len(params) :]
            arg_shapes = {}
            for i, param in enumerate(params):
                attr = fdef.arg_attr[i].attr if i in fdef.arg_attr else {}
                if "_output_shapes" in attr and attr["_output_shapes"].list.shape:
                    shape = attr["_output_shapes"].list.shape[0]
                    if not shape.unknown_rank and all(d.size >= 0 for d in shape.dim):
                        arg_shapes[param] = _shape(shape)
            inner = _Scope(
                fdef.node_def,
                f"{scope.prefix}{node.name}/",
                {p: (scope, ref) for p, ref in zip(params, passed)},
                arg_shapes,
                scope.in_loop or node.op in ("While", "StatelessWhile"),
            )
            _walk(inner, library, captured, owners, out)


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def count_macs(model, input_shapes=None):
    """The kernel ops of `model`'s TensorFlow graph and their MACs.

    Traces `model(x, training=False)` with `tf.function` on a batch of one
    example (so every count is per example) and walks the graph's
    operations, and those of the functions it calls (Keras runs a grouped
    conv in an XLA-compiled function, a recurrent layer in a while loop):
    MatMul, BatchMatMul, Conv2D, Conv3D, DepthwiseConv2dNative,
    Conv2DBackpropInput, Conv3DBackpropInputV2 and Einsum, from their
    static shapes (see `_op_macs`). Each op is attributed to the layer
    whose weight it reads (through reads, casts and reshapes).

    Args:
        model: a Keras model (TensorFlow backend).
        input_shapes: the shape of one example of each input; the model's
            input shapes by default.

    Returns:
        A list of `OpMacs`.
    """
    import tensorflow as tf

    if input_shapes is None:
        input_shapes = [tuple(t.shape[1:]) for t in model.inputs]
    try:  # the structure the model takes (a dict of named inputs, say)
        structure, dtypes = model.input, [t.dtype for t in model.inputs]
    except (AttributeError, ValueError):  # a Sequential never called
        structure, dtypes = None, ["float32"] * len(input_shapes)
    specs = [
        tf.TensorSpec((1,) + tuple(s), dtype) for s, dtype in zip(input_shapes, dtypes)
    ]
    if isinstance(structure, dict):
        arg = keras.tree.pack_sequence_as(structure, specs)
    else:
        arg = specs[0] if len(specs) == 1 else specs
    function = tf.function(lambda x: model(x, training=False))
    graph = function.get_concrete_function(arg).graph
    owners = {}
    for layer in _layers(model):
        for v in layer.weights:
            owners.setdefault(id(v.value.handle), layer)
    captured = {}
    for external, internal in graph.captures:
        if id(external) in owners:
            captured[internal.op.name] = id(external)
    graph_def = graph.as_graph_def(add_shapes=True)
    library = {f.signature.name: f for f in graph_def.library.function}
    out = []
    _walk(_Scope(graph_def.node, ""), library, captured, owners, out)
    scoped = {
        layer.name: layer
        for layer in _layers(model)
        if isinstance(layer, SCOPED_LAYERS)
    }
    # A weightless op (an attention's scores) belongs to the attention layer
    # whose projections' ops share its scope: `<scope>/query/MatMul` and
    # `<scope>/MatMul` (TensorFlow's scope names need not be layer names).
    scopes = {
        record.name.rsplit("/", 2)[0]: record.layer
        for record in out
        if isinstance(record.layer, SCOPED_LAYERS)
    }
    for record in out:
        if record.layer is None:
            inside = [s for s in scopes if record.name.startswith(s + "/")]
            record.layer = (
                scopes[max(inside, key=len)]
                if inside
                else _scope_owner(record.name, scoped)
            )
        if "/rotary_embedding" in record.name and record.layer is not None:
            # The rotary angles (positions x frequencies): not a kernel's
            # MACs nor the attention's, which the report counts.
            record.layer = None
    return out


def _scope_owner(name, layers):
    """The layer of `layers` (by name) whose call an op's name is inside:
    a scope `name` or `name_<k>` (TensorFlow's unique scopes), or None."""
    for part in name.split("/")[1:-1]:
        if part in layers:
            return layers[part]
        base, _, k = part.rpartition("_")
        if k.isdigit() and base in layers:
            return layers[base]
    return None


def kernel_macs(model, input_shapes=None):
    """Multiply-accumulates per example of `model`'s kernel layers, from its
    TensorFlow graph (`count_macs`): the ops reading a weight of a
    `KERNEL_LAYERS` layer, the kinds the report counts FLOPs for.

    Returns:
        `(total, per_layer)`: an int and a dict layer name -> MACs.
    """
    per_layer = {}
    for record in count_macs(model, input_shapes):
        if isinstance(record.layer, KERNEL_LAYERS):
            assert not record.in_loop, f"{record.name}: a kernel op in a loop"
            name = record.layer.name
            per_layer[name] = per_layer.get(name, 0) + record.macs
    return sum(per_layer.values()), per_layer


# --------------------------------------------------------------------------
# The contract


def close_half(gated, rng):
    """Random mu of both signs and about half of every gate closed.

    Draws as `helpers.random_gates` does (the same masks from the same
    `rng`), and closes and opens the units through the gates' own
    `set_kept`. Returns the kept masks, in `keras_vib.gates.gates` order.
    """
    masks = []
    for _, gate in kv.gates.gates(gated):
        n = gate.units
        mu = rng.uniform(0.5, 1.5, n) * rng.choice([-1, 1], n)
        closed = rng.random(n) < 0.5
        gate.mu.assign(mu.astype("float32"))
        gate.set_kept(~closed)
        np.testing.assert_array_equal(gate.kept_mask(), ~closed)
        masks.append(~closed)
    return masks


def _numpy(y):
    """A model's outputs as numpy arrays, in their structure."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, y)


def assert_close(a, b, rtol=1e-5):
    """`helpers.assert_close` for each output of a structure (a dict of
    outputs, say)."""
    a, b = keras.tree.flatten(a), keras.tree.flatten(b)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        _assert_close(u, v, rtol)


def _as_list(x):
    """The arrays of a batch or the tensors of a structure, flattened (a
    dict's in the order of its sorted keys, as Keras's)."""
    return keras.tree.flatten(x)


def _stock_param_count(gated):
    """Params of the gated model without its gate variables."""
    gate_params = sum(gate.count_params() for _, gate in kv.gates.gates(gated))
    return gated.count_params() - gate_params


def _check_untouched(gated, before, ref, x, slim):
    after = gated.get_weights()
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)
    out = _numpy(gated(x, training=False))
    for a, b in zip(_as_list(out), _as_list(ref)):
        np.testing.assert_array_equal(a, b)
    original = {id(v) for v in gated.weights}
    assert not any(id(v) in original for v in slim.weights)


def _check_stock(slim):
    """No gate, no keras_vib layer but `SelectFeatures`, no empty tensor."""
    assert not kv.gates.gates(slim)
    for layer in slim.layers:
        module = type(layer).__module__
        if type(layer).__name__ != "SelectFeatures":
            assert not module.startswith("keras_vib"), (layer.name, type(layer))
        for t in _as_list(layer.output):
            assert t.shape[-1] != 0, (layer.name, t.shape)
    for v in slim.weights:
        assert all(d > 0 for d in v.shape), (v.path, v.shape)


def _check_counts(gated, slim, slim_x):
    # FLOPs at the batch's size for a model of any length.
    shapes = [tuple(a.shape[1:]) for a in _as_list(slim_x)]
    open_sizes = any(None in tuple(t.shape[1:]) for t in gated.inputs)
    input_shape = shapes if open_sizes else None
    report = kv.compression_report(gated, input_shape=input_shape)
    assert slim.count_params() == report.kept_params
    assert kernel_entries(slim) == report.kept_weights, (
        f"kernel entries of the slim model {kernel_entries(slim)}, "
        f"report {report.kept_weights}: {report.weight_layers}"
    )
    own = kv.compression_report(slim, input_shape=input_shape)
    assert own.kept_weights == report.kept_weights
    assert own.flops == report.flops, (own.weight_layers, report.weight_layers)
    against = kv.compression_report(slim, reference=gated, input_shape=input_shape)
    assert against.structure == report.structure
    assert against.r_w == report.r_w and against.r_n == report.r_n
    if keras.backend.backend() == "tensorflow":
        macs, per_layer = kernel_macs(slim, shapes)
        reported = {w.name: w.flops for w in report.weight_layers if w.flops}
        assert macs == report.flops, (
            f"MACs of the slim model's graph {macs}, report {report.flops}; "
            f"per layer, graph: {per_layer}, report: {reported}"
        )
    return report


def check_contract(
    model,
    x,
    rng=None,
    *,
    tmp_path=None,
    close=None,
    keep_input_shape=True,
    fewer=True,
    tol=1e-5,
    **gate_kwargs,
):
    """Checks the whole contract of module `contract` on `model`.

    Args:
        model: a model without gates (gated here by `add_gates(model,
            **gate_kwargs)`, which must compute the same function), or a
            gated model, checked as it is.
        x: an input batch (a list for several inputs).
        rng: a numpy Generator, for `close`.
        tmp_path: a directory: the slim model is saved there and reloaded.
        close: whether to close about half of every gate first
            (`close_half`); by default when `model` has no gates of its own.
        keep_input_shape: passed to `slim_model`; False: the slim model
            reads the kept input features only.
        fewer: the slim model must have fewer parameters than the gated
            one without its gates.
        tol: the tolerance of the function comparisons.
        **gate_kwargs: passed to `add_gates`.

    Returns:
        `(gated, slim)`.
    """
    if kv.gates.gates(model):
        assert not gate_kwargs, "a gated model is checked as it is"
        gated = model
        close = False if close is None else close
    else:
        gated = kv.add_gates(model, **gate_kwargs)
        assert_close(gated(x, training=False), model(x, training=False), tol)
        close = True if close is None else close
    if close:
        close_half(gated, rng)

    before = [w.copy() for w in gated.get_weights()]
    expected = _numpy(gated(x, training=False))
    slim = kv.slim_model(gated, keep_input_shape=keep_input_shape)
    assert isinstance(slim, keras.Model) and slim is not gated
    _check_untouched(gated, before, expected, x, slim)
    _check_stock(slim)

    slim_x = x
    if keep_input_shape:
        for a, b in zip(slim.inputs, gated.inputs):
            assert tuple(a.shape) == tuple(b.shape)
    else:
        indices = kv.slim.kept_input_indices(gated)
        for t, i in zip(slim.inputs, indices):
            assert t.shape[-1] == len(i)
        slim_x = [a[..., i] for a, i in zip(_as_list(x), indices)]
        slim_x = slim_x if isinstance(x, (list, tuple)) else slim_x[0]
    out = slim(slim_x, training=False)
    assert all(a.dtype == np.float32 for a in _as_list(_numpy(out)))
    assert_close(out, expected, tol)

    _check_counts(gated, slim, slim_x)
    if fewer:
        assert slim.count_params() < _stock_param_count(gated)

    if tmp_path is not None:
        path = tmp_path / "slim.keras"
        slim.save(path)
        loaded = keras.models.load_model(path)
        assert_close(loaded(slim_x, training=False), expected, tol)
    return gated, slim
