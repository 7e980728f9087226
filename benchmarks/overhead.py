"""What the VIB gates cost in training, and what slimming buys at inference.

    python benchmarks/overhead.py --epochs 8 --trained runs/paper_tables/*

For LeNet-300-100 and LeNet-5-Caffe on MNIST (`keras_vib.models`, gated with
`vib=True` against the same network of stock layers with `vib=False`):

- Training: the wall time of an epoch of `fit` (no callbacks, Adam, the same
  in-memory training images in the same shuffled order, in batches of
  `--batch-size`) for the gated and the plain model (and the ablation
  below), in one process, after a few untimed warm-up batches of each
  (tracing). They are interleaved at a fine grain to cancel drift and the
  bursts of other work on a shared machine: every epoch is cut into
  `--chunks` chunks of whole batches, and the models train on each chunk in
  turn, the order rotating from chunk to chunk. Reported: the median over
  the epochs of the per-epoch ratio gated / plain (target <= 1.15x), the
  median over all chunks of the per-chunk ratio, and the cost of what a
  `VIBMonitor` adds once per epoch (one `compression_report`). To show where
  the overhead comes from, a third model trains in the same chunks: the
  gated one with its gates' noise switched off (an ablation made here, not a
  keras_vib option: each gate multiplies by `mu` and keeps its KL term, so
  everything but the noise is still paid: the products, the KL terms, their
  gradients and the optimizer's updates of the gate variables). And the
  gates' draws for one epoch are timed alone: the Gaussian draws the gates
  make (one `keras.random.normal` of shape `(batch, units)` per gate and
  batch), and as many uniform draws (`keras.random.uniform`, the raw random
  numbers that any sampler built from TensorFlow's random ops starts from);
  `1 + draws / plain epoch` is the ratio the draws alone would give.
- Inference: the gated model after these epochs (KL at the model's default
  weight from the first step, no warm-up: whatever it has pruned by then) is
  slimmed with `slim_model` and compared with the plain model trained as
  long: the ratio of their multiply-accumulates (`compression_report`: the
  ideal speed-up), the measured speed-up in Keras (`predict_on_batch`, one
  example and `--keras-batch` examples) and in LiteRT (float32 `.tflite`,
  median single-example `invoke` on 1 thread); target: a LiteRT speed-up of
  at least half the MAC ratio. The latencies are medians over `--rounds`
  rounds that alternate the two models. The LiteRT latency of a model of one
  Dense unit, timed in the same rounds, gives the fixed cost of an invoke
  (the floor), and the speed-up once it is taken off both; the latencies
  with LiteRT's reference kernels (no XNNPACK), whose times follow the
  arithmetic more closely, show how much of the MAC ratio is there before
  the fixed costs of the optimised kernels.
- `--trained RUN_DIR ...`: the same LiteRT figures for the final slim models
  of `keras-vib train` runs (e.g. those of `benchmarks/paper_tables.py`),
  which are pruned much further than the models of these few epochs.

It prints the tables, PASS or MISS against each target, and writes them, with
the command and the machine, into the section "Gate overhead and slim
speed-up" of `BENCHMARKS.md` (in place of an older one; `--benchmarks-md`
writes elsewhere, `--no-write` nowhere). Nothing here is a timed test: a
quick smoke run is `--epochs 2 --train-examples 500 --runs 5 --rounds 1`.
"""

import argparse
import inspect
import json
import os
import pathlib
import shlex
import statistics
import sys
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import (  # noqa: E402
    ROOT,
    load_average,
    load_note,
    machine,
    positive_int,
    publish,
)

import keras_vib as kv  # noqa: E402
from keras_vib import datasets, export, models  # noqa: E402

SECTION = "## Gate overhead and slim speed-up (`benchmarks/overhead.py`)"
NAMES = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5-Caffe"}
TRAIN_TARGET = 1.15  # gated epoch / plain epoch, at most
SPEEDUP_TARGET = 0.5  # LiteRT speed-up / MAC ratio, at least
# Below this fraction of the floor above it, a latency is the floor's noise.
FLOOR_MARGIN = 0.1


