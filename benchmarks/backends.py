"""Training and slimming speed per Keras backend, into BENCHMARKS.md.

    python benchmarks/backends.py --write

One worker process per backend (TensorFlow, JAX, and torch where it is
installed), each holding the gated and the plain LeNet-300-100 and LeNet-5
(the zoo's, on MNIST-shaped synthetic data: speed does not depend on the
pixels). The main process interleaves them: for each timed epoch, every
backend in turn (the order rotating) trains every model for one epoch of
`--examples` examples in batches of 100; the table has the median epoch time
per model and backend, the gated / plain ratio per backend, and each
backend's time over TensorFlow's. Then each backend times `slim_model` on
the gated LeNet-5 with about half of every gate closed: its first call (with
whatever the backend compiles) and the median of the next ones.
"""

import argparse
import json
import statistics
import sys
import time

from _common import (
    ROOT,
    Worker,
    load_average,
    load_note,
    machine,
    positive_int,
    publish,
)

SECTION = "## Backends: training and slimming speed"
MODELS = ("lenet300", "lenet5")
NAMES = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5-Caffe"}


# -- the worker (one process per backend) -------------------------------------


def worker(examples):
    """Reads commands on stdin, answers one JSON line per command."""
    import keras
    import numpy as np

    import keras_vib as kv

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(examples, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, examples)
    keras.utils.set_random_seed(0)
    nets = {}
    for name in MODELS:
        for vib in (True, False):
            model = kv.models.get_model(name, vib=vib)
            model.compile(
                keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                steps_per_execution=20,
            )
            model.fit(x[:2000], y[:2000], batch_size=100, epochs=1, verbose=0)
            nets[name, vib] = model  # compiled and traced: warm
    print(json.dumps({"ready": keras.backend.backend()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["do"] == "epoch":
            model = nets[command["model"], command["vib"]]
            start = time.perf_counter()
            model.fit(x, y, batch_size=100, epochs=1, verbose=0, shuffle=False)
            answer = {"seconds": time.perf_counter() - start}
        elif command["do"] == "slim":
            gated = kv.models.get_model("lenet5", vib=True)
            for _, gate in kv.report.gates(gated):
                n = gate.units
                gate.log_sigma2.assign(np.where(rng.random(n) < 0.5, 6.0, -9.0))
            times = []
            for _ in range(command["repeats"] + 1):
                start = time.perf_counter()
                slim = kv.slim_model(gated)
                times.append(time.perf_counter() - start)
            out = keras.ops.convert_to_numpy(slim(x[:8]))
            ref = keras.ops.convert_to_numpy(gated(x[:8]))
            answer = {
                "first": times[0],
                "median": statistics.median(times[1:]),
                "max_diff": float(np.abs(out - ref).max()),
            }
        else:
            break
        print(json.dumps(answer), flush=True)


# -- the main process ---------------------------------------------------------


def available(backends):
    import importlib.util

    modules = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
    return [b for b in backends if importlib.util.find_spec(modules[b])]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument("--examples", type=positive_int, default=10000)
    parser.add_argument("--slim-repeats", type=positive_int, default=3)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.examples)
    names = available(args.backends)
    skipped = [b for b in args.backends if b not in names]
    load_before, start = load_average(), time.perf_counter()
    argv = ["--examples", str(args.examples)]
    backends = [Worker(name, __file__, argv) for name in names]
    times = {(b.name, m, v): [] for b in backends for m in MODELS for v in (1, 0)}
    try:
        for epoch in range(args.epochs):
            shift = epoch % len(backends)
            for backend in backends[shift:] + backends[:shift]:
                for model in MODELS:
                    for vib in (True, False):
                        answer = backend.ask(do="epoch", model=model, vib=vib)
                        times[backend.name, model, int(vib)].append(answer["seconds"])
            print(f"epoch {epoch + 1}/{args.epochs} done", flush=True)
        slim = {b.name: b.ask(do="slim", repeats=args.slim_repeats) for b in backends}
    finally:
        for backend in backends:
            backend.close()
    wall = time.perf_counter() - start
    median = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/backends.py {' '.join(argv or sys.argv[1:])}`.",
        f"Machine: {machine(('tensorflow', 'keras', 'jax', 'torch'))}.",
        "",
        "| net | backend | gated epoch s | plain epoch s | gated / plain | "
        "gated epoch / TensorFlow's |",
        "|---|---|---|---|---|---|",
    ]
    for model in MODELS:
        for backend in names:
            gated, plain = median[backend, model, 1], median[backend, model, 0]
            tf_gated = median.get(("tensorflow", model, 1))
            versus = f"{gated / tf_gated:.2f}x" if tf_gated else "-"
            lines.append(
                f"| {NAMES[model]} | {backend} | {gated:.2f} | {plain:.2f} | "
                f"{gated / plain:.2f}x | {versus} |"
            )
    lines += [
        "",
        "| backend | first `slim_model` of LeNet-5 s | next ones (median) s | "
        "largest difference slim vs gated |",
        "|---|---|---|---|",
    ]
    for backend in names:
        s = slim[backend]
        first, then, diff = s["first"], s["median"], s["max_diff"]
        lines.append(f"| {backend} | {first:.2f} | {then:.3f} | {diff:.1e} |")
    lines += [
        "",
        f"- An epoch: {args.examples:,} synthetic 28x28 images in batches of 100, "
        "Adam, 20 steps per graph call, after a warm-up epoch (compiled and "
        f"traced); median over {args.epochs} epochs, the backends interleaved "
        "epoch by epoch (the order rotating), each in its own process.",
        f"- `slim_model`: the gated LeNet-5 with about half of every gate closed; "
        f"the first call, then the median of {args.slim_repeats}.",
    ]
    if skipped:
        lines.append(f"- Not installed here, so not measured: {', '.join(skipped)}.")
    lines.append(load_note(load_before, wall))
    publish("\n".join(lines) + "\n", args.benchmarks_md, SECTION, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
