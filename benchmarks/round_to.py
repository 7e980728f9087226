"""Channel counts the runtime likes: `slim_model(round_to=k)` in LiteRT.

    python benchmarks/round_to.py [--families ResNet50 MobileNetV2 DenseNet121]
        [--size 224] [--closed 0.75] [--round-to 4 8 16] [--runs 30]
        [--rounds 3] [--write]

For each `keras.applications` family (random weights, as in
`benchmarks/coverage.py --latency`), `add_gates`, then `--closed` of every
gate's units closed at random (positive mu), and the slim model exported to
LiteRT (float32) as the gates have it and rounded to each multiple of
`--round-to` (`slim_model(gated, round_to=k)`: every gate keeps a multiple
of k units). All of them and the original are timed with one thread
(XNNPACK), interleaved: `--rounds` rounds of `--runs` invokes each, the
median of the round medians. The table gives each slim model's FLOPs, its
speed-up over the original and that speed-up as a share of its FLOP ratio
(1.0: it runs as much faster as its multiply-accumulates shrink).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    ROOT,
    interleaved_ms,
    load_average,
    load_note,
    machine,
    positive_int,
    publish,
)
from coverage import FAMILIES, build, set_gates  # noqa: E402

import keras_vib as kv  # noqa: E402
from keras_vib import export  # noqa: E402

SECTION = "## Channel counts rounded for LiteRT (`benchmarks/round_to.py`)"


def draw_arguments(parser):
    """`--families`, `--size`, `--closed`, `--seed`: the models and the
    random draw of closed units (`variants`)."""
    parser.add_argument(
        "--families",
        nargs="+",
        choices=sorted(FAMILIES),
        default=["ResNet50", "MobileNetV2", "DenseNet121"],
    )
    parser.add_argument("--size", type=positive_int, default=224)
    parser.add_argument("--closed", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)


def variants(name, args, rng):
    """`(label, tflite bytes, flops)` of the original and each slim model."""
    model, size = build(name, args.size, rng)
    gated = kv.add_gates(model, kl_weight=1e-5)
    set_gates(gated, rng, closed=args.closed, negative=False)
    total = kv.compression_report(gated).total_flops
    out = [("original", export.to_tflite(model), total)]
    for k in [None, *args.round_to]:
        slim = kv.slim_model(gated, round_to=k)
        flops = kv.compression_report(slim).total_flops
        label = "slim" if k is None else f"slim, round_to={k}"
        out.append((label, export.to_tflite(slim), flops))
        print(f"{name}: {label}: {flops:,} FLOPs", flush=True)
    return size, out


def timed(models, args):
    """Median over rounds of each model's median ms, interleaved."""
    files = {label: tflite for label, tflite, _ in models}
    return interleaved_ms(files, args.runs, args.rounds, warmup=5)


def table(rows, args, wall, load_before):
    lines = [
        SECTION,
        "",
        "`python benchmarks/round_to.py --families "
        f"{' '.join(args.families)} --size {args.size} --closed {args.closed} "
        f"--round-to {' '.join(map(str, args.round_to))} --runs {args.runs} "
        f"--rounds {args.rounds}`",
        "",
        f"- Machine: {machine()}.",
        load_note(load_before, wall),
        f"- {100 * args.closed:.0f} % of every gate closed at random (positive "
        "mu), random weights; LiteRT float32, XNNPACK, one thread; the median "
        f"of {args.rounds} interleaved rounds of {args.runs} invokes each. "
        "Speed-up and FLOP ratio against the original; the last column is "
        "their quotient (1.0: as much faster as the FLOPs shrink).",
        "",
        "| family | model | FLOPs | ms | speed-up | FLOP ratio | speed-up / FLOP "
        "ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['label']} | {r['flops']:,} | {r['ms']:.2f} | "
            f"{r['speedup']:.2f}x | {r['flop_ratio']:.2f}x | "
            f"{r['speedup'] / r['flop_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    draw_arguments(parser)
    parser.add_argument("--round-to", type=positive_int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--runs", type=positive_int, default=30)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--write", action="store_true", help="into BENCHMARKS.md")
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    load_before, start = load_average(), time.perf_counter()
    rows = []
    for name in args.families:
        rng = np.random.default_rng(args.seed)
        size, models = variants(name, args, rng)
        ms = timed(models, args)
        base_ms, base_flops = ms["original"], models[0][2]
        for label, _, flops in models[1:]:
            rows.append(
                {
                    "family": f"{name} {size}x{size}",
                    "label": label,
                    "flops": flops,
                    "ms": ms[label],
                    "speedup": base_ms / ms[label],
                    "flop_ratio": base_flops / max(flops, 1),
                }
            )
    text = table(rows, args, time.perf_counter() - start, load_before)
    publish(text, args.benchmarks_md, SECTION, args.write)


if __name__ == "__main__":
    main()
