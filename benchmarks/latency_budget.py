"""A latency budget on a keras.applications model: where does it end?

    python benchmarks/latency_budget.py [--family ResNet50] [--size 224]
        [--share 0.333] [--steps 20] [--batch-size 4]
        [--quantizations float32 int8] [--write]

The family (random weights, `benchmarks/coverage.py`'s `build`) gated with
`add_gates`, its LiteRT time measured (XNNPACK, one thread; float32, and
int8 calibrated on the random images), and
`VIBBudget(target_latency=share * that)` trained for `--steps` steps on
random images (the point is where the budget lands in a real measurement,
not accuracy: the end of training closes what the KL pressure has not).
The table gives the target, the latency model's last prediction, the slim
model's measured time when training ended (`VIBBudget.measured`) and the
time of that slim model measured again afterwards, and how long building
the latency model and training took.
"""

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import ROOT, load_average, load_note, machine, positive_int, publish  # noqa: E402
from coverage import FAMILIES, build  # noqa: E402

import keras_vib as kv  # noqa: E402
from keras_vib import export  # noqa: E402

SECTION = "## A latency budget in LiteRT (`benchmarks/latency_budget.py`)"


def run(args, quantization):
    rng = np.random.default_rng(args.seed)
    keras.utils.set_random_seed(args.seed)
    model, size = build(args.family, args.size, rng)
    gated = kv.add_gates(model, kl_weight=1e-4)
    shape = (args.steps * args.batch_size, *model.input_shape[1:])
    x = rng.normal(size=shape).astype("float32")
    y = rng.integers(0, model.output_shape[-1], len(x))
    q = None if quantization == "float32" else quantization

    def timed(m):
        tflite = export.to_tflite(m, q, representative_data=x[:16] if q else None)
        return export.benchmark_tflite(tflite, runs=30)["median_ms"]

    original = timed(model)
    target = args.share * original
    gated.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    budget = kv.VIBBudget(
        target_latency=target, latency_quantization=q, check_every=5, verbose=1
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gated.fit(x, y, batch_size=args.batch_size, epochs=1, callbacks=[budget],
                  verbose=0)  # fmt: skip
    wall = time.perf_counter() - start
    again = timed(gated)
    return {
        "family": f"{args.family} {size}x{size}",
        "quantization": quantization,
        "original": original,
        "target": target,
        "predicted": budget.predicted,
        "measured": budget.measured,
        "again": again,
        "structure_flops": kv.compression_report(gated).flops,
        "total_flops": kv.compression_report(gated).total_flops,
        "wall": wall,
        "warnings": [str(w.message).split(":")[0] for w in caught],
        "reached": budget.reached_epoch,
    }


def table(rows, args, wall, load_before):
    lines = [
        SECTION,
        "",
        f"`python benchmarks/latency_budget.py --family {args.family} --size "
        f"{args.size} --share {args.share} --steps {args.steps} --batch-size "
        f"{args.batch_size} --quantizations {' '.join(args.quantizations)}`",
        "",
        f"- Machine: {machine()}.",
        load_note(load_before, wall),
        "- Random weights and random images: where the budget lands, not "
        "accuracy. LiteRT, XNNPACK, one thread, medians of 30 invokes; int8: "
        "calibrated on 16 of the random images (the latency model times its "
        "layers in float32 and the whole model in int8). Training time "
        "includes building the latency model (each layer converted and "
        "timed; cached on disk for the next run) and the final measurements.",
        "",
        "| model | LiteRT | original ms | target ms | predicted ms | measured "
        "at the end | measured again | off the target | MACs kept | training s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['quantization']} | {r['original']:.2f} | "
            f"{r['target']:.2f} | {r['predicted']:.2f} | {r['measured']:.2f} | "
            f"{r['again']:.2f} | {100 * (r['again'] / r['target'] - 1):+.1f} % | "
            f"{100 * r['structure_flops'] / r['total_flops']:.1f} % | "
            f"{r['wall']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), default="ResNet50")
    parser.add_argument("--size", type=positive_int, default=224)
    parser.add_argument("--share", type=float, default=0.333)
    parser.add_argument("--steps", type=positive_int, default=20)
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quantizations", nargs="+", choices=("float32", "int8"),
        default=["float32", "int8"],
    )  # fmt: skip
    parser.add_argument("--write", action="store_true", help="into BENCHMARKS.md")
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    load_before, start = load_average(), time.perf_counter()
    rows = []
    for quantization in args.quantizations:
        rows.append(run(args, quantization))
        print(rows[-1], flush=True)
    text = table(rows, args, time.perf_counter() - start, load_before)
    publish(text, args.benchmarks_md, SECTION, args.write)


if __name__ == "__main__":
    main()
