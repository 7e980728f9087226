"""Gated training against plain training, per net and backend, with and
without keras_vib's callbacks.

    python benchmarks/gate_speed.py [--backends tensorflow jax] [--rounds 3]
        [--nets lenet300 lenet5 mobilenetv2 vit] [--write]

One worker process per backend holds, for each net, the plain model and
the gated one (the zoo's nets with `vib=True`; MobileNetV2 at 96x96 and
10 classes, random weights, through `add_gates`), compiled as Keras does
by default (Adam, `jit_compile="auto"`, one step per call unless
`--steps-per-execution`), warmed up by one epoch. The main process
interleaves them: each round, every backend in turn (the order rotating)
trains, per net, one epoch of the plain model, of the gated model, of the
gated model with `VIBMonitor`, and with `VIBBudget(target_flops=b)` (`b`
from 1 % to 5 %: too far to reach in one epoch on labels the nets can
learn, the gates keep their noise; a budget reached is reported), in an
order that rotates each round. An epoch's time runs from
`on_epoch_begin` to `on_epoch_end` (what `fit` does once per call is left
out: a user calls it once). The table has the medians over the rounds
and, for each ratio, the median over the rounds of the two epochs'
ratio in the same round; every row names the CPU and whether it has
AVX-512.
"""

import json
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
    positive_int,
    publish,
)

SECTION = "## Gated training against plain (`benchmarks/gate_speed.py`)"
NETS = ("lenet300", "lenet5", "mobilenetv2", "vit")
NAMES = {
    "lenet300": "LeNet-300-100",
    "lenet5": "LeNet-5-Caffe",
    "mobilenetv2": "MobileNetV2 96x96",
    "vit": "ViT (MNIST)",
}
VARIANTS = ("plain", "gated", "monitor", "budget")
# Examples per timed epoch and batch size, per net (LeNet-300-100: a whole
# MNIST epoch; the others a few seconds), and the FLOPs budget of the
# `VIBBudget` rows: far enough not to be reached in one epoch.
SIZES = {
    "lenet300": (60000, 100),
    "lenet5": (20000, 100),
    "mobilenetv2": (320, 32),
    "vit": (10000, 100),
}
BUDGETS = {"lenet300": 0.01, "lenet5": 0.01, "mobilenetv2": 0.05, "vit": 0.05}


# -- the worker (one process per backend) -------------------------------------


def build(net, vib):
    import keras

    import keras_vib as kv

    keras.utils.set_random_seed(0)
    if net == "mobilenetv2":
        model = keras.applications.MobileNetV2(
            input_shape=(96, 96, 3), weights=None, classes=10
        )
        return kv.add_gates(model) if vib else model
    return kv.models.get_model(net, vib=vib)


