"""VIBNet against tfmot magnitude pruning and the unpruned LeNet-5, side by side.

    python benchmarks/vs_tfmot.py --epochs 8

Trains LeNet-5-Caffe on MNIST three ways, for the same number of epochs, the
same batches (Adam, constant learning rate) and the same initial weights for
the two stock networks:

1. the plain network (`keras_vib.models.lenet5_caffe(vib=False)`), no pruning;
2. tfmot: `tfmot.sparsity.keras.prune_low_magnitude` on the tf_keras twin of
   the plain network (tensorflow-model-optimization 0.8 takes no Keras 3
   model), a `PolynomialDecay` schedule from 0 to the sparsity
   `1 - r_W` of the VIB run, reached at 80% of the training steps, then
   `strip_pruning`;
3. keras_vib: the gated network trained with its KL terms (a `VIBMonitor`
   warms the KL weight up), then `slim_model`.

Each is converted to a float32 `.tflite` file of TFLite builtin ops
(`keras_vib.export.to_tflite`); the pruned tfmot network also a second time
with TFLite's sparse weight encoding (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`,
what tfmot recommends for pruned models). For each file the script measures,
in one process:

- the test error, in the LiteRT interpreter (`export.evaluate_tflite`);
- the kept weights: non-zero kernel entries (tfmot), kernel entries of the
  slim network (keras_vib), all of them (plain); biases not counted;
- the multiply-accumulates LiteRT executes per example: all of those of the
  dense architecture for the plain and the tfmot files (TFLite's dense
  kernels multiply the zeros too), those of the slim architecture for
  keras_vib; and, for comparison, the MACs on non-zero weights only (what an
  ideal sparse kernel would execute);
- the file size, raw and gzip-compressed (level 9);
- the LiteRT latency of a single-example `invoke` on 1 thread: `--rounds`
  rounds, each timing every file for `--runs` invokes in turn (the order
  rotates from round to round); the median over the rounds of the per-round
  medians, the best round, and against the plain file the median over the
  rounds of the per-round ratio (paired within a round, which cancels the
  bursts of other work on a shared machine).

and prints whether the point of the comparison holds: that unstructured
sparsity shrinks the compressed file but not the latency, while the slim VIB
network shrinks both (smaller: at most 0.8x the plain file; faster: at most
0.9x its latency, paired).

It prints the table and writes it, with the command and the machine, into the
section "VIBNet vs tfmot magnitude pruning" of `BENCHMARKS.md` (replacing an
older one; `--benchmarks-md` writes elsewhere, `--no-write` nowhere). A quick
smoke run: `--epochs 1 --steps-per-epoch 5 --runs 5 --rounds 1 --no-write`.
"""

import argparse
import gzip
import os
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
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

SECTION = "## VIBNet vs tfmot magnitude pruning (`benchmarks/vs_tfmot.py`)"
PLAIN = "plain LeNet-5 (no pruning)"
TFMOT = "tfmot prune_low_magnitude + strip_pruning"
TFMOT_SPARSE = "same tfmot net, sparse TFLite encoding"
VIB = "keras_vib: VIB training + slim_model"
SMALLER = 0.8  # a file at most this fraction of the plain one is smaller
FASTER = 0.9  # a latency at most this fraction of the plain one is faster
SHORT = {PLAIN: "plain", TFMOT: "tfmot", TFMOT_SPARSE: "tfmot sparse", VIB: "slim"}


