"""How long `slim_model` takes on a VGG16-sized gated model (about 15M weights).

    python benchmarks/slim_speed.py [--repeats 3] [--width 1.0]

Builds the VGG16 of the VIBNet paper for CIFAR (13 gated 3x3 convs with batch
norm, max-pools, two gated dense layers of 512, a classifier), closes about half
of the units of every gate at random (mu of both signs), slims it and checks that
the slim model computes the same function. Prints the median wall time, the
parameter counts and the largest relative difference. Not a test: the target
(under 10 s on 2 CPU cores) is checked by reading its output.
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_vib as kv  # noqa: E402

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
VGG16 += [512, 512, 512, "M"]


def gated_vgg16(width=1.0, classes=10):
    layers = [keras.Input((32, 32, 3))]
    for item in VGG16:
        if item == "M":
            layers.append(keras.layers.MaxPooling2D())
        else:
            filters = max(1, int(item * width))
            layers.append(
                kv.VIBConv2D(
                    filters, 3, padding="same", activation="relu", batch_norm=True
                )
            )
    layers += [
        keras.layers.Flatten(),
        kv.VIBDense(max(1, int(512 * width)), activation="relu"),
        kv.VIBDense(max(1, int(512 * width)), activation="relu"),
        keras.layers.Dense(classes),
    ]
    return keras.Sequential(layers, name="vgg16_vib")


def close_half(model, rng):
    for layer in model.layers:
        gate = getattr(layer, "gate", None)
        if gate is None:
            continue
        n = gate.units
        gate.mu.assign(rng.uniform(0.5, 1.5, n) * rng.choice([-1.0, 1.0], n))
        gate.log_sigma2.assign(np.where(rng.random(n) < 0.5, 6.0, -9.0))
        if layer.bn is not None if hasattr(layer, "bn") else False:
            layer.bn.moving_variance.assign(rng.uniform(0.5, 2.0, n))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    model = gated_vgg16(args.width)
    close_half(model, rng)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        slim = kv.slim_model(model)
        times.append(time.perf_counter() - start)
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = keras.ops.convert_to_numpy(slim(x))
    rel = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
    report = kv.compression_report(model)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}")
    print(f"gated model kernel weights: {report.total_weights:,}")
    print(f"slim model parameters: {slim.count_params():,}")
    print(
        f"slim_model median time over {args.repeats}: {statistics.median(times):.2f} s"
    )
    print(f"largest relative difference slim vs gated: {rel:.2e}")


if __name__ == "__main__":
    main()
