"""Compression accounting: r_W, r_N, FLOPs and the kept structure."""

import dataclasses

from keras_vib import graph
from keras_vib.gates import (  # noqa: F401  (re-exported)
    gated_layers,
    gates,
    recorded_input_shape,
)
from keras_vib.slim import slim_params


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
        layers: one `GateReport` per gated layer, in graph order (for a
            model without gates measured against a gated `reference`: the
            reference's).
        weight_layers: one `WeightReport` per layer with a kernel.
        kept_neurons, total_neurons: summed over the gated layers.
        kept_weights, total_weights: kernel entries (biases excluded);
            `total_weights` is the reference's when there is one.
        flops, total_flops: multiply-accumulates of the kernel layers, kept
            and original (the reference's with one); None for a model whose
            inputs have sizes left open, measured without `input_shape`
            (and not trained since `add_gates`).
        kept_params: parameters of the slim model: kept kernel weights,
            biases and batch-norm parameters of the kept units (and of any
            per-channel scale layer `slim_model` has to insert).
        baseline: what the ratios compare with: the model itself (a gated
            model), the reference's name, or None (a model without gates and
            no reference: only absolute figures).
        r_w: `kept_weights / total_weights`, a fraction (None without a
            baseline).
        r_n: `kept_neurons / total_neurons`, a fraction (None without gates).
        structure: kept units per gated layer, e.g. `"97-71-33"`.
        input_shape: the reference size FLOPs were counted at, for a model
            whose inputs have sizes left open (None otherwise).
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
    baseline: str | None = None
    input_shape: list | None = None

    @property
    def r_w(self):
        if self.baseline is None:
            return None
        return self.kept_weights / self.total_weights if self.total_weights else 1.0

    @property
    def r_n(self):
        if self.baseline is None or not self.total_neurons:
            return None
        return self.kept_neurons / self.total_neurons

    @property
    def structure(self):
        return "-".join(str(layer.kept) for layer in self.layers)

    def to_dict(self):
        """A JSON-serialisable dict of every figure (percentages included)."""

        def pct(r):
            return None if r is None else 100.0 * r

        return {
            "model": self.model_name,
            "baseline": self.baseline,
            "r_w": self.r_w,
            "r_n": self.r_n,
            "r_w_pct": pct(self.r_w),
            "r_n_pct": pct(self.r_n),
            "flops": self.flops,
            "total_flops": self.total_flops,
            "input_shape": self.input_shape,
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
        if self.baseline is None:
            return "\n".join(
                [
                    f"Compression report: {self.model_name} (no gates; pass "
                    "`reference=` the gated or original model for ratios)",
                    f"weights: {self.kept_weights:,} kernel weights",
                    f"parameters: {self.kept_params:,}",
                    _flops_line(self.flops, at=self.input_shape),
                ]
            )
        rows = [("gated layer", "kept", "total", "kept %")]
        for layer in self.layers:
            pct = 100.0 * layer.kept / layer.total if layer.total else 100.0
            rows.append((layer.name, str(layer.kept), str(layer.total), f"{pct:.2f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        title = f"Compression report: {self.model_name}"
        if self.baseline != self.model_name:
            title += f" (against {self.baseline})"
        lines = [title]
        for row in rows:
            lines.append(
                "  ".join(
                    cell.ljust(w) if i == 0 else cell.rjust(w)
                    for i, (cell, w) in enumerate(zip(row, widths))
                )
            )
        lines.append(
            f"r_W: {100 * self.r_w:.2f}% ({self.kept_weights:,} of "
            f"{self.total_weights:,} weights)"
        )
        if self.r_n is not None:
            lines.append(
                f"r_N: {100 * self.r_n:.2f}% ({self.kept_neurons:,} of "
                f"{self.total_neurons:,} neurons)"
            )
        lines += [
            _flops_line(self.flops, self.total_flops, self.input_shape),
            f"parameters: {self.kept_params:,} once slimmed",
        ]
        if self.layers:
            lines.append(f"structure: {self.structure}")
        return "\n".join(lines)


def _flops_line(flops, total=None, at=None):
    if flops is None:
        return (
            "FLOPs: unknown: the model's inputs have sizes left open; "
            "compression_report(model, input_shape=...) counts them at a "
            "reference size (or train it once: add_gates records the size)"
        )
    of = f" of {format_count(total)}" if total is not None else ""
    if at is not None:
        shapes = ", ".join(str(tuple(s)) for s in at)
        of += f" at input size {shapes}"
    return f"FLOPs: {format_count(flops)}{of} multiply-accumulates"


def _total(values):
    """The sum, or None if any is None (unknown)."""
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def format_count(n):
    """`1234567` -> `"1.23M"`."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _measure(model, params=True, input_shape=None):
    """The report of `model` on its own (`kept_params` 0 unless `params`)."""
    analysis = graph.analyze(model, folds=params, input_shape=input_shape)
    return measure(analysis, params)


def measure(analysis, params=True):
    """The report of an analysed model (`kept_params` 0 unless `params`).

    Args:
        analysis: a `graph.Analysis` (with its folds when `params`).
        params: whether to count the slim model's parameters (a walk of
            the slim model without building it).

    Returns:
        A `CompressionReport` against the model itself.
    """
    tensors = analysis.tensors
    rows, weights, seen = [], [], set()
    for node in analysis.nodes:
        layer = node.layer
        first_call = id(layer) not in seen
        seen.add(id(layer))
        mask = analysis.masks.get(node.index)
        if mask is not None and first_call:
            out = tensors[node.outputs[0]]
            if analysis.rule(node).inner_gate:  # heads: kept if the output is
                useful = mask & out.present.any()
            else:
                useful = out.var & out.live & mask
            rows.append(GateReport(layer.name, int(useful.sum()), len(mask)))
        counts = node.handler.counts(node, analysis.kept(node))
        if counts is None:
            continue
        kept, total, flops, total_flops = (
            None if c is None else int(c) for c in counts
        )
        if not first_call:  # a shared layer: its weights count once
            kept = total = 0
        weights.append(
            WeightReport(
                layer.name, type(layer).__name__, kept, total, flops, total_flops
            )
        )
    return CompressionReport(
        model_name=analysis.model.name,
        layers=rows,
        weight_layers=weights,
        kept_neurons=sum(g.kept for g in rows),
        total_neurons=sum(g.total for g in rows),
        kept_weights=sum(w.kept_weights for w in weights),
        total_weights=sum(w.total_weights for w in weights),
        flops=_total(w.flops for w in weights),
        total_flops=_total(w.total_flops for w in weights),
        kept_params=slim_params(analysis) if params else 0,
        baseline=analysis.model.name if rows else None,
        input_shape=analysis.graph.input_shape,
    )


def compression_report(model, reference=None, input_shape=None) -> CompressionReport:
    """Measures what a VIB model keeps once its closed units are removed.

    Conventions (those of VIBNet, Dai et al. 2018):

    - r_W: kept kernel weights / kernel weights of the whole model, every
      Dense, Conv, DepthwiseConv, SeparableConv and transposed conv kernel
      counted, the classifier included; biases and BatchNormalization
      parameters are not counted. A kernel entry is kept when both its
      input and its output unit are kept. Kernels of layers the analysis
      cannot see through (an LSTM, say) count as kept.
    - r_N: kept units / units of all gated layers (an input gate counts the
      input features: 784 + 300 + 100 = 1184 for LeNet-300-100).
    - FLOPs: multiply-accumulates (MACs) of the kernel layers for one
      example, kept and original: `fan_in * units` per position for Dense,
      `kernel_h * kernel_w * in_channels * out_channels * out_h * out_w` for
      Conv2D, `kernel_h * kernel_w * channels * out_h * out_w` for
      DepthwiseConv2D. Biases, batch norm, activations and pooling are not
      counted.

    A unit counts as kept when its gate keeps it and it reaches the output
    (a unit whose every consumer was pruned is not kept).

    A model without gates (a slim model, say, loaded from `.keras`) has no
    ratios of its own: its report holds its absolute figures, and ratios
    against `reference` when one is given (the gated model it was slimmed
    from, whose gate rows it then shows, or the original model).

    A model whose inputs have sizes left open (`keras.Input((None,))`, a
    text model of any length) has FLOPs only at a reference size: give it
    as `input_shape`. Without one, the size of the data the gated model
    last trained on (recorded by `add_gates`' `InputSize` layers) is used;
    else `flops` is None (weights and parameters do not depend on it).

    Args:
        model: a built Sequential or functional Keras model.
        reference: optional model to take the totals (weights, FLOPs,
            neurons) from.
        input_shape: optional reference size of the inputs: the shape of one
            example (no batch axis; a list of them for several inputs),
            e.g. `(128,)` for sequences of 128 tokens.

    Returns:
        A `CompressionReport`; `print` it for a table, `.to_dict()` for JSON.

    Example:

    >>> report = keras_vib.compression_report(model)
    >>> print(report)
    >>> report.r_w, report.structure
    >>> keras_vib.compression_report(slim, reference=model).r_w == report.r_w
    True
    """
    if input_shape is None:  # the size it last trained on, if recorded
        input_shape = recorded_input_shape(model)
        if input_shape is None and reference is not None:
            input_shape = recorded_input_shape(reference)
    report = _measure(model, input_shape=input_shape)
    if reference is None:
        return report
    ref = _measure(reference, params=False, input_shape=input_shape)
    layers = report.layers or ref.layers
    return dataclasses.replace(
        report,
        layers=layers,
        kept_neurons=sum(g.kept for g in layers),
        total_neurons=sum(g.total for g in layers),
        total_weights=ref.total_weights,
        total_flops=ref.total_flops,
        baseline=reference.name,
    )