class _EpochTimer:
    """A callback: the seconds from `on_epoch_begin` to `on_epoch_end`."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds = time.perf_counter() - self.start

        return Timer()


def prepare(net, examples, batch, rng, **compile_args):
    """`({vib: model}, (x, y, batch))`: the net's gated and plain models,
    compiled as Keras does by default (Adam; `compile_args` on top), and
    `examples` random images with labels a net can learn, each model
    warmed up (compiled and traced) by one epoch of them."""
    import keras
    import numpy as np

    models = {}
    for vib in (True, False):
        model = build(net, vib)
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            **compile_args,
        )
        models[vib] = model
    x = rng.uniform(size=(examples, *models[False].input_shape[1:])).astype("float32")
    # Labels a net can learn (the class whose fixed random projection of
    # the image is largest): random labels teach nothing, so the gates
    # close whatever the pressure and a budget is reached within an epoch.
    projection = rng.normal(size=(x[0].size, 10)).astype("float32")
    data = (x, np.argmax(x.reshape(examples, -1) @ projection, axis=1), batch)
    for model in models.values():
        model.fit(x, data[1], batch_size=batch, epochs=1, verbose=0)
    return models, data


def worker(nets, scale, steps_per_execution):
    import keras
    import numpy as np

    import keras_vib as kv

    rng = np.random.default_rng(0)
    models, data = {}, {}
    for net in nets:
        examples, batch = SIZES[net]
        examples = max(batch, int(examples * scale))
        pair, data[net] = prepare(
            net, examples, batch, rng, steps_per_execution=steps_per_execution
        )
        for vib, model in pair.items():
            models[net, vib] = model
    print(json.dumps({"ready": keras.backend.backend()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["do"] != "epoch":
            break
        net, variant = command["net"], command["variant"]
        model = models[net, variant != "plain"]
        timer = _EpochTimer()
        callbacks = [timer]
        if variant == "monitor":
            callbacks.insert(0, kv.VIBMonitor(verbose=0))
        elif variant == "budget":
            callbacks.insert(0, kv.VIBBudget(target_flops=BUDGETS[net], verbose=0))
        x, y, batch = data[net]
        # The budget's end of training closes units and may stop the noise:
        # the gated model gets its weights back after it.
        saved = model.get_weights() if variant == "budget" else None
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
        reached = variant == "budget" and callbacks[0].reached_epoch is not None
        if saved is not None:
            model.set_weights(saved)
        print(json.dumps({"seconds": timer.seconds, "reached": reached}), flush=True)


# -- the main process ---------------------------------------------------------


def table(times, args, wall, load_before):
    cpu = cpu_flags()
    lines = [
        SECTION,
        "",
        "`python benchmarks/gate_speed.py --backends "
        f"{' '.join(args.backends)} --rounds {args.rounds} --nets "
        f"{' '.join(args.nets)} --steps-per-execution {args.steps_per_execution}`",
        "",
        f"- Machine: {machine(('tensorflow', 'keras', 'jax'))}.",
        load_note(load_before, wall),
        "- Epoch seconds (median over the rounds); each ratio is the median "
        "over the rounds of the two epochs' ratio in the same round (paired: "
        "a shared machine's bursts of other work slow whole rounds down); "
        "one epoch of synthetic "
        "data per net (LeNets and ViT: 28x28x1 images; MobileNetV2: 96x96x3), "
        'Adam, Keras\'s default compile (XLA where `jit_compile="auto"` '
        f"allows it), {args.steps_per_execution} step(s) per call.",
        "",
        "| net | backend | CPU | plain s | gated s | gated / plain | + VIBMonitor "
        "/ plain | + VIBBudget / plain | VIBBudget / gated |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for net in args.nets:
        for backend in args.backends:
            t = {v: times.get((backend, net, v)) for v in VARIANTS}
            if None in t.values():
                continue
            ratios = [
                paired_ratio(t[a], t[b])
                for a, b in [("gated", "plain"), ("monitor", "plain"),
                             ("budget", "plain"), ("budget", "gated")]
            ]  # fmt: skip
            lines.append(
                f"| {NAMES[net]} | {backend} | {cpu} | "
                f"{statistics.median(t['plain']):.2f} | "
                f"{statistics.median(t['gated']):.2f} | "
                + " | ".join(f"{r:.2f}x" for r in ratios)
                + " |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = net_parser(__doc__, NETS, NETS, rounds=3)
    parser.add_argument("--steps-per-execution", type=positive_int, default=1)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.nets, args.scale, args.steps_per_execution)
    load_before, start = load_average(), time.perf_counter()
    more = ["--steps-per-execution", str(args.steps_per_execution)]
    answers = net_rounds(args, __file__, VARIANTS, more)
    times = {k: [a["seconds"] for a in v] for k, v in answers.items()}
    reached = {
        (b, n) for (b, n, _), v in answers.items() if any(a["reached"] for a in v)
    }
    text = table(times, args, time.perf_counter() - start, load_before)
    if reached:
        text += (
            "\n- The budget was reached (the noise then off) in: "
            + ", ".join(f"{NAMES[n]} on {b}" for b, n in sorted(reached))
            + ".\n"
        )
    publish(text, args.benchmarks_md, SECTION, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