def mnist_arrays(split, data_dir):
    ds = datasets.load("mnist", split, 10000, shuffle=False, data_dir=data_dir)
    xs, ys = zip(*ds.as_numpy_iterator())
    return np.concatenate(xs), np.concatenate(ys)


def build(name, vib, args):
    extra = {"kl_weight": args.kl_weight} if vib and args.kl_weight is not None else {}
    model = models.get_model(name, vib=vib, **extra)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def default_kl(builder):
    return inspect.signature(builder).parameters["kl_weight"].default


def timed_fit(model, x, y, args):
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def draw_seconds(model, batch_size, batches, sampler, repeats=3):
    """Wall time of the gates' random draws for `batches` training batches.

    One `sampler((batch_size, units), seed=...)` per gate and batch: with
    `keras.random.normal`, the draw each gate makes in a training step (a
    conv gate draws one number per example and channel). Summed so that the
    draws are not pruned away; in one `tf.function` loop, the median of
    `repeats` runs.
    """
    units = [gate.units for _, gate in kv.gates.gates(model)]
    seed = keras.random.SeedGenerator(0)

    @tf.function
    def draws(n):
        total = tf.constant(0.0)
        for _ in tf.range(n):
            for u in units:
                total += tf.reduce_sum(sampler((batch_size, u), seed=seed))
        return total

    draws(tf.constant(2))  # trace, untimed
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        draws(tf.constant(batches))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _noiseless_call(gate, inputs, training=None):
    """A `VIBGate.call` without the noise: `inputs * mu`, KL term kept."""
    gate.add_loss(gate.kl_loss())
    return inputs * keras.ops.cast(gate.mu, inputs.dtype)


def build_noiseless(name, args):
    """The gated model with its gates' noise switched off (the ablation)."""
    model = build(name, True, args)
    for _, gate in kv.gates.gates(model):
        gate.call = types.MethodType(_noiseless_call, gate)
    return model


