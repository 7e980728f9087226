"""What a gated model's slim model would take in LiteRT, for any kept units.

A per-layer latency model, measured on this machine: each convolution and
dense layer of the model is converted alone to LiteRT (float32, XNNPACK),
and for the channel counts asked about the converted operator is resized
(`keras_vib.deploy.profile.resized_op`) and timed; each count once, then
cached on disk by layer and machine. Counts are timed exactly, not
interpolated: the runtime's kernels work in tiles of channels, and a conv
with 17 to 31 output channels can take longer than one with 32. The layers'
sum is scaled to the measured time of the whole model (what the layers do
not explain, pooling, additions, the invoke itself, taken as shrinking with
them). `VIBBudget(target_latency=)` prices units with it and checks the slim
model against a real measurement at the end.
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
from keras_vib.deploy.convert import to_tflite
from keras_vib.deploy.litert import benchmark_tflite
from keras_vib.deploy.profile import op_models, resized_op

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
        runs: positive int, timed invokes per layer and channel counts.
        cache_dir: where the timings are kept (default
            `$KERAS_VIB_CACHE/keras_vib/latency`, else
            `~/.cache/keras_vib/latency`).
        verbose: int; > 0 shows a progress bar while converting layers.

    Attributes:
        structure: the analysed graph (`graph.Structure`).
        measured_ms: the whole model's time when this was built.
        scale: measured time over the layers' summed time (set when built,
            and by `calibrate`).

    Example:

    >>> latency = keras_vib.latency.LatencyModel(gated)
    >>> latency()  # ms, with the units the gates keep now
    """

    def __init__(
        self,
        model: keras.Model,
        input_shape=None,
        num_threads: int = 1,
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
        self.runs = _validate.integer("runs", runs, minimum=1)
        self.cache_dir = _cache_dir(cache_dir)
        self.verbose = int(verbose)
        self.model = model
        self.structure = graph.Structure(model, input_shape)
        self._layers = {}  # node index -> its signature's entry
        self._entries = {}  # signature key -> {"op", "times", "path", "new"}
        self._per_mac = 0.0
        self.scale = 1.0
        self._build()
        self.measured_ms = self.measure()
        self.scale = self.measured_ms / max(self._predict(None)[0], 1e-9)
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
        layer = getattr(keras.layers, kind).from_config(config)
        inputs = keras.Input(shape)
        single = keras.Model(inputs, layer(inputs))
        ops = [op for op in op_models(to_tflite(single)) if op["op"] in _OPS]
        path = self.cache_dir / f"{key}.json"
        times = {}
        if path.is_file():
            try:
                times = json.loads(path.read_text())["times"]
            except (ValueError, KeyError):
                times = {}  # a damaged entry: timed again
        entry = {
            "op": ops[0]["tflite"],
            "depthwise": kind == "DepthwiseConv2D",
            "times": times,
            "path": path,
            "signature": signature,
            "new": False,
        }
        self._entries[key] = entry
        return entry

    def _time(self, entry, cin, cout):
        """The operator's time (ms) at these channel counts, timed once."""
        if cin <= 0 or cout <= 0:
            return 0.0
        if entry["depthwise"]:
            cin = cout
        name = f"{cin},{cout}"
        if name not in entry["times"]:
            op = entry["op"]
            resized = resized_op(op, outputs=cout) if entry["depthwise"] else (
                resized_op(op, inputs=cin, outputs=cout)
            )  # fmt: skip
            timing = benchmark_tflite(
                resized, runs=self.runs, warmup=3, num_threads=self.num_threads
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
                full = self._time(self._layers[node.index], *_channels(kept))
                per_mac.append(full / counts[2])
        self._per_mac = float(np.median(per_mac)) if per_mac else 0.0

    # -- predicting -------------------------------------------------------

    def _predict(self, masks):
        """The layers' summed time and each layer's (ms, unscaled)."""
        layers = []
        for node, kept, counts in self._nodes(masks):
            entry = self._layers.get(node.index)
            if entry is not None:
                layers.append(self._time(entry, *_channels(kept)))
            else:  # a layer without an operator: its MACs at the others' rate
                layers.append((counts[2] or 0) * self._per_mac)
        return sum(layers), layers

    def parts(self, masks=None):
        """The predicted time (ms) with the gates' kept masks as they are
        or as `masks` (`id(gate)` -> mask) says, and each kernel layer's
        share, in graph order."""
        total, layers = self._predict(masks)
        return self.scale * total, [self.scale * t for t in layers]

    def __call__(self, masks=None) -> float:
        return self.parts(masks)[0]

    def measure(self) -> float:
        """The model's slim model converted and timed in LiteRT now (ms)."""
        tflite = to_tflite(self.model)
        timing = benchmark_tflite(
            tflite, runs=max(self.runs, 30), warmup=5, num_threads=self.num_threads
        )
        return timing["median_ms"]

    def calibrate(self, measured_ms, masks=None):
        """Scales the predictions so that those of `masks` give
        `measured_ms`."""
        predicted = self(masks)
        if predicted > 0 and measured_ms > 0:
            self.scale *= measured_ms / predicted


def _channels(kept):
    return int(np.sum(kept.inputs[0])), int(np.sum(kept.output))
