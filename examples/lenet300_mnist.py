"""Train and compress LeNet-300-100 on MNIST with keras_vib.

    python examples/lenet300_mnist.py --epochs 20 --out runs/lenet300

MNIST comes from tensorflow-datasets: it downloads it when it can; on a
machine without internet point `TFDS_DATA_DIR` (or `--data-dir`) at a
prepared copy. The script prints the compression report, cuts the closed
units out with `slim_model`, and writes `report.json`, the gated and the slim
`.keras` models, `history.csv` and the VIBMonitor plots to `--out`.
"""

import argparse
import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import keras_vib as kv  # noqa: E402


def mnist(split, batch_size, data_dir=None):
    ds = tfds.load("mnist", split=split, as_supervised=True, data_dir=data_dir)

    def prepare(image, label):
        return tf.reshape(tf.cast(image, tf.float32) / 255.0, (784,)), label

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    if split == "train":
        ds = ds.cache().shuffle(60000, seed=0)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def lenet_300_100(kl_weight):
    return keras.Sequential(
        [
            keras.Input((784,), name="pixels"),
            kv.VIBGate(kl_weight=kl_weight, name="input_gate"),
            kv.VIBDense(300, activation="relu", kl_weight=kl_weight, name="fc1"),
            kv.VIBDense(100, activation="relu", kl_weight=kl_weight, name="fc2"),
            keras.layers.Dense(10, name="classifier"),
        ],
        name="lenet_300_100",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=2e-4)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/lenet300")
    args = parser.parse_args()
    if args.epochs <= 0:
        parser.error(f"--epochs must be > 0, received {args.epochs}")

    keras.utils.set_random_seed(args.seed)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = mnist("train", args.batch_size, args.data_dir)
    test = mnist("test", 1000, args.data_dir)

    model = lenet_300_100(args.kl_weight)
    model.compile(
        keras.optimizers.Adam(args.learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    monitor = kv.VIBMonitor(plot_dir=out)
    warmup = [kv.VIBWarmup(args.warmup_epochs)] if args.warmup_epochs else []
    model.fit(
        train,
        epochs=args.epochs,
        validation_data=test,
        callbacks=[
            *warmup,
            monitor,
            keras.callbacks.CSVLogger(out / "history.csv"),
            kv.VIBProgbarLogger(),  # the bar without the monitor's counts
        ],
    )
    _, accuracy = model.evaluate(test, verbose=0)
    report = kv.compression_report(model)
    print(report)
    print(f"test error: {100 * (1 - accuracy):.2f}%")
    model.save(out / "gated.keras")

    slim = kv.slim_model(model)
    slim.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    _, slim_accuracy = slim.evaluate(test, verbose=0)
    slim.save(out / "slim.keras")
    print(
        f"slim model: {slim.count_params():,} parameters "
        f"(gated model: {model.count_params():,}), "
        f"test error {100 * (1 - slim_accuracy):.2f}%"
    )
    # The layout of `keras-vib train`'s report.json (errors in % of the
    # test set, rounded to what 10,000 examples can tell).
    summary = {
        "error_pct": round(100 * (1 - slim_accuracy), 4),  # the final model
        "gated_error_pct": round(100 * (1 - accuracy), 4),
        "r_w_pct": round(100 * report.r_w, 4),
        "r_n_pct": round(100 * report.r_n, 4),
        "flops": report.flops,
        "structure": report.structure,
        "epochs": args.epochs,
        "slim_params": slim.count_params(),
        "config": vars(args),
        "backend": keras.backend.backend(),
        "report": report.to_dict(),
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}/report.json, the .keras models and the plots")


if __name__ == "__main__":
    main()