def time_training(name, x, y, args):
    """Epochs of the gated, the plain and the noiseless model, interleaved.

    Each epoch shuffles the training set once (the same order for all
    models) and cuts it into `--chunks` runs of whole batches; the models
    train on each chunk in turn, the order rotating from chunk to chunk
    (gated-plain-noiseless, then plain-noiseless-gated, ...), so that the
    bursts of other work on a shared machine slow all of them down alike.
    An epoch's time is the sum of its chunks.
    """
    keras.utils.set_random_seed(args.seed)
    models_ = {
        "gated": build(name, True, args),
        "plain": build(name, False, args),
        "noiseless": build_noiseless(name, args),
    }
    warm = min(len(x), 5 * args.batch_size)
    for model in models_.values():  # trace the train functions, untimed
        model.fit(x[:warm], y[:warm], batch_size=args.batch_size, verbose=0)
    batches = -(-len(x) // args.batch_size)
    chunks = min(args.chunks, batches)
    bounds = [args.batch_size * (batches * k // chunks) for k in range(chunks + 1)]
    rng = np.random.default_rng(args.seed)
    names = list(models_)
    epochs = {which: [] for which in names}
    chunk_ratios = []
    turn = 0
    for _ in range(args.epochs):
        order = rng.permutation(len(x))
        epoch = dict.fromkeys(names, 0.0)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            xs, ys = x[order[start:stop]], y[order[start:stop]]
            seconds = {}
            first = turn % len(names)
            for which in names[first:] + names[:first]:
                seconds[which] = timed_fit(models_[which], xs, ys, args)
                epoch[which] += seconds[which]
            turn += 1
            chunk_ratios.append(seconds["gated"] / seconds["plain"])
        for which in names:
            epochs[which].append(epoch[which])
    ratios = [g / p for g, p in zip(epochs["gated"], epochs["plain"])]
    noiseless = [n / p for n, p in zip(epochs["noiseless"], epochs["plain"])]
    gated = models_["gated"]
    monitor = []
    for _ in range(3):
        start = time.perf_counter()
        kv.compression_report(gated)
        monitor.append(time.perf_counter() - start)
    draws = {
        kind: draw_seconds(gated, args.batch_size, batches, sampler)
        for kind, sampler in (
            ("normal", keras.random.normal),
            ("uniform", keras.random.uniform),
        )
    }
    return (
        gated,
        models_["plain"],
        {
            "gated_s": statistics.median(epochs["gated"]),
            "plain_s": statistics.median(epochs["plain"]),
            "ratio": statistics.median(ratios),
            "ratios": ratios,
            "noiseless_ratio": statistics.median(noiseless),
            "chunk_ratio": statistics.median(chunk_ratios),
            "chunks": chunks,
            "monitor_s": statistics.median(monitor),
            "draw_s": draws["normal"],
            "uniform_s": draws["uniform"],
        },
    )


def keras_latency(model, x, runs):
    model.predict_on_batch(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def interleaved(measure, candidates, rounds):
    """Median over rounds of `measure(candidate)`, alternating the order."""
    names = list(candidates)
    values = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            values[name].append(measure(candidates[name]))
    return {name: statistics.median(v) for name, v in values.items()}


def floor_model(input_shape):
    """A near-empty model (one Dense unit): the fixed cost of an invoke."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ],
        name="floor",
    )


def litert_latencies(files, input_shape, args):
    """LiteRT latencies of `files` (plain, slim) and of the floor model.

    Returns the medians over the rounds with the default kernels (XNNPACK)
    for the three, and with the reference kernels for plain and slim.
    """
    files = dict(files)
    files["floor"] = export.to_tflite(floor_model(input_shape))
    litert = interleaved(
        lambda f: export.benchmark_tflite(
            f, runs=args.runs, warmup=args.warmup, num_threads=1
        )["median_ms"],
        files,
        args.rounds,
    )
    reference = interleaved(
        lambda f: export.benchmark_tflite(
            f,
            runs=max(3, args.runs // 20),
            warmup=min(args.warmup, 3),
            num_threads=1,
            kernels="reference",
        )["median_ms"],
        {name: files[name] for name in ("plain", "slim")},
        args.rounds,
    )
    return litert, reference


def time_inference(gated, plain, x_test, y_test, args):
    slim = kv.slim_model(gated)
    report = kv.compression_report(slim, reference=gated)
    models_ = {"plain": plain, "slim": slim}
    one = x_test[:1]
    batch = x_test[: args.keras_batch]
    keras1 = interleaved(
        lambda m: keras_latency(m, one, args.keras_runs), models_, args.rounds
    )
    keras_n = interleaved(
        lambda m: keras_latency(m, batch, max(3, args.keras_runs // 10)),
        models_,
        args.rounds,
    )
    files = {name: export.to_tflite(m) for name, m in models_.items()}
    errors = {
        name: 100.0 * (1.0 - export.evaluate_tflite(f, (x_test, y_test)))
        for name, f in files.items()
    }
    litert, reference = litert_latencies(files, plain.input_shape[1:], args)
    return {
        "structure": report.structure,
        "flop_ratio": report.total_flops / max(1, report.flops),
        "flops": report.flops,
        "total_flops": report.total_flops,
        "keras1": keras1,
        "keras_n": keras_n,
        "litert": litert,
        "reference": reference,
        "errors": errors,
        "batch": len(batch),
    }


def trained_run(path):
    """A `keras-vib train` output folder: `(folder, its report.json)`."""
    run = pathlib.Path(path)
    missing = [f for f in ("slim.keras", "report.json") if not (run / f).is_file()]
    if missing:
        raise argparse.ArgumentTypeError(
            "expected a `keras-vib train --out` folder holding slim.keras and "
            f"report.json; {', '.join(missing)} missing in {path!r}"
        )
    try:
        report = json.loads((run / "report.json").read_text())
        name = report["config"]["model"]
    except (ValueError, KeyError, TypeError) as error:
        raise argparse.ArgumentTypeError(
            f"expected the report.json that `keras-vib train` writes in {path!r} "
            f"(with config.model); reading it failed: {error!r}"
        ) from None
    if name not in NAMES:
        raise argparse.ArgumentTypeError(
            f"expected a run of one of {sorted(NAMES)}; {path!r} is a run of {name!r}"
        )
    return run, report


def time_trained(run, saved, x_test, y_test, args):
    """The LiteRT speed-up of a trained run's slim model over the plain net.

    `saved` is the run's report.json, as `trained_run` read it.
    """
    name = saved["config"]["model"]
    slim = keras.models.load_model(run / "slim.keras")
    plain = models.get_model(name, vib=False)
    files = {"plain": export.to_tflite(plain), "slim": export.to_tflite(slim)}
    error = 100.0 * (1.0 - export.evaluate_tflite(files["slim"], (x_test, y_test)))
    litert, reference = litert_latencies(files, plain.input_shape[1:], args)
    flops = kv.compression_report(slim).flops
    total_flops = kv.compression_report(plain).total_flops
    return {
        "name": name,
        "structure": saved["structure"],
        "error": error,
        "flops": flops,
        "total_flops": total_flops,
        "flop_ratio": total_flops / max(1, flops),
        "litert": litert,
        "reference": reference,
    }


def above_floor(litert):
    """The speed-up once the fixed cost of an invoke is taken off both."""
    plain, slim = litert["plain"] - litert["floor"], litert["slim"] - litert["floor"]
    if min(plain, slim) <= FLOOR_MARGIN * litert["floor"]:
        return (
            f"- (a latency within {FLOOR_MARGIN:.0%} of the floor, "
            f"{litert['floor']:.4f} ms)"
        )
    return f"{plain / slim:.2f}x (floor {litert['floor']:.4f} ms)"


def verdict(ok):
    return "PASS" if ok else "MISS"


def litert_cells(i):
    """The LiteRT cells of an inference row, from latencies to reference."""
    lt, ref = i["litert"], i["reference"]
    speedup = lt["plain"] / lt["slim"]
    needed = SPEEDUP_TARGET * i["flop_ratio"]
    return (
        f"{lt['plain']:.4f} / {lt['slim']:.4f} | {speedup:.3f}x | "
        f"{verdict(speedup >= needed)} (>= {needed:.3f}x) | {above_floor(lt)} | "
        f"{ref['plain']:.4f} / {ref['slim']:.4f} ({ref['plain'] / ref['slim']:.2f}x)"
    )


def tables(train, infer, trained, command, machine_line, notes):
    lines = [
        SECTION,
        "",
        "Targets (issue 6): a gated training epoch at most "
        f"{TRAIN_TARGET:.2f}x a plain one; a slim-model LiteRT speed-up of at "
        f"least {SPEEDUP_TARGET:g} x the MAC ratio (the ideal speed-up).",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_line}; written {time.strftime('%Y-%m-%d')}.",
        "",
        "Training, seconds per epoch (median over epochs, the models "
        "interleaved chunk by chunk):",
        "",
        "| net | gated epoch s | plain epoch s | gated / plain (median) | "
        "per-epoch ratios | median chunk ratio | gates without noise / plain "
        "(median) | VIBMonitor per epoch | gates' Gaussian draws per epoch s "
        "(1 + draws / plain) | as many uniform draws per epoch s (1 + draws / "
        "plain) | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in train.items():
        lines.append(
            f"| {NAMES[name]} | {t['gated_s']:.2f} | {t['plain_s']:.2f} | "
            f"{t['ratio']:.3f}x | {', '.join(f'{r:.2f}' for r in t['ratios'])} | "
            f"{t['chunk_ratio']:.3f}x ({t['chunks']} per epoch) | "
            f"{t['noiseless_ratio']:.3f}x | "
            f"{t['monitor_s']:.3f} s ({100 * t['monitor_s'] / t['gated_s']:.1f}%) | "
            f"{t['draw_s']:.4f} ({1 + t['draw_s'] / t['plain_s']:.3f}x) | "
            f"{t['uniform_s']:.4f} ({1 + t['uniform_s'] / t['plain_s']:.3f}x) | "
            f"{verdict(t['ratio'] <= TRAIN_TARGET)} (<= {TRAIN_TARGET:.2f}x) |"
        )
    lines.append("")
    for name, t in train.items():
        plain = t["plain_s"]
        lines.append(
            f"- {NAMES[name]}: the gate work without the noise costs "
            f"{t['noiseless_ratio'] - 1:+.1%} of a plain epoch, the noise "
            f"{t['ratio'] - t['noiseless_ratio']:+.1%} more (the Gaussian draws "
            f"alone, timed apart: {t['draw_s'] / plain:.1%}; as many uniform "
            f"draws: {t['uniform_s'] / plain:.1%}); the target allows "
            f"{TRAIN_TARGET - 1:.0%} in all."
        )
    lines += [
        "",
        "Inference, slim model against the plain one (speed-up = plain "
        "latency / slim latency):",
        "",
        "| net | slim structure | test error % plain / slim | MACs plain / slim | "
        "MAC ratio (ideal) | Keras 1 example ms plain / slim (speed-up) | "
        "Keras batch ms plain / slim (speed-up) | LiteRT ms plain / slim | "
        "LiteRT speed-up | target | LiteRT speed-up above the invoke floor | "
        "LiteRT reference kernels ms plain / slim (speed-up) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, i in infer.items():
        k1, kn = i["keras1"], i["keras_n"]
        lines.append(
            f"| {NAMES[name]} | {i['structure']} | {i['errors']['plain']:.2f} / "
            f"{i['errors']['slim']:.2f} | {i['total_flops']:,} / {i['flops']:,} | "
            f"{i['flop_ratio']:.2f}x | {k1['plain']:.3f} / {k1['slim']:.3f} "
            f"({k1['plain'] / k1['slim']:.2f}x) | {kn['plain']:.2f} / "
            f"{kn['slim']:.2f} ({kn['plain'] / kn['slim']:.2f}x, batch "
            f"{i['batch']}) | {litert_cells(i)} |"
        )
    if trained:
        lines += [
            "",
            "Inference, the slim models of trained runs (the recipe's final, "
            "fine-tuned `slim.keras` of each `--trained` folder) against the "
            "plain net:",
            "",
            "| run | slim structure | test error % of the slim model | MACs "
            "plain / slim | MAC ratio (ideal) | LiteRT ms plain / slim | LiteRT "
            "speed-up | target | LiteRT speed-up above the invoke floor | "
            "LiteRT reference kernels ms plain / slim (speed-up) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run, i in trained.items():
            lines.append(
                f"| `{run}` ({NAMES[i['name']]}) | {i['structure']} | "
                f"{i['error']:.2f} | {i['total_flops']:,} / {i['flops']:,} | "
                f"{i['flop_ratio']:.2f}x | {litert_cells(i)} |"
            )
    lines += ["", *notes, ""]
    return "\n".join(lines)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", choices=sorted(NAMES), default=["lenet300", "lenet5"]
    )
    parser.add_argument("--epochs", type=positive_int, default=6, help="timed")
    parser.add_argument("--batch-size", type=positive_int, default=100)
    parser.add_argument(
        "--chunks", type=positive_int, default=10, help="timed chunks per epoch"
    )
    parser.add_argument(
        "--kl-weight",
        type=float,
        default=None,
        help="KL weight of every gated model (default: each model's own)",
    )
    parser.add_argument("--train-examples", type=positive_int, default=60000)
    parser.add_argument("--test-examples", type=positive_int, default=10000)
    parser.add_argument("--runs", type=positive_int, default=1000, help="LiteRT")
    parser.add_argument("--warmup", type=int, default=20, help="untimed invokes")
    parser.add_argument("--keras-runs", type=positive_int, default=100)
    parser.add_argument("--keras-batch", type=positive_int, default=1000)
    parser.add_argument("--rounds", type=positive_int, default=7)
    parser.add_argument(
        "--trained",
        nargs="+",
        type=trained_run,
        default=[],
        metavar="RUN_DIR",
        help="`keras-vib train --out` folders whose slim models to time too",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args()


def main():
    args = parse_args()
    command = shlex.join(["python", "benchmarks/overhead.py", *sys.argv[1:]])
    machine_line = machine()
    print(f"machine: {machine_line}", flush=True)
    load_before = load_average()
    start = time.perf_counter()
    x, y = mnist_arrays(f"train[:{args.train_examples}]", args.data_dir)
    x_test, y_test = mnist_arrays(f"test[:{args.test_examples}]", args.data_dir)
    train, infer = {}, {}
    for name in args.models:
        print(f"== {NAMES[name]}: {args.epochs} interleaved epochs", flush=True)
        gated, plain, train[name] = time_training(name, x, y, args)
        print(
            f"gated / plain epoch time: {train[name]['ratio']:.3f}x "
            f"(per epoch: {', '.join(f'{r:.2f}' for r in train[name]['ratios'])})",
            flush=True,
        )
        print(f"== {NAMES[name]}: slim vs plain latency", flush=True)
        infer[name] = time_inference(gated, plain, x_test, y_test, args)
        keras.backend.clear_session()
    trained = {}
    for run, saved in args.trained:
        print(f"== {run}: slim vs plain latency", flush=True)
        trained[str(run)] = time_trained(run, saved, x_test, y_test, args)
        keras.backend.clear_session()
    wall = time.perf_counter() - start
    notes = [
        f"- Training: {args.epochs} timed epochs per model of the first "
        f"{len(x):,} MNIST training images, batches of {args.batch_size}, Adam "
        "at 0.001, no callbacks; each epoch is cut into chunks of whole batches "
        "(the same shuffled order for all models) and the models train "
        "on each chunk in turn, the order rotating, one `fit` per chunk; an "
        "epoch's time is the sum of its chunks, the median chunk ratio the "
        "median over all chunks of gated / plain. Gates without noise: a "
        "third model, the gated one whose gates multiply by `mu` instead of "
        "their noisy factor (made in the benchmark, not a keras_vib option), "
        "trained in the same chunks: all of the gate work but the noise "
        "(the products, the KL terms, their gradients, the optimizer's "
        "updates of the gate variables). KL weight "
        + (f"{args.kl_weight:g}" if args.kl_weight is not None else "of the model")
        + f" (default: {default_kl(models.lenet_300_100):g} for "
        f"LeNet-300-100, {default_kl(models.lenet5_caffe):g} for LeNet-5) "
        "from the first step. VIBMonitor per epoch: the median time of one "
        "`compression_report` of the gated model (the monitor's work at the "
        "end of an epoch), and its share of a gated epoch. Gaussian draws: "
        "the noise the gates draw in an epoch of training (per example and "
        "unit, or channel for a conv gate), timed alone in a `tf.function` "
        "loop; uniform draws: as many `keras.random.uniform` numbers, the "
        "raw random numbers that any sampler built from TensorFlow's random "
        "ops starts from; `1 + draws / plain epoch` is the ratio that the "
        "draws alone would give, the other gate work comes on top.",
        f"- Inference: test error of the two float32 `.tflite` files in "
        f"LiteRT on the first {len(x_test):,} test images; the slim model is "
        "the gated one after the timed epochs, slimmed. Keras: median of "
        f"`predict_on_batch` over {args.keras_runs} calls (one example) and "
        f"{max(3, args.keras_runs // 10)} calls (a batch); LiteRT: median "
        f"single-example invoke over {args.runs} runs after {args.warmup} "
        f"untimed, 1 thread, XNNPACK. Each is the median over {args.rounds} "
        "rounds alternating the plain and the slim model. The invoke floor: "
        "the LiteRT latency of a model of one Dense unit on the same input, "
        "timed in the same rounds, taken off both latencies (an estimate of "
        "the speed-up of the layers' work alone). Reference kernels: LiteRT's "
        "plain C++ kernels (`export.benchmark_tflite(..., "
        'kernels="reference")`, no XNNPACK, 1 thread), median of '
        f"{max(3, args.runs // 20)} invokes per round, "
        "whose times follow the arithmetic more closely: a check that the "
        "multiply-accumulates are gone, apart from the fixed per-layer "
        "costs and the vector widths of the optimised kernels.",
        load_note(load_before, wall),
    ]
    if trained:
        notes.insert(
            2,
            "- Trained runs: the slim model each `--trained` folder holds (from "
            "`keras-vib train`, e.g. the runs of `python benchmarks/"
            "paper_tables.py`, which write them under `runs/paper_tables/`), "
            "its test error in LiteRT on the same test images, timed as "
            "above against an untrained plain net of the same architecture "
            "(the latency of a float model does not depend on its weights).",
        )
    text = tables(train, infer, trained, command, machine_line, notes)
    publish(text, args.benchmarks_md, SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()
