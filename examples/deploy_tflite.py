"""Train a gated LeNet-5 briefly, slim it, export it to TFLite, compare variants.

    python examples/deploy_tflite.py --epochs 2 --out runs/deploy

Prints, for the unslimmed network and for the slim one as float32, float16
and int8 `.tflite` files: file size, test accuracy in the LiteRT interpreter
and the median latency of a single-example invoke on one thread. MNIST comes
from tensorflow-datasets (set `TFDS_DATA_DIR` on a machine without internet).
"""

import argparse
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import keras_vib as kv  # noqa: E402
from keras_vib import export  # noqa: E402


def mnist_arrays(split, data_dir=None):
    x, y = tfds.as_numpy(
        tfds.load(
            "mnist", split=split, batch_size=-1, as_supervised=True, data_dir=data_dir
        )
    )
    return x.astype("float32") / 255.0, y


def lenet5(kl_weight):
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            kv.VIBConv2D(20, 5, activation="relu", kl_weight=kl_weight, name="conv1"),
            keras.layers.MaxPooling2D(),
            kv.VIBConv2D(50, 5, activation="relu", kl_weight=kl_weight, name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            kv.VIBDense(500, activation="relu", kl_weight=kl_weight, name="fc1"),
            keras.layers.Dense(10, name="classifier"),
        ],
        name="lenet5_vib",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--kl-weight", type=float, default=2e-5)
    parser.add_argument("--train-examples", type=int, default=60000)
    parser.add_argument("--test-examples", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=200, help="timed invokes")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/deploy")
    args = parser.parse_args()
    if args.epochs <= 0:
        parser.error(f"--epochs must be > 0, received {args.epochs}")

    keras.utils.set_random_seed(0)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = mnist_arrays(f"train[:{args.train_examples}]", args.data_dir)
    test = mnist_arrays(f"test[:{args.test_examples}]", args.data_dir)

    model = lenet5(args.kl_weight)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=args.epochs,
        callbacks=[kv.VIBMonitor(), kv.VIBProgbarLogger()],
    )
    print(kv.compression_report(model))

    calibration = x_train[np.random.default_rng(0).permutation(len(x_train))[:500]]
    variants = {
        "unslimmed float32": export.to_tflite(model, slim=False),
        "slim float32": export.to_tflite(model),
        "slim float16": export.to_tflite(model, "float16"),
        "slim int8": export.to_tflite(model, "int8", representative_data=calibration),
    }
    rows = []
    for name, tflite in variants.items():
        (out / (name.replace(" ", "_") + ".tflite")).write_bytes(tflite)
        accuracy = export.evaluate_tflite(tflite, test)
        timing = export.benchmark_tflite(tflite, runs=args.runs)
        rows.append((name, len(tflite), accuracy, timing["median_ms"]))

    print()
    print(f"{'variant':<20}{'size (KiB)':>12}{'accuracy %':>12}{'latency ms':>12}")
    for name, size, accuracy, latency in rows:
        print(f"{name:<20}{size / 1024:>12.1f}{100 * accuracy:>12.2f}{latency:>12.3f}")
    print(f"\nwrote the .tflite files to {out}")


if __name__ == "__main__":
    main()
