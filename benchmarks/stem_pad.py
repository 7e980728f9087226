"""Does a stem's PAD cost inside the whole LiteRT model?

    python benchmarks/stem_pad.py [--families ResNet50 DenseNet121]
        [--size 224] [--closed 0.75] [--write]

`benchmarks/litert_profile.py` times each operator alone: there the
3-channel PAD before ResNet50's and DenseNet121's 7x7 stem convolution
takes 11-14 % of the slim model's time. Inside a whole model XNNPACK may
fuse a constant pad into the convolution after it. Here the slim model of
the same draw (`round_to.py`'s: `--closed` of every gate closed at random)
is timed as it is and with its first `ZeroPadding2D` dropped and the next
convolution's padding made "same" (not the same model: a measuring device
for the pad's cost; same operators otherwise), interleaved.
"""

import argparse
import copy
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
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
from coverage import build, set_gates  # noqa: E402

import keras_vib as kv  # noqa: E402
from keras_vib import export  # noqa: E402

SECTION = "## The stem's PAD in the whole model (`benchmarks/stem_pad.py`)"


def without_stem_pad(model):
    """`model` with its first ZeroPadding2D gone and the convolution that
    read it padding "same" (its weights kept), or None without one."""
    config = model.get_config()
    layers = config["layers"]
    pad = next((x for x in layers if x["class_name"] == "ZeroPadding2D"), None)
    if pad is None:
        return None
    conv = next(
        (x for x in layers if x["class_name"] == "Conv2D"
         and x["inbound_nodes"] and pad["name"] in str(x["inbound_nodes"])),
        None,
    )  # fmt: skip
    if conv is None:
        return None
    conv["inbound_nodes"] = copy.deepcopy(pad["inbound_nodes"])
    conv["config"]["padding"] = "same"
    layers.remove(pad)
    new = keras.Model.from_config(config)
    for layer in new.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return new


def run(name, args):
    rng = np.random.default_rng(args.seed)
    model, size = build(name, args.size, rng)
    gated = kv.add_gates(model, kl_weight=1e-5)
    set_gates(gated, rng, closed=args.closed, negative=False)
    slim = kv.slim_model(gated)
    other = without_stem_pad(slim)
    if other is None:
        return None
    files = {"with": export.to_tflite(slim), "without": export.to_tflite(other)}
    times = interleaved_ms(files, args.runs, args.rounds, warmup=5)
    return {"family": f"{name} {size}x{size}", **times}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["ResNet50", "DenseNet121"])
    parser.add_argument("--size", type=positive_int, default=224)
    parser.add_argument("--closed", type=float, default=0.75)
    parser.add_argument("--runs", type=positive_int, default=30)
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    load_before, start = load_average(), time.perf_counter()
    rows = [r for r in (run(name, args) for name in args.families) if r]
    lines = [
        SECTION,
        "",
        f"`python benchmarks/stem_pad.py --families {' '.join(args.families)} "
        f"--size {args.size} --closed {args.closed} --runs {args.runs} "
        f"--rounds {args.rounds}`",
        "",
        f"- Machine: {machine()}.",
        load_note(load_before, time.perf_counter() - start),
        f"- The slim model of `round_to.py`'s draw ({100 * args.closed:.0f} % "
        "of every gate closed at random); LiteRT float32, XNNPACK, one "
        f"thread; the median of {args.rounds} interleaved rounds of "
        f'{args.runs} invokes. Without the pad: its convolution pads "same" '
        "instead (a measuring device, not the same model).",
        "",
        "| model | slim ms, with the stem's PAD | without it | difference |",
        "|---|---|---|---|",
    ]
    for r in rows:
        diff = 100 * (r["with"] / r["without"] - 1)
        lines.append(
            f"| {r['family']} | {r['with']:.3f} | {r['without']:.3f} | {diff:+.1f} % |"
        )
    publish("\n".join(lines) + "\n", args.benchmarks_md, SECTION, write=args.write)


if __name__ == "__main__":
    main()
