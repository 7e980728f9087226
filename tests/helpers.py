"""Small test helpers, our own (keras.src.testing is private)."""

import json

import keras
import numpy as np


def gradients(fn, values):
    """The gradients of the scalar `fn(*values)` with respect to `values`
    (numpy arrays in, numpy arrays out), on whichever backend runs."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xs = [tf.Variable(v) for v in values]
        with tf.GradientTape() as tape:
            y = fn(*xs)
        return [g.numpy() for g in tape.gradient(y, xs)]
    if backend == "jax":
        import jax

        argnums = tuple(range(len(values)))
        return [np.asarray(g) for g in jax.grad(fn, argnums)(*values)]
    if backend == "torch":
        import torch

        xs = [torch.tensor(v, requires_grad=True) for v in values]
        fn(*xs).backward()
        return [x.grad.numpy() for x in xs]
    raise NotImplementedError(f"gradients on the {backend} backend")


@keras.saving.register_keras_serializable(package="keras_vib_tests")
class OpaqueScale(keras.layers.Layer):
    """A custom layer keras_vib knows nothing about: `x * w` per channel."""

    def build(self, input_shape):
        self.w = self.add_weight(
            name="w", shape=(input_shape[-1],), initializer="random_normal"
        )

    def call(self, inputs):
        return inputs * self.w


def config_round_trip(layer):
    """Rebuilds `layer` from its JSON-serialised config; returns the copy.

    Asserts that the copy's config equals the original's.
    """
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    return clone


def loss_count(layer_or_model, *inputs, **kwargs):
    """Calls the object eagerly and returns how many losses it added."""
    layer_or_model(*inputs, **kwargs)
    return len(layer_or_model.losses)


def set_gates(gate, mu, log_sigma2):
    """Assigns a gate's variables from numpy arrays."""
    gate.mu.assign(np.asarray(mu, "float32"))
    gate.log_sigma2.assign(np.asarray(log_sigma2, "float32"))


def random_gates(model, rng, closed_fraction=0.5, negative_mu=True):
    """Gives every gate of `model` random mu and a random half closed.

    Returns the list of kept masks, in `gated_layers` order.
    """
    from keras_vib.report import gated_layers

    masks = []
    for _, layer in gated_layers(model):
        gate = getattr(layer, "gate", layer)
        n = gate.units
        mu = rng.uniform(0.5, 1.5, n) * (rng.choice([-1, 1], n) if negative_mu else 1)
        closed = rng.random(n) < closed_fraction
        log_sigma2 = np.where(closed, 6.0, -9.0)
        set_gates(gate, mu, log_sigma2)
        masks.append(~closed)
    return masks


def randomize_statistics(model, rng):
    """Random biases and batch-norm parameters and statistics, so that a
    wrong fold shows."""
    for v in model.weights:
        if v.name in ("beta", "moving_mean", "bias"):
            v.assign(rng.normal(0.0, 0.3, tuple(v.shape)).astype("float32"))
        elif v.name in ("gamma", "moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
    return model


def assert_close(a, b, rtol=1e-5):
    """`a` equals `b` to `rtol` relative to the largest magnitude of `b`."""
    a = keras.ops.convert_to_numpy(a)
    b = keras.ops.convert_to_numpy(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(np.abs(b).max(), 1e-6))


def builtin_ops():
    """The names of TFLite's builtin operators (TensorFlow needed)."""
    from tensorflow.lite.python.schema_py_generated import BuiltinOperator

    return {name for name in dir(BuiltinOperator) if name.isupper()}


def lenet5(vib=True):
    """LeNet-5-Caffe, gated (`vib`) or plain, built from the layers."""
    import keras_vib as kv

    conv = kv.VIBConv2D if vib else keras.layers.Conv2D
    dense = kv.VIBDense if vib else keras.layers.Dense
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            conv(20, 5, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(),
            conv(50, 5, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            dense(500, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="classifier"),
        ]
    )
