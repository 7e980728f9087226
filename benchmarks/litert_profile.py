"""Where the time of the slim models goes in LiteRT, operator by operator.

    python benchmarks/litert_profile.py [--families ResNet50 MobileNetV2
        DenseNet121] [--size 224] [--closed 0.75] [--round-to 8]
        [--multiples 4 8 16] [--runs 20] [--write]

For each `keras.applications` family (random weights), `add_gates`, then
`--closed` of every gate's units closed at random (positive mu, the draw of
`benchmarks/round_to.py`), and the original, the slim model and the slim
model rounded (`slim_model(round_to=k)`) converted to LiteRT float32. Each
operator of each is timed on its own (`keras_vib.export.profile_tflite`:
XNNPACK, one thread, the median of `--runs` invokes), and the whole models
are timed too. Two tables: the time and the multiply-accumulates of each
kind of operator, original against slim (which kinds do not shrink with
their channels); and the slim model's convolutions and dense layers as
they are against the same operators with every channel count padded up to
the next multiple of 4, 8 and 16 (`keras_vib.export.padded_op`, zeros in
the new weights: more MACs, the same result).
"""

import argparse
import collections
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from _common import ROOT, load_average, load_note, machine, positive_int, publish  # noqa: E402
from round_to import draw_arguments, variants  # noqa: E402

from keras_vib import export  # noqa: E402
from keras_vib.deploy.profile import resized_op  # noqa: E402

SECTION = "## Where the time goes in LiteRT (`benchmarks/litert_profile.py`)"
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def models(name, args, rng):
    """`{label: tflite bytes}`: the original, slim and slim rounded (the
    models and draw of `round_to.variants`)."""
    draw = argparse.Namespace(
        size=args.size, closed=args.closed, round_to=[args.round_to]
    )
    size, found = variants(name, draw, rng)
    return size, {label: tflite for label, tflite, _ in found}


def by_kind(ops):
    """`{op kind: (ms, MACs, count)}`."""
    kinds = collections.defaultdict(lambda: [0.0, 0, 0])
    for op in ops:
        entry = kinds[op["op"]]
        entry[0] += op["ms"]
        entry[1] += op["macs"]
        entry[2] += 1
    return kinds


def padded_times(op_entries, args):
    """The weighted operators' total ms and MACs as they are and with every
    count padded up to each of `--multiples`."""
    totals = {1: [0.0, 0]}
    for k in args.multiples:
        totals[k] = [0.0, 0]
    for entry in op_entries:
        if entry["op"] not in WEIGHTED:
            continue
        for k in totals:
            one = entry["tflite"]
            if k > 1:
                one = export.padded_op(
                    one, k, inputs=not entry["model_input"],
                    outputs=not entry["model_output"],
                )  # fmt: skip
            (padded,) = export.op_models(one)
            ms = export.benchmark_tflite(one, runs=args.runs, warmup=3)["median_ms"]
            totals[k][0] += ms
            totals[k][1] += padded["macs"]
    return totals


def profile(name, args):
    rng = np.random.default_rng(args.seed)
    size, tflites = models(name, args, rng)
    result = {"family": f"{name} {size}x{size}", "models": {}}
    for label, flatbuffer in tflites.items():
        whole = export.benchmark_tflite(flatbuffer, runs=args.runs, warmup=5)
        ops = export.profile_tflite(flatbuffer, runs=args.runs, warmup=3)
        result["models"][label] = {
            "whole_ms": whole["median_ms"],
            "ops": ops,
            "kinds": by_kind(ops),
        }
        print(
            f"{name}: {label}: {len(ops)} operators, {whole['median_ms']:.2f} ms "
            f"whole, {sum(op['ms'] for op in ops):.2f} ms summed",
            flush=True,
        )
    slim_ops = export.op_models(tflites["slim"])
    result["padded"] = padded_times(slim_ops, args)
    result["staircase"] = staircase(export.op_models(tflites["original"]), args)
    return result


STAIRS = (8, 15, 16, 17, 24, 31, 32, 33, 40, 47, 48, 56, 63, 64)


def staircase(op_entries, args):
    """The original's first 3x3 convolution timed at output channel counts
    `STAIRS` (its input channels as they are): `(label, {count: ms})`."""
    for entry in op_entries:
        shapes = entry["inputs"]
        if entry["op"] == "CONV_2D" and shapes[1][1:3] == [3, 3] and shapes[0][-1] > 3:
            counts = {}
            for c in STAIRS:
                one = resized_op(entry["tflite"], outputs=c)
                counts[c] = export.benchmark_tflite(one, runs=args.runs, warmup=3)[
                    "median_ms"
                ]
            x = shapes[0]
            label = f"3x3 conv on {x[1]}x{x[2]}x{x[3]}"
            return label, counts
    return None


