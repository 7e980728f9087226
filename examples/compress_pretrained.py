"""Compress a model trained without keras_vib: add gates, fine-tune, slim, export.

    python examples/compress_pretrained.py --epochs 3 --finetune-epochs 3

Trains a plain Keras CNN on MNIST (standing in for the model you already
have), inserts VIB gates with `keras_vib.add_gates`, fine-tunes so that the
gates close, cuts the closed channels out with `slim_model`, exports both
networks to TFLite and prints parameters, FLOPs, accuracy and LiteRT latency
before and after. MNIST comes from tensorflow-datasets (set `TFDS_DATA_DIR`
on a machine without internet).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import keras_vib as kv  # noqa: E402
from keras_vib import datasets, export  # noqa: E402

L = keras.layers


def users_model():
    """A plain Keras model, as a user would have written it."""
    inputs = keras.Input((28, 28, 1))
    x = L.Conv2D(32, 3, use_bias=False, name="conv1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(256, activation="relu", name="fc1")(x)
    x = L.Dropout(0.3)(x)
    return keras.Model(inputs, L.Dense(10, name="classifier")(x), name="users_cnn")


def compile_model(model, learning_rate):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="plain training")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--kl-weight", type=float, default=2e-5)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--runs", type=int, default=200, help="timed invokes")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    for name in ("epochs", "finetune_epochs"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")

    keras.utils.set_random_seed(0)
    train = datasets.load("mnist", "train", 100, data_dir=args.data_dir, seed=0)
    test = datasets.load("mnist", "test", 1000, data_dir=args.data_dir)
    if args.steps_per_epoch:
        train = train.take(args.steps_per_epoch)

    model = users_model()
    compile_model(model, 1e-3)
    model.fit(train, epochs=args.epochs, shuffle=False)

    gated = kv.add_gates(model, kl_weight=args.kl_weight)
    compile_model(gated, 5e-4)
    gated.fit(
        train,
        epochs=args.finetune_epochs,
        callbacks=[kv.VIBWarmup(1), kv.VIBMonitor(), kv.VIBProgbarLogger()],
        shuffle=False,
    )
    report = kv.compression_report(gated)
    print(report)
    slim = kv.slim_model(gated)

    before = export.to_tflite(model)
    after = export.to_tflite(slim)
    rows = []
    for name, keras_model, tflite, flops in (
        ("original", model, before, report.total_flops),
        ("gated+slim", slim, after, report.flops),
    ):
        timing = export.benchmark_tflite(tflite, runs=args.runs)
        rows.append(
            (
                name,
                keras_model.count_params(),
                flops,
                export.evaluate_tflite(tflite, test),
                timing["median_ms"],
                len(tflite),
            )
        )
    print()
    print(
        f"{'model':<12}{'params':>10}{'MACs':>12}{'accuracy %':>12}"
        f"{'latency ms':>12}{'tflite KiB':>12}"
    )
    for name, params, flops, accuracy, latency, size in rows:
        print(
            f"{name:<12}{params:>10,}{flops:>12,}{100 * accuracy:>12.2f}"
            f"{latency:>12.3f}{size / 1024:>12.1f}"
        )


if __name__ == "__main__":
    main()
