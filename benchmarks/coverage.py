"""Which keras.applications families keras_vib gates and slims, and how well.

    python benchmarks/coverage.py [--size 32] [--families NAME ...]
        [--latency] [--latency-size 224] [--no-write]
    python benchmarks/coverage.py --hub [--backbones NAME ...] [--no-write]

With `--hub`, the same for keras-hub backbones of small configs
(`hub_models.py`), into "Coverage of keras-hub backbones": gates, the kinds
of unit they gate, the slim/original parameters (all, and outside the
embeddings) with half of every gate closed, the slim-vs-gated difference,
and for a backbone with nothing gated the reason.

For every `keras.applications` family that builds at a small input (weights
None, random batch-norm statistics and biases), this runs what a user would:
`add_gates`, then closes about half of every gate at random (mu of both
signs), `slim_model`, and measures

- the number of gates and the share of the kernel weights (conv, dense,
  depthwise, separable) that gates can remove: the kernel weights of the
  layers whose input or output channels the gates cut;
- the slim model's parameters as a share of the original's, and whether
  that equals `compression_report(gated).kept_params`;
- the largest difference between the slim and the gated model on random
  inputs, relative to the largest output;
- the wall time of `add_gates` and of `slim_model`;
- the warnings `add_gates` gave (what it left ungated, and why).

With `--latency`, ResNet50, MobileNetV2 and DenseNet121 at 224x224 are
exported to LiteRT (float32) before and after slimming with 50 % and 75 % of
every gate closed, and timed with one thread (XNNPACK), next to the FLOP
ratio. The table goes into BENCHMARKS.md ("Coverage of keras.applications";
`--benchmarks-md` writes elsewhere, `--no-write` nowhere).
"""

import argparse
import os
import pathlib
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import ROOT, load_average, load_note, machine, positive_int, publish  # noqa: E402

import keras_vib as kv  # noqa: E402
from keras_vib import export  # noqa: E402

A = keras.applications
# Family -> (constructor, smallest input size it builds at).
FAMILIES = {
    "MobileNet": (A.MobileNet, 32),
    "MobileNetV2": (A.MobileNetV2, 32),
    "MobileNetV3Small": (A.MobileNetV3Small, 32),
    "MobileNetV3Large": (A.MobileNetV3Large, 32),
    "ResNet50": (A.ResNet50, 32),
    "ResNet50V2": (A.ResNet50V2, 32),
    "DenseNet121": (A.DenseNet121, 32),
    "VGG16": (A.VGG16, 32),
    "EfficientNetB0": (A.EfficientNetB0, 32),
    "EfficientNetV2B0": (A.EfficientNetV2B0, 32),
    "ConvNeXtTiny": (A.ConvNeXtTiny, 32),
    "NASNetMobile": (A.NASNetMobile, 32),
    "Xception": (A.Xception, 71),
    "InceptionV3": (A.InceptionV3, 75),
    "InceptionResNetV2": (A.InceptionResNetV2, 75),
}
LATENCY = ("ResNet50", "MobileNetV2", "DenseNet121")
SECTION = "## Coverage of keras.applications"
HUB_SECTION = "## Coverage of keras-hub backbones"
# Why a backbone's blocks are not opened yet (what keras_vib lacks).
HUB_REASONS = {}


def build(name, size, rng):
    constructor, smallest = FAMILIES[name]
    size = max(size, smallest)
    kwargs = dict(input_shape=(size, size, 3), weights=None, classes=10)
    try:
        model = constructor(classifier_activation=None, **kwargs)
    except TypeError:
        model = constructor(**kwargs)
    for v in model.weights:
        if v.name in ("beta", "moving_mean", "bias"):
            v.assign(rng.normal(0.0, 0.1, tuple(v.shape)).astype("float32"))
        elif v.name in ("gamma", "moving_variance") or "layer_scale" in v.path:
            # ConvNeXt's layer scales start at 1e-6, which would hide what
            # the residual branches (where its gates are) compute.
            v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
    return model, size