def train_data(args):
    train = datasets.load(
        "mnist",
        f"train[:{args.train_examples}]",
        args.batch_size,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    if args.steps_per_epoch:
        train = train.take(args.steps_per_epoch)
    steps = int(train.cardinality())
    if steps <= 0:
        steps = -(-args.train_examples // args.batch_size)
        if args.steps_per_epoch:
            steps = min(steps, args.steps_per_epoch)
    return train, steps


def test_data(args):
    test = datasets.load(
        "mnist", f"test[:{args.test_examples}]", 1000, data_dir=args.data_dir
    )
    return list(test.as_numpy_iterator())


def compile_keras(model, args):
    model.compile(
        keras.optimizers.Adam(args.learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def warmup_epochs(args):
    """Epochs of KL warm-up: at most all but the last epoch."""
    return max(0, min(args.warmup_epochs, args.epochs - 1))


def fit(model, data, args, callbacks=()):
    start = time.perf_counter()
    model.fit(
        data,
        epochs=args.epochs,
        callbacks=list(callbacks),
        verbose=args.verbose,
        shuffle=False,  # the dataset shuffles itself
    )
    return time.perf_counter() - start


def train_vib(args):
    keras.utils.set_random_seed(args.seed)
    train, _ = train_data(args)
    gated = models.lenet5_caffe(vib=True, kl_weight=args.kl_weight)
    compile_keras(gated, args)
    monitor = kv.VIBMonitor(verbose=1 if args.verbose else 0)
    warmup = [kv.VIBWarmup(warmup_epochs(args))] if warmup_epochs(args) else []
    seconds = fit(gated, train, args, warmup + [monitor])
    slim = kv.slim_model(gated)
    return slim, kv.compression_report(slim, reference=gated), seconds


def train_plain(args, initial_weights):
    keras.utils.set_random_seed(args.seed)
    train, _ = train_data(args)
    plain = models.lenet5_caffe(vib=False)
    plain.set_weights(initial_weights)
    compile_keras(plain, args)
    return plain, fit(plain, train, args)


def pruning_schedule(sparsity, steps):
    """A PolynomialDecay that reaches `sparsity` at about 80% of `steps`.

    tfmot prunes at the steps `begin_step + k * frequency` up to `end_step`,
    so `end_step` is made a multiple of the frequency (the target is then
    reached exactly) and lies before the last step.
    """
    import tensorflow_model_optimization as tfmot

    end = max(1, min(int(0.8 * steps), steps - 1))
    frequency = min(100, max(1, end // 10))
    end = frequency * (end // frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=sparsity,
        begin_step=0,
        end_step=end,
        frequency=frequency,
    )
    return schedule, end, frequency


def train_tfmot(args, initial_weights, sparsity):
    import tensorflow_model_optimization as tfmot
    import tf_keras

    keras.utils.set_random_seed(args.seed)
    train, steps_per_epoch = train_data(args)
    base = models.lenet5_caffe(vib=False)
    base.set_weights(initial_weights)
    twin = export.to_tf_keras(base)
    schedule, end, frequency = pruning_schedule(sparsity, steps_per_epoch * args.epochs)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(twin, pruning_schedule=schedule)
    pruned.compile(
        tf_keras.optimizers.Adam(args.learning_rate),
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    seconds = fit(pruned, train, args, [tfmot.sparsity.keras.UpdatePruningStep()])
    return tfmot.sparsity.keras.strip_pruning(pruned), seconds, end, frequency


def sparse_tflite(tf_keras_model):
    """The float32 flatbuffer with TFLite's sparse weight encoding."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(tf_keras_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return converter.convert()


def nonzero_counts(model, plain_report):
    """Non-zero kernel entries and the MACs on them, for a stock model.

    The MACs of a layer are its non-zero kernel entries times the positions
    they slide over, read off `compression_report` of the dense network
    (`flops / weights` per layer, by name).
    """
    positions = {
        w.name: w.total_flops // w.total_weights for w in plain_report.weight_layers
    }
    kept = macs = 0
    for layer in model.layers:
        if layer.name not in positions:
            continue
        nonzero = int(np.count_nonzero(layer.get_weights()[0]))
        kept += nonzero
        macs += nonzero * positions[layer.name]
    return kept, macs


def latencies(files, args):
    """Each file's per-round median single-invoke latencies, in ms."""
    names = list(files)
    per_round = {name: [] for name in names}
    for r in range(args.rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            timing = export.benchmark_tflite(
                files[name], runs=args.runs, warmup=args.warmup, num_threads=1
            )
            per_round[name].append(timing["median_ms"])
    return per_round


def table(rows, command, machine_line, notes):
    plain = rows[PLAIN]
    lines = [
        SECTION,
        "",
        "LeNet-5-Caffe on MNIST, the same epochs and batches for each method;",
        "error, size and latency of the float32 `.tflite` files in LiteRT.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_line}; written {time.strftime('%Y-%m-%d')}.",
        "",
        "| method | test error % | kept weights | r_W % | MACs executed | "
        "MACs on non-zero weights | .tflite bytes | gzip bytes | gzip vs plain | "
        "latency ms (median / best round) | latency vs plain (paired) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['error_pct']:.2f} | {r['kept']:,} | "
            f"{100 * r['r_w']:.2f} | {r['macs']:,} | {r['nonzero_macs']:,} | "
            f"{r['size']:,} | {r['gzip']:,} | {r['gzip'] / plain['gzip']:.2f}x | "
            f"{r['latency_ms']:.4f} / {r['best_ms']:.4f} | "
            f"{r['latency_ratio']:.2f}x |"
        )
    lines += ["", *notes, ""]
    return "\n".join(lines)


def verdict(rows):
    plain, tfmot, vib = rows[PLAIN], rows[TFMOT], rows[VIB]

    def ratio(row, key):
        return row[key] / plain[key]

    def latency(row):
        return f"latency {row['latency_ratio']:.2f}x"

    tfmot_small = ratio(tfmot, "gzip") <= SMALLER
    vib_small = ratio(vib, "gzip") <= SMALLER and ratio(vib, "size") <= SMALLER
    failures = [
        what
        for what, bad in (
            ("the tfmot gzip file is not smaller", not tfmot_small),
            ("the tfmot file is faster", tfmot["latency_ratio"] <= FASTER),
            ("the slim file is not smaller", not vib_small),
            ("the slim file is not faster", vib["latency_ratio"] > FASTER),
        )
        if bad
    ]
    if failures:
        outcome = "does NOT hold in this run: " + ", ".join(failures) + "."
    else:
        outcome = "holds in this run."
    return [
        "Reading (ratios to the plain network; a file counts as smaller at "
        f"<= {SMALLER}x, as faster at <= {FASTER}x paired latency):",
        "",
        f"- tfmot: gzip {ratio(tfmot, 'gzip'):.2f}x, raw "
        f"{ratio(tfmot, 'size'):.2f}x, {latency(tfmot)}; with the sparse "
        f"encoding: raw {ratio(rows[TFMOT_SPARSE], 'size'):.2f}x, "
        f"gzip {ratio(rows[TFMOT_SPARSE], 'gzip'):.2f}x, "
        f"{latency(rows[TFMOT_SPARSE])}.",
        f"- keras_vib slim: gzip {ratio(vib, 'gzip'):.2f}x, raw "
        f"{ratio(vib, 'size'):.2f}x, {latency(vib)}, MACs "
        f"{ratio(vib, 'macs'):.3f}x.",
        '- The claim "unstructured sparsity shrinks the compressed file but '
        f'not the latency, the slim VIB net shrinks both" {outcome}',
    ]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive_int, default=8)
    parser.add_argument("--batch-size", type=positive_int, default=100)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--kl-weight",
        type=float,
        default=3e-5,
        help="base KL weight of the VIB run, times the per-layer multipliers "
        "of models.LENET5_KL_MULTIPLIERS (the 25-epoch recipe uses 2.5e-5; a "
        "short run needs more to prune)",
    )
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument(
        "--tfmot-sparsity",
        type=float,
        default=None,
        help="prune tfmot to this sparsity instead of 1 - r_W of keras_vib "
        "(smoke runs, where VIB has pruned nothing yet)",
    )
    parser.add_argument("--train-examples", type=positive_int, default=60000)
    parser.add_argument("--test-examples", type=positive_int, default=10000)
    parser.add_argument(
        "--steps-per-epoch", type=positive_int, help="cap the batches per epoch"
    )
    parser.add_argument("--runs", type=positive_int, default=1000)
    parser.add_argument("--warmup", type=int, default=20, help="untimed invokes")
    parser.add_argument("--rounds", type=positive_int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    args = parser.parse_args()
    if args.tfmot_sparsity is not None and not 0 <= args.tfmot_sparsity < 1:
        parser.error("--tfmot-sparsity must be in [0, 1)")
    steps = -(-args.train_examples // args.batch_size)
    if args.steps_per_epoch:
        steps = min(steps, args.steps_per_epoch)
    if args.epochs * steps < 2:
        parser.error("the tfmot schedule needs at least 2 training steps")
    return args


def main():
    args = parse_args()
    command = shlex.join(["python", "benchmarks/vs_tfmot.py", *sys.argv[1:]])
    machine_line = machine(
        ("tensorflow", "keras", "tf-keras", "ai-edge-litert")
        + ("tensorflow-model-optimization",)
    )
    print(f"machine: {machine_line}")
    load_before = load_average()
    start = time.perf_counter()
    test = test_data(args)

    # keras_vib first: its r_W is tfmot's target.
    print("== keras_vib: VIB training, then slim_model", flush=True)
    slim, vib_report, vib_seconds = train_vib(args)
    print(vib_report)
    sparsity = 1.0 - vib_report.r_w
    if args.tfmot_sparsity is not None:
        sparsity = args.tfmot_sparsity

    keras.utils.set_random_seed(args.seed)
    initial_weights = models.lenet5_caffe(vib=False).get_weights()
    print("== plain network", flush=True)
    plain, plain_seconds = train_plain(args, initial_weights)
    plain_report = kv.compression_report(plain)

    print(f"== tfmot, to sparsity {sparsity:.4f}", flush=True)
    stripped, tfmot_seconds, end_step, frequency = train_tfmot(
        args, initial_weights, sparsity
    )

    files = {
        PLAIN: export.to_tflite(plain),
        TFMOT: export.to_tflite(stripped),
        TFMOT_SPARSE: sparse_tflite(stripped),
        VIB: export.to_tflite(slim),
    }
    tfmot_kept, tfmot_macs = nonzero_counts(stripped, plain_report)
    total = plain_report.total_weights
    dense_macs = plain_report.total_flops
    rows = {
        PLAIN: dict(kept=total, macs=dense_macs, nonzero_macs=dense_macs),
        TFMOT: dict(kept=tfmot_kept, macs=dense_macs, nonzero_macs=tfmot_macs),
        TFMOT_SPARSE: dict(kept=tfmot_kept, macs=dense_macs, nonzero_macs=tfmot_macs),
        VIB: dict(
            kept=vib_report.kept_weights,
            macs=vib_report.flops,
            nonzero_macs=vib_report.flops,
        ),
    }
    for name, content in files.items():
        rows[name]["r_w"] = rows[name]["kept"] / total
        rows[name]["error_pct"] = 100.0 * (1.0 - export.evaluate_tflite(content, test))
        rows[name]["size"] = len(content)
        rows[name]["gzip"] = len(gzip.compress(bytes(content), compresslevel=9))
    print("== LiteRT latency, interleaved", flush=True)
    per_round = latencies(files, args)
    for name in files:
        rows[name]["latency_ms"] = statistics.median(per_round[name])
        rows[name]["best_ms"] = min(per_round[name])
        rows[name]["latency_ratio"] = statistics.median(
            t / p for t, p in zip(per_round[name], per_round[PLAIN])
        )
    wall = time.perf_counter() - start

    examples = min(args.train_examples, 60000)
    target = "= 1 - r_W of keras_vib"
    if args.tfmot_sparsity is not None:
        target = "set by --tfmot-sparsity, NOT matched to keras_vib"
    steps = f", at most {args.steps_per_epoch} batches" if args.steps_per_epoch else ""
    notes = [
        "- Training: "
        f"{args.epochs} epochs of the first {examples:,} MNIST training images"
        f"{steps} in batches of {args.batch_size}, Adam at "
        f"{args.learning_rate:g}, seed {args.seed}; test error on the first "
        f"{min(args.test_examples, 10000):,} test images. keras_vib: KL weight "
        f"{args.kl_weight:g}, warmed up over {warmup_epochs(args)}"
        f" epoch(s), structure {vib_report.structure}. tfmot: PolynomialDecay "
        f"0 -> {sparsity:.4f} ({target}) on every kernel, steps "
        f"0 to {end_step}, every {frequency} steps.",
        f"- Training wall time (sequential, not interleaved): keras_vib "
        f"{vib_seconds:.0f} s, plain {plain_seconds:.0f} s, tfmot "
        f"{tfmot_seconds:.0f} s.",
        "- MACs executed: TFLite runs dense kernels, so the plain and tfmot "
        "files multiply every weight, zeros included (the sparse encoding is "
        "densified when the interpreter is prepared: a DENSIFY op); the slim "
        "file has fewer units. MACs on non-zero weights: what an ideal sparse "
        "kernel would execute.",
        f"- Latency: median single-example invoke, 1 thread, XNNPACK, in "
        f"{args.rounds} interleaved rounds of {args.runs} invokes (after "
        f"{args.warmup} untimed) per file; the table gives the median over the "
        "rounds and the best (lowest) round, and, against the plain file, the "
        "median over the rounds of the ratio of the two files' latencies in "
        "the same round (paired: the other work of a shared machine comes in "
        "bursts that slow whole rounds down); per-round medians (ms): "
        + "; ".join(
            f"{SHORT[name]}: " + ", ".join(f"{v:.4f}" for v in values)
            for name, values in per_round.items()
        )
        + ".",
        load_note(load_before, wall),
        "",
        *verdict(rows),
    ]
    text = table(rows, command, machine_line, notes)
    publish(text, args.benchmarks_md, SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()
