"""Compression accounting: r_W, r_N, FLOPs and the kept structure."""

import dataclasses
import math

import keras
import numpy as np

from keras_vib import graph
from keras_vib.layers import VIBConv2D, VIBDense, VIBGate

_GATED = (VIBGate, VIBDense, VIBConv2D)


@dataclasses.dataclass
class GateReport:
    """Kept units of one gated layer."""

    name: str
    kept: int
    total: int


@dataclasses.dataclass
class WeightReport:
    """Kept kernel weights and multiply-accumulates of one layer."""

    name: str
    class_name: str
    kept_weights: int
    total_weights: int
    flops: int
    total_flops: int


@dataclasses.dataclass
class CompressionReport:
    """What a VIB model keeps, as `compression_report` measures it.

    Attributes:
        model_name: name of the model.
        layers: one `GateReport` per gated layer, in graph order.
        weight_layers: one `WeightReport` per layer with a kernel.
        kept_neurons, total_neurons: summed over the gated layers.
        kept_weights, total_weights: kernel entries (biases excluded).
        flops, total_flops: multiply-accumulates of the dense and conv
            layers, kept and original.
        kept_params: parameters of the slim model: kept kernel weights,
            biases and batch-norm parameters of the kept units (and of any
            per-channel scale layer `slim_model` has to insert).
        r_w: `kept_weights / total_weights`, a fraction.
        r_n: `kept_neurons / total_neurons`, a fraction.
        structure: kept units per gated layer, e.g. `"97-71-33"`.
    """

    model_name: str
    layers: list
    weight_layers: list
    kept_neurons: int
    total_neurons: int
    kept_weights: int
    total_weights: int
    flops: int
    total_flops: int
    kept_params: int = 0

    @property
    def r_w(self):
        return self.kept_weights / self.total_weights if self.total_weights else 1.0

    @property
    def r_n(self):
        return self.kept_neurons / self.total_neurons if self.total_neurons else 1.0

    @property
    def structure(self):
        return "-".join(str(layer.kept) for layer in self.layers)

    def to_dict(self):
        """A JSON-serialisable dict of every figure (percentages included)."""
        return {
            "model": self.model_name,
            "r_w": self.r_w,
            "r_n": self.r_n,
            "r_w_pct": 100.0 * self.r_w,
            "r_n_pct": 100.0 * self.r_n,
            "flops": self.flops,
            "total_flops": self.total_flops,
            "structure": self.structure,
            "kept_weights": self.kept_weights,
            "total_weights": self.total_weights,
            "kept_params": self.kept_params,
            "kept_neurons": self.kept_neurons,
            "total_neurons": self.total_neurons,
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "weight_layers": [dataclasses.asdict(w) for w in self.weight_layers],
        }

    def __str__(self):
        rows = [("gated layer", "kept", "total", "kept %")]
        for layer in self.layers:
            pct = 100.0 * layer.kept / layer.total if layer.total else 100.0
            rows.append((layer.name, str(layer.kept), str(layer.total), f"{pct:.2f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [f"Compression report: {self.model_name}"]
        for row in rows:
            lines.append(
                "  ".join(
                    cell.ljust(w) if i == 0 else cell.rjust(w)
                    for i, (cell, w) in enumerate(zip(row, widths))
                )
            )
        lines += [
            f"r_W: {100 * self.r_w:.2f}% ({self.kept_weights:,} of "
            f"{self.total_weights:,} weights)",
            f"r_N: {100 * self.r_n:.2f}% ({self.kept_neurons:,} of "
            f"{self.total_neurons:,} neurons)",
            f"FLOPs: {format_count(self.flops)} of "
            f"{format_count(self.total_flops)} multiply-accumulates",
            f"structure: {self.structure}",
        ]
        return "\n".join(lines)


def format_count(n):
    """`1234567` -> `"1.23M"`."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _count(mask):
    return int(np.sum(mask))


def _weight_report(node, tensors):
    """Kept and total kernel entries and MACs of one layer call, or None."""
    layer = node.layer
    in_info = tensors[node.inputs[0]] if node.inputs else None
    out_info = tensors[node.outputs[0]]
    if isinstance(layer, (keras.layers.Dense, VIBDense)) and node.kind == graph.MIXING:
        fan_in, units = in_info.channels, out_info.channels
        positions = math.prod(in_info.shape[1:-1])
        kept = _count(in_info.present) * _count(out_info.present)
        total = fan_in * units
        return kept, total, kept * positions, total * positions
    if (
        isinstance(layer, graph.CONV_LAYERS + (VIBConv2D,))
        and node.kind == graph.MIXING
    ):
        conv = layer.conv if isinstance(layer, VIBConv2D) else layer
        window = math.prod(conv.kernel_size)
        positions = math.prod(out_info.shape[1:-1])
        kept = window * _count(in_info.present) * _count(out_info.present)
        total = window * in_info.channels * out_info.channels
        return kept, total, kept * positions, total * positions
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        window = math.prod(layer.kernel_size)
        positions = math.prod(out_info.shape[1:-1])
        kept = window * _count(out_info.present)
        total = window * out_info.channels
        return kept, total, kept * positions, total * positions
    kernels = [w for w in layer.trainable_weights if len(w.shape) >= 2]
    if node.kind != graph.OPAQUE or not kernels:
        return None
    total = sum(math.prod(w.shape) for w in kernels)
    return total, total, 0, 0


def _other_params(node, tensors, fold):
    """Kept parameters of one layer call besides its kernel: biases, BN..."""
    layer = node.layer
    out = tensors[node.outputs[0]]
    kept = _count(out.present)
    params = 0
    if fold is not None and fold[0] == graph.EXPLICIT:
        params += 4 * kept  # the BatchNormalization that carries the scale
    if isinstance(layer, (VIBDense, VIBConv2D)):
        inner = layer.dense if isinstance(layer, VIBDense) else layer.conv
        use_bias = inner.use_bias or graph.folds_constants(node, tensors)
        params += kept if use_bias else 0
        if isinstance(layer, VIBConv2D) and layer.bn is not None:
            params += len(layer.bn.weights) * kept
        return params
    if isinstance(layer, VIBGate):
        return params
    if node.kind == graph.OPAQUE:  # all of it, but the kernels counted as weights
        kernels = sum(
            math.prod(w.shape) for w in layer.trainable_weights if len(w.shape) >= 2
        )
        return params + layer.count_params() - kernels
    if isinstance(layer, (keras.layers.Dense, keras.layers.DepthwiseConv2D)) or (
        isinstance(layer, graph.CONV_LAYERS)
    ):
        use_bias = layer.use_bias or graph.folds_constants(node, tensors)
        return params + (kept if use_bias else 0)
    per_channel = sum(math.prod(w.shape[:-1]) for w in layer.weights)
    return params + per_channel * kept


def gated_layers(model):
    """The gated layers of a model, in graph order.

    Args:
        model: a built Sequential or functional Keras model.

    Returns:
        A list of `(name, layer)`: each `VIBGate`, `VIBDense` or `VIBConv2D`
        with its name. Every such layer has `kept_mask()`, `num_kept()`,
        `log_alpha()` and `kl_loss()`.
    """
    _, _, nodes = graph.functional_graph(model)
    seen, gated = set(), []
    for node in nodes:
        layer = node.operation
        if isinstance(layer, _GATED) and id(layer) not in seen:
            seen.add(id(layer))
            gated.append((layer.name, layer))
    return gated


def gates(model):
    """The `VIBGate` of each gated layer of a model, in graph order.

    Args:
        model: a built Sequential or functional Keras model.

    Returns:
        A list of `(name, gate)`, named as in `gated_layers`: a `VIBDense` or
        `VIBConv2D` holds its gate in `.gate`, a bare `VIBGate` is its own.
    """
    return [
        (name, layer if isinstance(layer, VIBGate) else layer.gate)
        for name, layer in gated_layers(model)
    ]


def compression_report(model) -> CompressionReport:
    """Measures what a VIB model keeps once its closed units are removed.

    Conventions (those of VIBNet, Dai et al. 2018):

    - r_W: kept kernel weights / kernel weights of the whole model, every
      Dense, Conv and DepthwiseConv2D kernel counted, the classifier
      included; biases and BatchNormalization parameters are not counted.
      A kernel entry is kept when both its input and its output unit are
      kept. Kernels of layers the analysis cannot see through (an LSTM, say)
      count as kept.
    - r_N: kept units / units of all gated layers (an input gate counts the
      input features: 784 + 300 + 100 = 1184 for LeNet-300-100).
    - FLOPs: multiply-accumulates (MACs) of the Dense and Conv layers for
      one example, kept and original: `fan_in * units` per position for
      Dense, `kernel_h * kernel_w * in_channels * out_channels * out_h *
      out_w` for Conv2D, `kernel_h * kernel_w * channels * out_h * out_w` for
      DepthwiseConv2D. Biases, batch norm, activations and pooling are not
      counted.

    A unit counts as kept when its gate keeps it and it reaches the output
    (a unit whose every consumer was pruned is not kept).

    Args:
        model: a built Sequential or functional Keras model.

    Returns:
        A `CompressionReport`; `print` it for a table, `.to_dict()` for JSON.

    Example:

    >>> report = keras_vib.compression_report(model)
    >>> print(report)
    >>> report.r_w, report.structure
    """
    source = getattr(model, "_keras_vib_source", None)
    analysis = graph.analyze(model)
    tensors = analysis.tensors
    gates, weights, seen = [], [], set()
    other_params = 0
    for index, node in enumerate(analysis.nodes):
        layer = node.layer
        first_call = id(layer) not in seen
        seen.add(id(layer))
        if node.gate is not None and first_call:
            out = tensors[node.outputs[0]]
            useful = out.var & out.live & node.gate
            gates.append(GateReport(layer.name, _count(useful), len(node.gate)))
        if first_call:
            other_params += _other_params(node, tensors, analysis.folds.get(index))
        counts = _weight_report(node, tensors)
        if counts is None:
            continue
        kept, total, flops, total_flops = counts
        if not first_call:  # a shared layer: its weights count once
            kept = total = 0
        weights.append(
            WeightReport(
                layer.name, type(layer).__name__, kept, total, flops, total_flops
            )
        )
    if source is not None:
        # A slim model: its weights and FLOPs are measured on it, against
        # the totals of the gated model it came from; its gates are gone, so
        # the per-gate rows are those of the gated model.
        return dataclasses.replace(
            source,
            model_name=model.name,
            weight_layers=weights,
            kept_weights=sum(w.kept_weights for w in weights),
            flops=sum(w.flops for w in weights),
            kept_params=sum(w.kept_weights for w in weights) + other_params,
        )
    return CompressionReport(
        model_name=model.name,
        layers=gates,
        weight_layers=weights,
        kept_neurons=sum(g.kept for g in gates),
        total_neurons=sum(g.total for g in gates),
        kept_weights=sum(w.kept_weights for w in weights),
        total_weights=sum(w.total_weights for w in weights),
        flops=sum(w.flops for w in weights),
        total_flops=sum(w.total_flops for w in weights),
        kept_params=sum(w.kept_weights for w in weights) + other_params,
    )