def kinds_table(result, rounded):
    original = result["models"]["original"]
    slim = result["models"]["slim"]
    rounded_model = result["models"][rounded]
    lines = [
        f"**{result['family']}**: the whole model {original['whole_ms']:.2f} ms "
        f"(operators summed: {sum(o['ms'] for o in original['ops']):.2f}); slim "
        f"{slim['whole_ms']:.2f} ms ({sum(o['ms'] for o in slim['ops']):.2f}); "
        f"{rounded} {rounded_model['whole_ms']:.2f} ms "
        f"({sum(o['ms'] for o in rounded_model['ops']):.2f}).",
        "",
        "| operator | count (original / slim) | original ms | slim ms | "
        f"speed-up | MAC ratio | share of the slim time | {rounded} ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    total = sum(o["ms"] for o in slim["ops"])
    kinds = set(original["kinds"]) | set(slim["kinds"])
    kinds = sorted(kinds, key=lambda k: -original["kinds"].get(k, (0.0,))[0])
    for kind in kinds:
        ms0, macs0, count = original["kinds"].get(kind, (0.0, 0, 0))
        ms1, macs1, count1 = slim["kinds"].get(kind, (0.0, 0, 0))
        if count1 != count:
            count = f"{count} / {count1}"
        ms2 = rounded_model["kinds"].get(kind, (0.0, 0, 0))[0]
        speedup = f"{ms0 / ms1:.1f}x" if ms1 else "-"
        macs = f"{macs0 / macs1:.1f}x" if macs1 else "-"
        lines.append(
            f"| {kind} | {count} | {ms0:.3f} | {ms1:.3f} | {speedup} | {macs} | "
            f"{100 * ms1 / total:.0f} % | {ms2:.3f} |"
        )
    return lines


def padded_table(results, args):
    lines = [
        "| family | slim's conv and dense ops | "
        + " | ".join(f"counts padded to x{k}" for k in args.multiples)
        + " |",
        "|---|---|" + "---|" * len(args.multiples),
    ]
    for result in results:
        padded = result["padded"]
        ms1, macs1 = padded[1]
        cells = [f"{ms1:.3f} ms, {macs1 / 1e6:.1f} M MACs"]
        for k in args.multiples:
            ms, macs = padded[k]
            cells.append(
                f"{ms:.3f} ms ({ms / ms1:.2f}x), {macs / 1e6:.1f} M MACs "
                f"({macs / macs1:.2f}x)"
            )
        lines.append(f"| {result['family']} | " + " | ".join(cells) + " |")
    return lines


def table(results, args, wall, load_before):
    rounded = f"slim, round_to={args.round_to}"
    lines = [
        SECTION,
        "",
        "`python benchmarks/litert_profile.py --families "
        f"{' '.join(args.families)} --size {args.size} --closed {args.closed} "
        f"--round-to {args.round_to} --multiples "
        f"{' '.join(map(str, args.multiples))} --runs {args.runs}`",
        "",
        f"- Machine: {machine()}.",
        load_note(load_before, wall),
        f"- {100 * args.closed:.0f} % of every gate closed at random (positive "
        "mu), random weights; LiteRT float32, XNNPACK, one thread. Each "
        "operator of the converted model (batch norms folded, activations "
        "fused) timed on its own (`keras_vib.export.profile_tflite`: the "
        f"median of {args.runs} invokes), so its weights and input are warm "
        "in the cache; the sum is close to the whole model's time. MAC ratio "
        "and speed-up: original over slim, per kind of operator.",
        "",
    ]
    for result in results:
        lines += kinds_table(result, rounded) + [""]
    lines += [
        "The slim model's convolutions and dense layers (unrounded) as they "
        "are and with every channel count padded up to the next multiple "
        "(`keras_vib.export.padded_op`: zeros in the new weights; an image's "
        "channels and the classes stay), each operator timed on its own, "
        "summed:",
        "",
    ]
    lines += padded_table(results, args)
    lines += [
        "",
        "Output channel counts (each family's first 3x3 convolution with "
        "more than 3 inputs, resized: `keras_vib.deploy.profile.resized_op`; "
        "microseconds, the median of the runs):",
        "",
        "| layer | " + " | ".join(str(c) for c in STAIRS) + " |",
        "|---|" + "---|" * len(STAIRS),
    ]
    for result in results:
        if result["staircase"] is None:
            continue
        label, counts = result["staircase"]
        cells = " | ".join(f"{1000 * counts[c]:.1f}" for c in STAIRS)
        lines.append(f"| {result['family']}: {label} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    draw_arguments(parser)
    parser.add_argument("--round-to", type=positive_int, default=8)
    parser.add_argument("--multiples", type=positive_int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--runs", type=positive_int, default=20)
    parser.add_argument("--write", action="store_true", help="into BENCHMARKS.md")
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    load_before, start = load_average(), time.perf_counter()
    results = [profile(name, args) for name in args.families]
    text = table(results, args, time.perf_counter() - start, load_before)
    publish(text, args.benchmarks_md, SECTION, args.write)


if __name__ == "__main__":
    main()