def set_gates(gated, rng, closed, negative):
    for _, gate in kv.gates.gates(gated):
        n = gate.units
        signs = rng.choice([-1.0, 1.0], n) if negative else np.ones(n)
        gate.mu.assign((rng.uniform(0.5, 1.5, n) * signs).astype("float32"))
        shut = rng.random(n) < closed
        gate.log_sigma2.assign(np.where(shut, 6.0, -9.0).astype("float32"))


def relative_difference(a, b):
    a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def cover(name, size, rng):
    model, size = build(name, size, rng)
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        gated = kv.add_gates(model, kl_weight=1e-5)
    gate_seconds = time.perf_counter() - start
    notes = [str(w.message) for w in caught if w.category is UserWarning]
    open_diff = relative_difference(gated(x, training=False), model(x, training=False))
    set_gates(gated, rng, closed=0.5, negative=True)
    report = kv.compression_report(gated)
    cut = [w for w in report.weight_layers if w.kept_weights < w.total_weights]
    removable = sum(w.total_weights for w in cut) / report.total_weights
    start = time.perf_counter()
    slim = kv.slim_model(gated)
    slim_seconds = time.perf_counter() - start
    diff = relative_difference(slim(x, training=False), gated(x, training=False))
    return {
        "family": name,
        "size": size,
        "gates": len(kv.gates.gates(gated)),
        "removable": removable,
        "params": model.count_params(),
        "slim_params": slim.count_params(),
        "report_matches": slim.count_params() == report.kept_params,
        "open_diff": open_diff,
        "diff": diff,
        "gate_seconds": gate_seconds,
        "slim_seconds": slim_seconds,
        "notes": notes,
    }


def unit_kinds(gated):
    """The kinds of unit the gates of `gated` hold: heads, key/value
    groups, and what the layer before each bare gate is."""
    from keras_vib import graph

    g = graph.Graph(gated)
    producers = {k: n for n in g.nodes for k in n.outputs}
    kinds = set()
    for node in g.nodes:
        name = type(node.layer).__name__
        grouped = name == "VIBGroupQueryAttention" or (
            name == "VIBAttentionHeads"
            and hasattr(node.layer.layer, "num_key_value_heads")
        )
        if name in ("VIBMultiHeadAttention", "VIBAttentionHeads") and not grouped:
            kinds.add("heads")
        elif grouped:
            kinds.add("key/value groups")
        elif name == "VIBGate":
            source = node
            while source.inputs and source.inputs[0] in producers:
                source = producers[source.inputs[0]]
                kind = type(source.layer).__name__
                if kind in ("Dense", "EinsumDense"):
                    kinds.add("FFN units")
                    break
                if kind == "Embedding":
                    kinds.add("embedding columns")
                    break
                if "Conv" in kind:
                    kinds.add("channels")
                    break
    return sorted(kinds)


def embedding_params(model):
    return sum(
        layer.count_params()
        for layer in model.layers
        if "embedding" in type(layer).__name__.lower()
    )


