"""Where a gated epoch's extra time goes: the gates' noise draws against
the rest of their work, per net and backend.

    python benchmarks/gate_ablation.py [--backends tensorflow jax]
        [--nets lenet300 lenet5 vit] [--rounds 3] [--write]

The nets, data and timing of `benchmarks/gate_speed.py`. Per net, the
plain model, the gated one, and the gated one with its Gaussian draws
(`keras.random.normal` in `VIBGate.call`) replaced while its training step
is traced, as a measuring device (not keras_vib options): by zeros (all the
gate work but the draws), by as many uniform numbers (the raw random
numbers any sampler starts from), and by Box-Muller normals made from
half as many pairs of uniforms (`sqrt(-2 log u1) (cos, sin)(2 pi u2)`: the
same standard normal distribution as `keras.random.normal`, other draws).
On TensorFlow also the plain and gated models compiled with
`jit_compile=True` (XLA; Keras leaves it off on CPU-only machines).
"""

import json
import math
import statistics
import sys
import time

from _common import (
    cpu_flags,
    load_average,
    load_note,
    machine,
    net_parser,
    net_rounds,
    paired_ratio,
    publish,
)
from gate_speed import NAMES, SIZES, _EpochTimer, build

SECTION = "## Where a gated epoch's time goes (`benchmarks/gate_ablation.py`)"
VARIANTS = (
    "plain",
    "gated",
    "zeros",
    "uniform",
    "box-muller",
    "plain xla",
    "gated xla",
)
LABELS = {
    "zeros": "gated, no draws",
    "uniform": "gated, uniform draws",
    "box-muller": "gated, Box-Muller normals",
    "plain xla": "plain, XLA",
    "gated xla": "gated, XLA",
}


def sampler(name):
    """A stand-in for `keras.random.normal` (None: Keras's own)."""
    import keras

    if name == "zeros":
        return lambda shape, dtype=None, seed=None, **_: keras.ops.zeros(shape, dtype)
    if name == "uniform":
        return lambda shape, dtype=None, seed=None, **_: keras.random.uniform(
            shape, dtype=dtype, seed=seed
        )
    if name == "box-muller":

        def box_muller(shape, dtype=None, seed=None, **_):
            shape = tuple(shape)  # (the batch size may be a tensor)
            count = 1
            for d in shape:
                count = count * d
            half = (count + 1) // 2
            u = keras.random.uniform((2, half), dtype="float32", seed=seed)
            r = keras.ops.sqrt(-2.0 * keras.ops.log(1.0 - u[0]))
            t = 2.0 * math.pi * u[1]
            z = keras.ops.concatenate([r * keras.ops.cos(t), r * keras.ops.sin(t)])
            return keras.ops.cast(keras.ops.reshape(z[:count], shape), dtype)

        return box_muller
    return None


def worker(nets, scale):
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    normal = keras.random.normal
    variants = [
        v for v in VARIANTS if "xla" not in v or keras.backend.backend() == "tensorflow"
    ]
    models, data = {}, {}
    for net in nets:
        examples, batch = SIZES[net]
        examples = max(batch, int(examples * scale))
        for variant in variants:
            keras.random.normal = sampler(variant.split()[0]) or normal
            try:
                model = build(net, not variant.startswith("plain"))
                model.compile(
                    keras.optimizers.Adam(1e-3),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=True if "xla" in variant else "auto",
                )
                if net not in data:
                    shape = (examples, *model.input_shape[1:])
                    x = rng.uniform(size=shape).astype("float32")
                    data[net] = (x, rng.integers(0, 10, examples), batch)
                x, y, batch = data[net]
                model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # traced
            finally:
                keras.random.normal = normal
            models[net, variant] = model
    print(json.dumps({"ready": keras.backend.backend()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["do"] != "epoch":
            break
        key = (command["net"], command["variant"])
        if key not in models:
            print(json.dumps({"seconds": None}), flush=True)
            continue
        timer = _EpochTimer()
        x, y, batch = data[command["net"]]
        models[key].fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[timer])
        print(json.dumps({"seconds": timer.seconds}), flush=True)


def table(times, args, wall, load_before):
    cpu = cpu_flags()
    lines = [
        SECTION,
        "",
        "`python benchmarks/gate_ablation.py --backends "
        f"{' '.join(args.backends)} --nets {' '.join(args.nets)} "
        f"--rounds {args.rounds}`",
        "",
        f"- Machine: {machine(('tensorflow', 'keras', 'jax'))}.",
        load_note(load_before, wall),
        "- Epoch seconds as in `gate_speed.py` (median over the rounds, "
        "interleaved), and each over the plain model's epoch (compiled the "
        "same way: Keras's default, or XLA for the two XLA rows), the median "
        "over the rounds of the two epochs' ratio in the same round.",
        "",
        "| net | backend | CPU | plain s | "
        + " | ".join(LABELS.get(v, v) for v in VARIANTS[1:])
        + " |",
        "|---|---|---|---|" + "---|" * (len(VARIANTS) - 1),
    ]
    for net in args.nets:
        for backend in args.backends:
            plain = times.get((backend, net, "plain"))
            if plain is None:
                continue
            cells = []
            for v in VARIANTS[1:]:
                t = times.get((backend, net, v))
                base = times.get((backend, net, "plain xla" if "xla" in v else "plain"))
                cells.append(
                    "-"
                    if t is None
                    else f"{statistics.median(t):.2f} ({paired_ratio(t, base):.2f}x)"
                )
            plain = statistics.median(plain)
            lines.append(
                f"| {NAMES[net]} | {backend} | {cpu} | {plain:.2f} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = net_parser(__doc__, sorted(NAMES), ["lenet300", "lenet5", "vit"], 3)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.nets, args.scale)
    load_before, start = load_average(), time.perf_counter()
    answers = net_rounds(args, __file__, VARIANTS)
    times = {
        k: [a["seconds"] for a in v]
        for k, v in answers.items()
        if v[0]["seconds"] is not None  # a variant this backend does not have
    }
    text = table(times, args, time.perf_counter() - start, load_before)
    publish(text, args.benchmarks_md, SECTION, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
