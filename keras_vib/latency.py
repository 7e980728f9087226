"""What a gated model's slim model would take in LiteRT, for any kept units.

A per-layer latency model, measured on this machine: each convolution and
dense layer of the model is converted alone to LiteRT (float32, XNNPACK),
and for the channel counts asked about the converted operator is resized
(`keras_vib.deploy.profile.resized_op`) and timed; each count once, then
cached on disk by layer and machine. Counts are timed exactly, not
interpolated: the runtime's kernels work in tiles of channels, and a conv
with 17 to 31 output channels can take longer than one with 32. The layers'
sum is mapped to the whole model's time through four measurements of it
(every gated unit closed, a quarter of each gate's kept, half, all),
piecewise linearly: what does not shrink with the gated units (the
invoke, the layers no gate reaches, norms on a transformer's residual
stream) and what shrinks faster or slower than the timed layers (pooling,
additions, attention's softmax) are measured, not assumed. Self-attention
layers are converted and timed at each head count. For an int8 (or
float16) target the layers are timed in float32 and the anchors measured
quantized: the layers rank the units, the whole-model measurements give
the times. `VIBBudget(target_latency=)` prices units with it and checks
the slim model against a real measurement at the end.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import platform

import keras
import numpy as np

from keras_vib import _validate, graph
from keras_vib.deploy.convert import QUANTIZATIONS, to_tflite
from keras_vib.deploy.litert import benchmark_tflite
from keras_vib.deploy.profile import op_models, resized_op
from keras_vib.slim import slim_masked

__all__ = ["LatencyModel"]

_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_VERSION = 3  # of the cache's layout


def _cache_dir(path):
    if path is not None:
        return pathlib.Path(path)
    root = os.environ.get("KERAS_VIB_CACHE") or pathlib.Path.home() / ".cache"
    return pathlib.Path(root) / "keras_vib" / "latency"


@functools.cache
def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_ATTENTION_KEYS = ("num_heads", "key_dim", "value_dim", "use_bias")


def _self_attention(node, layer):
    """Whether the node is a `MultiHeadAttention` (gated or not) over one
    sequence (query, key and value one tensor), of a stock output width."""
    if not isinstance(layer, keras.layers.MultiHeadAttention):
        return False
    roles = node.handler.roles(node) if hasattr(node.handler, "roles") else None
    config = layer.get_config()
    return (
        roles is not None
        and len({node.inputs[i] for i in roles}) == 1
        and config.get("output_shape") is None
        and len(node.in_shapes[0]) == 3
    )


def _stock_layer(node):
    """`(layer class name, stock layer config, input shape)` of a
    convolution or dense node this model can time (at its full channel
    counts), or None."""
    handler, layer = node.handler, node.layer
    inner = handler.inner(layer) if hasattr(handler, "inner") else layer
    shape = node.in_shapes[0]
    if shape is None or any(d is None for d in shape[1:]):
        return None
    kind = type(inner)
    if kind is keras.layers.Conv2D and inner.groups == 1:
        config = dict(inner.get_config(), filters=int(node.out_shape[-1]))
    elif kind is keras.layers.DepthwiseConv2D and inner.depth_multiplier == 1:
        config = inner.get_config()
    elif kind is keras.layers.Dense:
        config = dict(inner.get_config(), units=int(node.out_shape[-1]))
    elif _self_attention(node, inner):
        full = inner.get_config()
        config = {k: full[k] for k in _ATTENTION_KEYS}
        return "MultiHeadAttention", config, tuple(int(d) for d in shape[1:])
    else:
        return None
    for key in ("kernel_regularizer", "bias_regularizer", "activity_regularizer"):
        config.pop(key, None)
    config["name"] = "layer"
    return kind.__name__, config, tuple(int(d) for d in shape[1:])


class LatencyModel:
    """Predicts the LiteRT latency of a gated model's slim model.

    Args:
        model: a gated model (`add_gates`, VIB layers), on the TensorFlow
            backend (LiteRT conversion needs it).
        input_shape: the shape of one example for a model whose inputs
            have sizes left open (as in `compression_report`).
        num_threads: LiteRT threads (1: one core).
        quantization: None (float32), `"float16"`, `"dynamic"` or `"int8"`
            (as `keras_vib.export.to_tflite`; int8 calibrated on random
            inputs: ranges do not change the time): how the whole model is
            converted when measured.
        runs: positive int, timed invokes per layer and channel counts.
        cache_dir: where the timings are kept (default
            `$KERAS_VIB_CACHE/keras_vib/latency`, else
            `~/.cache/keras_vib/latency`).
        verbose: int; > 0 shows a progress bar while converting layers.

    Attributes:
        structure: the analysed graph (`graph.Structure`).
        measured_ms: the whole model's time with every unit kept, measured
            when this was built.
        anchors: `(layers' summed time, measured time)` pairs (ms) of the
            measured slim models (four when built, `calibrate` adds
            more), fewest units first; predictions interpolate between
            them.

    Example:

    >>> latency = keras_vib.latency.LatencyModel(gated)
    >>> latency()  # ms, with the units the gates keep now
    """

    def __init__(
        self,
        model: keras.Model,
        input_shape=None,
        num_threads: int = 1,
        quantization: str | None = None,
        runs: int = 15,
        cache_dir=None,
        verbose: int = 1,
    ):
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "Expected the TensorFlow backend: a latency model converts "
                "layers to LiteRT. Received: backend="
                f"{keras.backend.backend()!r}"
            )
        self.num_threads = _validate.integer("num_threads", num_threads, minimum=1)
        if quantization not in QUANTIZATIONS:
            raise _validate.fail(
                "quantization", f"one of {QUANTIZATIONS}", quantization
            )
        self.quantization = quantization
        self.runs = _validate.integer("runs", runs, minimum=1)
        self.cache_dir = _cache_dir(cache_dir)
        self.verbose = int(verbose)
        self.model = model
        self.structure = graph.Structure(model, input_shape)
        self._layers = {}  # node index -> its signature's entry
        self._entries = {}  # signature key -> {"op", "times", "path", "new"}
        self._per_mac = 0.0
        self.anchors = []
        self._build()
        self._fit()
        self.flush()

    # -- building ---------------------------------------------------------

    def _nodes(self, masks=None):
        """`(node, kept, counts)` of every node with kernel counts."""
        analysis = graph.analyze(self.structure, masks, folds=False)
        for node in analysis.nodes:
            kept = analysis.kept(node)
            counts = node.handler.counts(node, kept)
            if counts is not None:
                yield node, kept, counts

    def _key(self, signature):
        import ai_edge_litert

        what = [
            _VERSION,
            signature,
            self.num_threads,
            self.runs,
            getattr(ai_edge_litert, "__version__", ""),
            _cpu(),
        ]
        text = json.dumps(what, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()

    def _entry(self, signature):
        """A layer kind's converted operator and its cached timings."""
        key = self._key(signature)
        if key in self._entries:
            return self._entries[key]
        kind, config, shape = signature
        op = None
        if kind != "MultiHeadAttention":  # (converted at each head count)
            layer = getattr(keras.layers, kind).from_config(config)
            inputs = keras.Input(shape)
            single = keras.Model(inputs, layer(inputs))
            found = [o for o in op_models(to_tflite(single)) if o["op"] in _OPS]
            op = found[0]["tflite"]
        path = self.cache_dir / f"{key}.json"
        times = {}
        if path.is_file():
            try:
                times = json.loads(path.read_text())["times"]
            except (ValueError, KeyError):
                times = {}  # a damaged entry: timed again
        entry = {
            "op": op,
            "kind": kind,
            "times": times,
            "path": path,
            "signature": signature,
            "new": False,
        }
        self._entries[key] = entry
        return entry

    def _time(self, entry, counts):
        """The layer's time (ms) at these counts (`_counts`), timed once:
        its operator resized, or for attention the layer converted with
        that many heads."""
        if min(counts) <= 0:
            return 0.0
        name = ",".join(map(str, counts))
        if name not in entry["times"]:
            kind, op = entry["kind"], entry["op"]
            if kind == "MultiHeadAttention":
                model = _attention(entry["signature"], *counts)
            elif kind == "DepthwiseConv2D":
                model = resized_op(op, outputs=counts[1])
            else:
                model = resized_op(op, inputs=counts[0], outputs=counts[1])
            timing = benchmark_tflite(
                model, runs=self.runs, warmup=3, num_threads=self.num_threads
            )
            entry["times"][name] = timing["median_ms"]
            entry["new"] = True
        return entry["times"][name]

    def flush(self):
        """Writes the timings measured since the last flush to the cache."""
        for entry in self._entries.values():
            if not entry["new"]:
                continue
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            path = entry["path"]
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            saved = {"signature": entry["signature"], "times": entry["times"]}
            tmp.write_text(json.dumps(saved, default=str))
            os.replace(tmp, path)
            entry["new"] = False

    def _build(self):
        found = []
        for node, _, _ in self._nodes():
            signature = _stock_layer(node)
            if signature is not None:
                found.append((node.index, signature))
        bar = None
        if self.verbose and found:
            bar = keras.utils.Progbar(len(found), unit_name="layer")
        for i, (index, signature) in enumerate(found):
            self._layers[index] = self._entry(signature)
            if bar is not None:
                bar.update(i + 1)
        per_mac = []
        for node, kept, counts in self._nodes():
            if node.index in self._layers and counts[2]:
                entry = self._layers[node.index]
                full = self._time(entry, _counts(entry, kept))
                per_mac.append(full / counts[2])
        self._per_mac = float(np.median(per_mac)) if per_mac else 0.0

    def _kept(self, share):
        """Each gate keeping `share` of its units (those of lowest
        `log_alpha`; one at least unless `share` is 0; None: every unit)."""
        masks = {}
        for gate in self.structure.gates.values():
            order = np.argsort(keras.ops.convert_to_numpy(gate.log_alpha()))
            count = gate.units if share is None else int(share * gate.units)
            count = max(count, 1) if share != 0 else 0
            mask = np.zeros(gate.units, bool)
            mask[order[:count]] = True
            masks[id(gate)] = mask
        return masks

    def _fit(self):
        """The anchors: the slim model measured with every gated unit
        closed, a quarter of each gate's units kept, half, and every unit
        (an anchor not faster than the next one is dropped: timing noise
        on a tiny model)."""
        anchors = {}
        for share in (0.0, 0.25, 0.5, None):
            masks = self._kept(share)
            layers = self._predict(masks)[0]
            if layers not in anchors:
                anchors[layers] = self.measure(masks)
        kept = []
        for layers in sorted(anchors):
            while kept and kept[-1][1] >= anchors[layers]:
                kept.pop()
            kept.append((float(layers), float(anchors[layers])))
        self.anchors = kept
        self.measured_ms = kept[-1][1]

    def _map(self, layers):
        """The measured time (ms) and its slope for a layers' sum: between
        the anchors, past the last one on along the last piece, under the
        first one in proportion to it (a layer's time need not fall with
        its units: a Dense of one output can take longer than of 64, so a
        model with units kept can sum under the one with every unit
        closed)."""
        sums = [a for a, _ in self.anchors]
        times = [b for _, b in self.anchors]
        if len(sums) == 1 or layers < sums[0]:
            slope = times[0] / max(sums[0], 1e-9)
            return slope * layers, slope
        i = int(np.clip(np.searchsorted(sums, layers) - 1, 0, len(sums) - 2))
        slope = (times[i + 1] - times[i]) / max(sums[i + 1] - sums[i], 1e-9)
        return max(times[i] + slope * (layers - sums[i]), 0.0), slope

    # -- predicting -------------------------------------------------------

    def _predict(self, masks):
        """The layers' summed time and each layer's (ms, unscaled)."""
        layers = []
        for node, kept, counts in self._nodes(masks):
            entry = self._layers.get(node.index)
            if entry is not None:
                layers.append(self._time(entry, _counts(entry, kept)))
            else:  # a layer without an operator: its MACs at the others' rate
                layers.append((counts[2] or 0) * self._per_mac)
        return sum(layers), layers

    def parts(self, masks=None):
        """The predicted time (ms) with the gates' kept masks as they are
        or as `masks` (`id(gate)` -> mask) says, and each kernel layer's
        share (its time at the anchors' slope there), in graph order."""
        total, layers = self._predict(masks)
        time, slope = self._map(total)
        return time, [slope * t for t in layers]

    def __call__(self, masks=None) -> float:
        return self.parts(masks)[0]

    def measure(self, masks=None) -> float:
        """The model's slim model (with the gates' kept units, or those of
        `masks`) converted and timed in LiteRT now (ms)."""
        slim = slim_masked(self.model, masks)
        data = None
        if self.quantization == "int8":
            shape = tuple(slim.inputs[0].shape[1:])
            if len(slim.inputs) != 1 or None in shape:
                raise ValueError(
                    "Expected a model of one input of fixed size for "
                    'quantization="int8". '
                    f"Received: input shapes {[tuple(t.shape) for t in slim.inputs]}"
                )
            data = np.random.default_rng(0).normal(size=(16, *shape))
            data = data.astype("float32")
        tflite = to_tflite(slim, self.quantization, representative_data=data)
        timing = benchmark_tflite(
            tflite, runs=max(self.runs, 30), warmup=5, num_threads=self.num_threads
        )
        return timing["median_ms"]

    def calibrate(self, measured_ms, masks=None):
        """Adds the measurement of `masks` (the gates' own where None) as
        an anchor: the prediction there is `measured_ms`, and near it
        follows it (the anchors it contradicts, slower below it or faster
        above it, are dropped)."""
        if measured_ms <= 0:
            return
        at = self._predict(masks)[0]
        self.anchors = sorted(
            [
                (a, b)
                for a, b in self.anchors
                if (a < at and b < measured_ms) or (a > at and b > measured_ms)
            ]
            + [(float(at), float(measured_ms))]
        )


def _counts(entry, kept):
    """What a layer's time depends on: its kept input and output channels
    (a depthwise conv: its channels twice), or an attention layer's kept
    heads, then its input and output widths."""
    cin, cout = int(np.sum(kept.inputs[0])), int(np.sum(kept.output))
    if entry["kind"] == "DepthwiseConv2D":
        return cout, cout
    if entry["kind"] == "MultiHeadAttention":
        heads = entry["signature"][1]["num_heads"]
        heads = heads if kept.units is None else int(np.sum(kept.units))
        return heads, cin, cout
    return cin, cout


def _attention(signature, heads, width, out):
    """A LiteRT model of one self-attention layer with `heads` heads on
    `width` channels, `out` wide."""
    _, config, shape = signature
    layer = keras.layers.MultiHeadAttention(
        **dict(config, num_heads=heads), output_shape=None if out == width else out
    )
    inputs = keras.Input((*shape[:-1], width))
    return to_tflite(keras.Model(inputs, layer(inputs, inputs)))