def cover_hub(name, rng):
    from hub_models import BACKBONES

    row = {"backbone": name, "reason": HUB_REASONS.get(name, "")}
    try:
        model, x = BACKBONES[name](rng)
    except Exception as error:  # this keras-hub lacks it, or refuses the config
        row["error"] = f"does not build: {type(error).__name__}: {error}"[:200]
        return row
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            gated = kv.add_gates(model, kl_weight=1e-5)
        for _, gate in kv.gates.gates(gated):
            gate.set_kept(np.arange(gate.units) < gate.units // 2)
        slim = kv.slim_model(gated)
        out = keras.tree.flatten(slim(x))
        ref = keras.tree.flatten(gated(x, training=False))
    except Exception as error:
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"[:240]
        return row
    embeddings = embedding_params(model)
    row.update(
        gates=len(kv.gates.gates(gated)),
        kinds=unit_kinds(gated),
        ratio=slim.count_params() / model.count_params(),
        outside=(slim.count_params() - embeddings)
        / max(model.count_params() - embeddings, 1),
        diff=max(relative_difference(a, b) for a, b in zip(out, ref)),
        report_matches=slim.count_params() == kv.compression_report(gated).kept_params,
        saves=saves_and_reloads(slim, x, out),
    )
    return row


def saves_and_reloads(slim, x, out):
    """`"yes"` if the slim model saves to `.keras` and reloads computing the
    same, else why not (keras-hub's own sublayers that do not serialize)."""
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "slim.keras"
        try:
            slim.save(path)
            again = keras.tree.flatten(keras.models.load_model(path)(x))
        except Exception as error:
            return f"no ({type(error).__name__})"
    same = max(relative_difference(a, b) for a, b in zip(again, out)) < 1e-5
    return "yes" if same else "no (differs)"


def hub_table(rows, wall, load_before):
    import keras_hub

    lines = [
        HUB_SECTION,
        "",
        "`python benchmarks/coverage.py --hub`",
        "",
        f"- Machine: {machine()}.",
        load_note(load_before, wall),
        f"- keras-hub {keras_hub.__version__}, the small configs of "
        "`benchmarks/hub_models.py` (2 blocks, width 16, 4 heads, random "
        "weights); `add_gates`, then the first half of every gate's units "
        "closed, `slim_model`. Slim / original: parameters (all; outside "
        "the embedding layers). Difference: largest |slim - gated| over "
        "the largest output, every output of the backbone. Slim `.keras`: "
        "the slim model saved, reloaded and computing the same (the "
        "exception where keras-hub's own sublayers of an opened block do "
        "not serialize on their own).",
        "",
        "| backbone | gates | units | slim / original | outside embeddings | "
        "report | slim vs gated | slim `.keras` | not cut, and why |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['backbone']} | - | - | - | - | - | - | - | "
                f"{r['reason'] or r['error']} |"
            )
            continue
        lines.append(
            f"| {r['backbone']} | {r['gates']} | {', '.join(r['kinds']) or '-'} | "
            f"{100 * r['ratio']:.1f} % | {100 * r['outside']:.1f} % | "
            f"{'equal' if r['report_matches'] else 'DIFFERS'} | {r['diff']:.1e} | "
            f"{r['saves']} | "
            f"{r['reason'] if r['gates'] == 0 or r['reason'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def main_hub(args):
    load_before = load_average()
    start = time.perf_counter()
    from hub_models import BACKBONES

    rows = []
    for name in args.backbones or BACKBONES:
        keras.backend.clear_session()
        row = cover_hub(name, np.random.default_rng(args.seed))
        if "error" in row:
            print(f"{name}: {row['error']}", flush=True)
        else:
            print(
                f"{name}: {row['gates']} gates ({', '.join(row['kinds'])}), "
                f"slim/original {100 * row['ratio']:.1f} % "
                f"({100 * row['outside']:.1f} % outside the embeddings), "
                f"diff {row['diff']:.1e}",
                flush=True,
            )
        rows.append(row)
    text = hub_table(rows, time.perf_counter() - start, load_before)
    publish(text, args.benchmarks_md, HUB_SECTION, write=not args.no_write)


def latency(name, size, rng, runs):
    model, size = build(name, size, rng)
    gated = kv.add_gates(model, kl_weight=1e-5)
    plain = export.to_tflite(model)
    rows = []
    base = export.benchmark_tflite(plain, runs=runs, warmup=5)["median_ms"]
    total_flops = kv.compression_report(gated).total_flops
    for closed in (0.5, 0.75):
        set_gates(gated, rng, closed=closed, negative=False)
        flops = kv.compression_report(gated).flops
        slim = export.to_tflite(kv.slim_model(gated))
        ms = export.benchmark_tflite(slim, runs=runs, warmup=5)["median_ms"]
        rows.append(
            {
                "family": name,
                "size": size,
                "closed": closed,
                "original_ms": base,
                "slim_ms": ms,
                "speedup": base / ms,
                "flop_ratio": total_flops / max(flops, 1),
            }
        )
    return rows


def table(rows, latency_rows, args, wall, load_before):
    lines = [
        SECTION,
        "",
        "`python benchmarks/coverage.py"
        + (" --latency" if args.latency else "")
        + f" --size {args.size}`"
        + (f" (families: {', '.join(args.families)})" if args.families else ""),
        "",
        f"- Machine: {machine()}.",
        load_note(load_before, wall),
        "- Each model: keras.applications, weights=None, random batch-norm "
        "statistics, biases and layer scales; `add_gates` (kl_weight 1e-5),"
        " then about half of every gate closed at random with mu of both "
        "signs, `slim_model`. Removable: the share of kernel weights in the"
        " layers whose input or output channels the gates cut. Slim / "
        "original: parameters. Report: whether "
        "`compression_report(gated).kept_params` equals the slim model's "
        "count. Difference: largest |slim - gated| over the largest output,"
        " two random inputs.",
        "",
        "| family | input | gates | removable | slim / original params | "
        "report | slim vs gated | add_gates s | slim_model s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['size']} | {r['gates']} | "
            f"{100 * r['removable']:.1f} % | "
            f"{100 * r['slim_params'] / r['params']:.1f} % | "
            f"{'equal' if r['report_matches'] else 'DIFFERS'} | "
            f"{r['diff']:.1e} | {r['gate_seconds']:.1f} | {r['slim_seconds']:.1f} |"
        )
    notes = [(r["family"], n) for r in rows for n in r["notes"]]
    if notes:
        lines += ["", "What `add_gates` left ungated:", ""]
        lines += [f"- {family}: {note}" for family, note in notes]
    if latency_rows:
        lines += [
            "",
            f"LiteRT float32, 1 thread, XNNPACK, median of {args.runs} invokes "
            "of one example; slim models with 50 % and 75 % of every gate "
            "closed (positive mu):",
            "",
            "| family | input | closed | original ms | slim ms | speed-up | "
            "FLOP ratio | speed-up / FLOP ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in latency_rows:
            lines.append(
                f"| {r['family']} | {r['size']} | {100 * r['closed']:.0f} % | "
                f"{r['original_ms']:.2f} | {r['slim_ms']:.2f} | "
                f"{r['speedup']:.2f}x | {r['flop_ratio']:.2f}x | "
                f"{100 * r['speedup'] / r['flop_ratio']:.0f} % |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=positive_int, default=32)
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES))
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--latency-size", type=positive_int, default=224)
    parser.add_argument("--runs", type=positive_int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--hub", action="store_true", help="keras-hub backbones")
    parser.add_argument("--backbones", nargs="+", help="with --hub: these only")
    args = parser.parse_args(argv)
    if args.hub:
        return main_hub(args)
    load_before = load_average()
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    rows = []
    for name in args.families or FAMILIES:
        keras.backend.clear_session()
        row = cover(name, args.size, rng)
        print(
            f"{name}: {row['gates']} gates, removable {100 * row['removable']:.1f} %, "
            f"slim/original {100 * row['slim_params'] / row['params']:.1f} %, "
            f"report {'equal' if row['report_matches'] else 'DIFFERS'}, "
            f"diff {row['diff']:.1e} (open {row['open_diff']:.1e}), "
            f"add_gates {row['gate_seconds']:.1f} s, slim {row['slim_seconds']:.1f} s",
            flush=True,
        )
        rows.append(row)
    latency_rows = []
    if args.latency:
        for name in LATENCY:
            if args.families and name not in args.families:
                continue
            keras.backend.clear_session()
            for r in latency(name, args.latency_size, rng, args.runs):
                print(
                    f"{name} {100 * r['closed']:.0f} % closed: "
                    f"{r['original_ms']:.2f} -> {r['slim_ms']:.2f} ms "
                    f"({r['speedup']:.2f}x, FLOPs {r['flop_ratio']:.2f}x)",
                    flush=True,
                )
                latency_rows.append(r)
    wall = time.perf_counter() - start
    text = table(rows, latency_rows, args, wall, load_before)
    publish(text, args.benchmarks_md, SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()
