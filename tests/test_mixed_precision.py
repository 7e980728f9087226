"""Gated models under Keras's mixed-precision policies: the KL term and log
alpha stay in float32, so training neither crashes nor overflows."""

import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_numpy

import keras_vib as kv


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def gated_net():
    # log sigma^2 = -12: mu^2 / sigma^2 = e^12 overflows float16 (65504).
    gate_args = dict(
        kl_weight=1e-3, log_sigma2_initializer=keras.initializers.Constant(-12.0)
    )
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            kv.VIBConv2D(4, 3, activation="relu", name="conv", **gate_args),
            keras.layers.Flatten(),
            kv.VIBGate(name="gate", **gate_args),
            kv.VIBDense(16, activation="relu", name="fc", **gate_args),
            keras.layers.Dense(3, dtype="float32", name="out"),
        ]
    )


def test_fit_and_evaluate_in_mixed_precision(policy):
    model = gated_net()
    assert model.get_layer("fc").dense.compute_dtype != "float32"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = np.arange(64) % 3
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [np.array(to_numpy(v)) for v in model.trainable_variables]
    monitor = kv.VIBMonitor()
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.isfinite(model.evaluate(x, y, verbose=0))
    after = [np.array(to_numpy(v)) for v in model.trainable_variables]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))  # no skip
    gates = [gate for _, gate in kv.report.gates(model)]
    for gate in gates:
        assert keras.backend.standardize_dtype(gate.kl_loss().dtype) == "float32"
        assert keras.backend.standardize_dtype(gate.log_alpha().dtype) == "float32"
    # The KL in the loss is the KL the monitor logs (float32 both).
    model(x[:2], training=True)
    in_loss = float(sum(keras.ops.convert_to_numpy(t) for t in model.losses))
    assert in_loss == pytest.approx(history.history["kl"][-1], rel=1e-4)
    # The slim model equals the gated one to the precision of the dtype.
    tolerance = 1e-2 if policy == "mixed_float16" else 5e-2
    slim = kv.slim_model(model)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = keras.ops.convert_to_numpy(slim(x, training=False))
    np.testing.assert_allclose(got, expected, atol=tolerance * np.abs(expected).max())


@pytest.mark.parametrize("policy", ["float16", "bfloat16"], indirect=True)
def test_pure_half_precision_policies_keep_the_gates_in_float32(policy):
    """Under a policy that is not mixed (half-precision variables too) the
    gates' variables stay float32, so the KL neither overflows nor breaks
    Keras's sum of the losses (a float16 KL did both)."""
    model = gated_net()
    for _, gate in kv.report.gates(model):
        for variable in (gate.mu, gate.log_sigma2, gate.kl_scale):
            assert keras.backend.standardize_dtype(variable.dtype) == "float32"
        assert np.isfinite(float(to_numpy(gate.kl_loss())))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 1)).astype("float32")
    y = np.arange(32) % 3
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    slim = kv.slim_model(model)
    np.testing.assert_allclose(
        to_numpy(slim(x)).astype("float32"),
        to_numpy(model(x)).astype("float32"),
        atol=5e-2,
    )
