import json
import math
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from helpers import config_round_trip, gradients, loss_count, set_gates
from keras.ops import convert_to_numpy as to_numpy

import keras_vib as kv


def numpy_kl(mu, log_sigma2):
    return 0.5 * np.sum(np.log1p(mu**2 / (np.exp(log_sigma2) + 1e-8)))


def built_gate(shape, **kwargs):
    gate = kv.VIBGate(**kwargs)
    gate.build(shape)
    return gate


def test_kl_matches_numpy_dense():
    rng = np.random.default_rng(0)
    gate = built_gate((None, 7), kl_weight=0.3)
    mu, ls2 = rng.normal(size=7), rng.uniform(-10, 3, 7)
    set_gates(gate, mu, ls2)
    expected = 0.3 * numpy_kl(mu, ls2)
    np.testing.assert_allclose(float(gate.kl_loss()), expected, rtol=1e-5)
    # The same value is what the layer adds to the loss when called.
    assert loss_count(gate, np.ones((2, 7), "float32")) == 1
    np.testing.assert_allclose(float(gate.losses[0]), expected, rtol=1e-5)


@pytest.mark.parametrize("scaling, positions", [(True, 5 * 6), (False, 1)])
def test_kl_spatial_scaling(scaling, positions):
    rng = np.random.default_rng(1)
    gate = built_gate((None, 5, 6, 4), kl_weight=0.01, kl_spatial_scaling=scaling)
    mu, ls2 = rng.normal(size=4), rng.uniform(-10, 0, 4)
    set_gates(gate, mu, ls2)
    expected = 0.01 * positions * numpy_kl(mu, ls2)
    np.testing.assert_allclose(float(gate.kl_loss()), expected, rtol=1e-5)


@pytest.mark.parametrize("mu_value", [0.0, 1.0, -3.0])
def test_kl_finite_over_log_sigma2_range(mu_value):
    log_sigma2 = np.linspace(-50, 50, 101).astype("float32")
    gate = built_gate((None, 101))
    set_gates(gate, np.full(101, mu_value), log_sigma2)
    per_channel = kv.layers.kl_divergence(gate.mu, gate.log_sigma2)
    grads = gradients(
        lambda mu, ls: keras.ops.sum(kv.layers.kl_divergence(mu, ls)),
        [to_numpy(gate.mu), to_numpy(gate.log_sigma2)],
    )
    assert np.all(np.isfinite(to_numpy(per_channel)))
    assert all(np.all(np.isfinite(to_numpy(g))) for g in grads)
    if mu_value == 0.0:
        assert np.all(to_numpy(per_channel) == 0.0)
    else:
        np.testing.assert_allclose(
            to_numpy(per_channel),
            0.5 * np.log1p(mu_value**2 / (np.exp(log_sigma2.astype("float64")) + 1e-8)),
            rtol=1e-4,
        )


def test_sampling_statistics():
    mu = np.array([0.5, 2.0, -1.0], "float32")
    sigma2 = np.array([0.04, 0.25, 1.0], "float32")
    gate = built_gate((None, 3), seed=7)
    set_gates(gate, mu, np.log(sigma2))
    n = 20000
    z = to_numpy(gate(np.ones((n, 3), "float32"), training=True))
    sigma = np.sqrt(sigma2)
    # 5 standard errors for the mean; a chi-square bound for the variance.
    assert np.all(np.abs(z.mean(0) - mu) < 5 * sigma / math.sqrt(n))
    np.testing.assert_allclose(z.var(0), sigma2, rtol=5 * math.sqrt(2 / n))


def test_noise_is_per_example_and_shared_over_positions():
    gate = built_gate((None, 4, 4, 3))
    set_gates(gate, np.ones(3), np.zeros(3))  # sigma = 1: clearly random
    z = to_numpy(gate(np.ones((8, 4, 4, 3), "float32"), training=True))
    # Constant over the spatial positions of an (example, channel) ...
    np.testing.assert_array_equal(z, np.broadcast_to(z[:, :1, :1, :], z.shape))
    # ... and different between examples and between channels.
    assert len(np.unique(z[:, 0, 0, 0])) == 8
    assert len(np.unique(z[0, 0, 0, :])) == 3


def test_mask_at_inference():
    mu = np.array([1.5, -0.7, 0.1, 2.0], "float32")
    log_sigma2 = np.array([-9.0, -9.0, 0.0, 2.0], "float32")
    gate = built_gate((None, 4))
    set_gates(gate, mu, log_sigma2)
    log_alpha = log_sigma2 - np.log(mu**2 + 1e-8)
    np.testing.assert_allclose(to_numpy(gate.log_alpha()), log_alpha, rtol=1e-5)
    kept = log_alpha < 0
    np.testing.assert_array_equal(gate.kept_mask(), kept)
    assert gate.num_kept() == 2
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(to_numpy(gate(x)), x * mu * kept, rtol=1e-6)
    # A higher threshold keeps the channel whose log alpha is 0.6.
    loose = built_gate((None, 4), threshold=1.0)
    set_gates(loose, mu, log_sigma2)
    np.testing.assert_array_equal(loose.kept_mask(), log_alpha < 1.0)
    assert loose.num_kept() == 3


def test_inference_is_deterministic_training_is_not():
    layer = kv.VIBDense(6, activation="relu")
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    layer(x)
    set_gates(layer.gate, np.ones(6), np.full(6, -2.0))
    np.testing.assert_array_equal(to_numpy(layer(x)), to_numpy(layer(x)))
    a = to_numpy(layer(x, training=True))
    b = to_numpy(layer(x, training=True))
    assert not np.allclose(a, b)


def test_without_noise_training_acts_as_inference():
    """`noise` 0 (what VIBBudget sets once the budget is reached): training
    calls draw nothing and close the closed channels, as inference does,
    and `log_sigma2` gets no gradient from the data."""
    gate = built_gate((None, 4))
    mu = np.array([1.5, -0.7, 0.1, 2.0], "float32")
    set_gates(gate, mu, np.array([-9.0, -9.0, 0.0, 2.0], "float32"))
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    assert not np.allclose(to_numpy(gate(x, training=True)), to_numpy(gate(x)))
    gate.noise.assign(0.0)
    np.testing.assert_array_equal(
        to_numpy(gate(x, training=True)), to_numpy(gate(x, training=False))
    )

    def data_term(mu, log_sigma2):
        trainable = [mu, log_sigma2]
        others = [v.value for v in gate.non_trainable_variables]
        y, _ = gate.stateless_call(trainable, others, x, training=True)
        return keras.ops.sum(y**2)

    grad_mu, grad_log_sigma2 = gradients(
        data_term, [to_numpy(gate.mu), to_numpy(gate.log_sigma2)]
    )
    np.testing.assert_array_equal(grad_log_sigma2, 0.0)
    kept = gate.kept_mask()
    np.testing.assert_array_equal(grad_mu[~kept], 0.0)
    assert np.all(grad_mu[kept] != 0)


@pytest.mark.parametrize("noise", [1.0, 0.0])
def test_training_output_and_gradients_match_the_gate_s_formula(noise):
    """`inputs * (noise * (mu + eps * sigma) + (1 - noise) * mu * keep)`,
    written out here with the gate's own draws, gives the gate's training
    output and its gradients with respect to the inputs, `mu` and
    `log_sigma2`: a reordering of the gate's arithmetic must keep them."""
    rng = np.random.default_rng(1)
    gate = built_gate((None, 3, 3, 4))
    mu0 = np.array([1.5, -0.7, 0.1, 2.0], "float32")
    ls0 = np.array([-9.0, -1.0, 0.0, 2.0], "float32")
    set_gates(gate, mu0, ls0)
    gate.noise.assign(noise)
    x0 = rng.normal(size=(5, 3, 3, 4)).astype("float32")
    others = [to_numpy(v.value) for v in gate.non_trainable_variables]

    def gate_output(x, mu, log_sigma2):
        y, _ = gate.stateless_call([mu, log_sigma2], others, x, training=True)
        return y

    # The draws of this seed state: with noise on, mu 0 and sigma 1, z = eps.
    ones, zeros = np.ones_like(x0[:, :1, :1]), np.zeros_like(mu0)
    draws = [
        np.float32(1.0) if v is gate.noise else value
        for v, value in zip(gate.non_trainable_variables, others)
    ]
    eps = to_numpy(gate.stateless_call([zeros, zeros], draws, ones, training=True)[0])
    assert eps.shape == (5, 1, 1, 4) and np.std(eps) > 0.1
    keep = to_numpy(gate.kept_mask()).astype("float32")

    def formula(x, mu, log_sigma2):
        sigma = keras.ops.exp(0.5 * log_sigma2)
        z = noise * (mu + eps * sigma) + (1 - noise) * mu * keep
        return x * z

    np.testing.assert_allclose(
        to_numpy(gate_output(x0, mu0, ls0)), to_numpy(formula(x0, mu0, ls0)),
        rtol=1e-6, atol=1e-7,
    )  # fmt: skip
    weights = rng.normal(size=x0.shape).astype("float32")
    ours = gradients(
        lambda *v: keras.ops.sum(gate_output(*v) ** 2 * weights), [x0, mu0, ls0]
    )
    theirs = gradients(
        lambda *v: keras.ops.sum(formula(*v) ** 2 * weights), [x0, mu0, ls0]
    )
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_weights_saved_without_the_noise_variable_load(tmp_path):
    """A gate saved with three variables (before `noise`) loads; `noise` 1."""
    import h5py

    layer = kv.VIBDense(6, activation="relu", name="fc")
    model = keras.Sequential([keras.Input((5,)), layer])
    set_gates(layer.gate, np.linspace(-1, 1, 6), np.linspace(-9, 3, 6))
    path = tmp_path / "old.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r+") as f:
        groups = []
        f.visititems(
            lambda name, obj: groups.append(name) if name.endswith("vars") else None
        )
        (gate_vars,) = [g for g in groups if "gate" in g]
        assert sorted(f[gate_vars].keys()) == ["0", "1", "2", "3"]
        del f[gate_vars]["3"]
    fresh_layer = kv.VIBDense(6, activation="relu", name="fc")
    fresh = keras.Sequential([keras.Input((5,)), fresh_layer])
    fresh_layer.gate.noise.assign(0.0)
    fresh.load_weights(path)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    np.testing.assert_array_equal(to_numpy(fresh(x)), to_numpy(model(x)))
    assert float(to_numpy(fresh_layer.gate.noise)) == 1.0


def test_vib_conv2d_is_conv_bn_activation_gate():
    layer = kv.VIBConv2D(3, 3, padding="same", activation="relu", batch_norm=True)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype("float32")
    layer(x)
    mu = np.array([1.2, -0.5, 0.8], "float32")
    set_gates(layer.gate, mu, np.array([-9.0, -9.0, 5.0]))
    bn = layer.bn
    bn.moving_mean.assign([0.1, -0.2, 0.3])
    bn.moving_variance.assign([1.5, 0.5, 2.0])
    conv = keras.ops.convert_to_numpy(layer.conv(x))
    normed = (conv - to_numpy(bn.moving_mean)) / np.sqrt(
        to_numpy(bn.moving_variance) + bn.epsilon
    ) * to_numpy(bn.gamma) + to_numpy(bn.beta)
    expected = np.maximum(normed, 0) * mu * np.array([1, 1, 0])
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)
    assert layer.num_kept() == 2


def test_arguments_pass_through_to_dense_and_conv():
    dense = kv.VIBDense(
        4,
        use_bias=False,
        kernel_initializer="ones",
        kernel_regularizer=keras.regularizers.L2(0.1),
    )
    assert loss_count(dense, np.ones((1, 3), "float32")) == 2  # KL + L2
    assert dense.bias is None
    np.testing.assert_array_equal(to_numpy(dense.kernel), np.ones((3, 4)))
    conv = kv.VIBConv2D(2, (3, 1), strides=2, dilation_rate=1, bias_initializer="ones")
    y = conv(np.zeros((1, 7, 7, 1), "float32"))
    assert y.shape == (1, 3, 4, 2)
    np.testing.assert_array_equal(to_numpy(conv.bias), np.ones(2))


@pytest.mark.parametrize(
    "layer",
    [
        kv.VIBGate(kl_weight=0.5, threshold=1.0, kl_spatial_scaling=False, seed=3),
        kv.VIBDense(8, activation="tanh", kl_weight=1e-4, use_bias=False),
        kv.VIBConv2D(
            4,
            3,
            strides=2,
            padding="same",
            activation="relu",
            batch_norm=True,
            batch_norm_momentum=0.9,
            kernel_regularizer="l2",
        ),
    ],
    ids=["gate", "dense", "conv"],
)
def test_config_round_trip(layer):
    config_round_trip(layer)


def build_lenet5_like():
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            kv.VIBGate(name="input_gate"),
            kv.VIBConv2D(4, 3, activation="relu", batch_norm=True),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            kv.VIBDense(8, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def test_keras_file_round_trip(tmp_path):
    model = build_lenet5_like()
    x = np.random.default_rng(0).normal(size=(16, 12, 12, 1)).astype("float32")
    y = np.arange(16) % 3
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)
    set_gates(model.layers[4].gate, np.linspace(-1, 1, 8), np.linspace(-9, 3, 8))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects needed
    np.testing.assert_array_equal(
        to_numpy(loaded(x, training=False)), to_numpy(model(x, training=False))
    )
    assert [type(layer) for layer in loaded.layers] == [
        type(layer) for layer in model.layers
    ]
    assert loaded.layers[4].num_kept() == model.layers[4].num_kept()


def test_fit_keeps_informative_inputs_and_prunes_the_rest():
    rng = np.random.default_rng(0)
    n, d, informative = 2048, 20, 3
    x = rng.normal(size=(n, d)).astype("float32")
    y = ((x[:, 0] + x[:, 1] - x[:, 2]) > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((d,)),
            kv.VIBGate(kl_weight=1e-2),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=20, batch_size=64, verbose=0)
    kept = model.layers[0].kept_mask()
    assert kept[:informative].all()
    assert kept[informative:].mean() <= 0.2
    assert history.history["accuracy"][-1] > 0.9


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kv.VIBDense(0), "units=0"),
        (lambda: kv.VIBDense(-3), "units=-3"),
        (lambda: kv.VIBDense(2.5), "units=2.5"),
        (lambda: kv.VIBConv2D(0, 3), "filters=0"),
        (lambda: kv.VIBGate(kl_weight=-1.0), "kl_weight=-1.0"),
        (lambda: kv.VIBDense(3, kl_weight=float("nan")), "kl_weight=nan"),
        (lambda: kv.VIBGate(threshold=float("inf")), "threshold=inf"),
        (lambda: kv.VIBConv2D(3, 3, threshold=float("nan")), "threshold=nan"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_gate_on_unknown_channel_dimension():
    with pytest.raises(
        ValueError, match=r"channel dimension.*input_shape=\(None, None\)"
    ):
        kv.VIBGate()(keras.Input((None,)))


def test_gate_on_rank_one_input():
    with pytest.raises(ValueError, match=r"rank >= 2.*input_shape=\(5,\)"):
        kv.VIBGate().build((5,))


def test_gate_on_sizes_left_open_scales_its_kl_by_each_batch():
    gate = kv.VIBGate(kl_weight=0.5)
    assert gate(keras.Input((None, None, 3))).shape == (None, None, None, 3)
    assert gate.positions is None
    per_position = float(to_numpy(gate.kl_loss()))
    np.testing.assert_allclose(
        per_position,
        0.5
        * float(np.sum(to_numpy(kv.layers.kl_divergence(gate.mu, gate.log_sigma2)))),
        rtol=1e-6,
    )
    for shape, positions in (((2, 4, 5, 3), 20), ((1, 2, 3, 3), 6)):
        gate(np.ones(shape, "float32"), training=True)
        np.testing.assert_allclose(
            float(to_numpy(gate.losses[-1])), positions * per_position, rtol=1e-5
        )
    fixed = kv.VIBGate(kl_spatial_scaling=False)
    fixed(keras.Input((None, None, 3)))
    assert fixed.positions == 1


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    import numpy as np
    import keras_vib as kv

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = keras.Sequential([
            keras.Input((10,)),
            kv.VIBGate(kl_weight=1e-2),
            kv.VIBDense(8, activation="relu"),
            keras.layers.Dense(2),
        ])
        model.compile(
            keras.optimizers.Adam(1e-2),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 10)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    before = model.layers[0].log_sigma2.numpy().copy()
    history = model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses
    assert not np.allclose(model.layers[0].log_sigma2.numpy(), before)
    print("REPLICAS", strategy.num_replicas_in_sync, "LOSS", losses[-1])
    """
)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_fit_under_mirrored_strategy():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REPLICAS 2" in result.stdout


# One training step on two worker processes (MultiWorkerMirroredStrategy,
# TF_CONFIG on localhost) or on one process ("single"), with the custom
# training loop of README's "Training on several devices or machines":
# Keras 3's `fit` fails under this strategy for any model
# (keras-team/keras#20585).
MULTI_WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    mode = sys.argv[1]
    if mode != "single":
        os.environ["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": sys.argv[2:4]},
            "task": {"type": "worker", "index": int(mode)},
        })
    import numpy as np
    import tensorflow as tf
    import keras
    import keras_vib as kv

    GLOBAL = 32
    if mode == "single":
        strategy = tf.distribute.get_strategy()
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        keras.utils.set_random_seed(0)
        # Gates nearly noiseless (log sigma^2 = -20): each replica's draws
        # then give the one-process loss to float precision.
        quiet = {
            "kl_weight": 1e-2,
            "log_sigma2_initializer": keras.initializers.Constant(-20.0),
        }
        model = keras.Sequential([
            keras.Input((10,)),
            kv.VIBGate(name="input_gate", **quiet),
            kv.VIBDense(8, activation="relu", name="fc", **quiet),
            keras.layers.Dense(2, name="out"),
        ])
        optimizer = keras.optimizers.SGD(0.1)
        cross_entropy = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="sum"
        )
    initial = [np.asarray(w) for w in model.get_weights()]

    @tf.function
    def train_step(x, y):
        def step(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = cross_entropy(y, logits) / GLOBAL
                loss += tf.add_n(model.losses) / replicas
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        per_replica = strategy.run(step, args=(x, y))
        return strategy.reduce("SUM", per_replica, axis=None)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL, 10)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    ds = strategy.experimental_distribute_dataset(ds.with_options(options))
    monitor = kv.VIBMonitor(verbose=0)
    callbacks = keras.callbacks.CallbackList([monitor], model=model)
    callbacks.on_train_begin()
    callbacks.on_epoch_begin(0)
    for xb, yb in ds:
        loss = float(train_step(xb, yb))
    callbacks.on_epoch_end(0, {"loss": loss})
    callbacks.on_train_end()
    slim = kv.slim_model(model)
    gap = float(np.abs(np.asarray(slim(x)) - np.asarray(model(x))).max())
    weights = [np.asarray(w) for w in model.get_weights()]
    moved = max(float(np.abs(a - b).max()) for a, b in zip(weights, initial))
    print("RESULT", json.dumps({
        "replicas": replicas, "loss": loss, "kl": monitor.history["kl"][-1],
        "gap": gap, "moved": moved, "weights": [w.tolist() for w in weights],
    }))
    """
)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _result(stdout):
    line = [x for x in stdout.splitlines() if x.startswith("RESULT ")][0]
    return json.loads(line[len("RESULT ") :])


@pytest.mark.slow
@pytest.mark.tensorflow
def test_custom_loop_under_multi_worker_mirrored_strategy(tmp_path):
    """Two worker processes on localhost: the same loss (the KL counted
    once) and the same update as one process on the whole batch; both
    workers agree, the monitor runs and the result slims."""
    cluster = [f"localhost:{port}" for port in _free_ports(2)]
    script = tmp_path / "worker.py"
    script.write_text(MULTI_WORKER_SCRIPT)
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), *cluster],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=300)
            assert worker.returncode == 0, err[-3000:]
            outputs.append(_result(out))
    finally:
        for worker in workers:
            worker.kill()
    single = subprocess.run(
        [sys.executable, str(script), "single"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    one = _result(single.stdout)
    assert one["replicas"] == 1 and one["kl"] > 1.0  # would show if doubled
    assert one["moved"] > 1e-3  # the step changed the weights
    for found in outputs:
        assert found["replicas"] == 2
        assert found["loss"] == pytest.approx(one["loss"], rel=1e-5)
        assert found["kl"] == pytest.approx(one["kl"], rel=1e-5)
        assert found["gap"] < 1e-5
        for a, b in zip(found["weights"], one["weights"]):
            np.testing.assert_allclose(a, b, atol=1e-5)


JAX_DATA_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import keras
    import numpy as np
    import keras_vib as kv

    def make():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((10,)),
            kv.VIBGate(kl_weight=1e-2, name="input_gate"),
            kv.VIBDense(8, activation="relu", kl_weight=1e-2, name="fc"),
            keras.layers.Dense(2, name="out"),
        ])
        model.compile(
            keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    results = {}
    for mode in ("one device", "two devices"):
        if mode == "two devices":
            devices = keras.distribution.list_devices("cpu")
            assert len(devices) == 2, devices
            keras.distribution.set_distribution(
                keras.distribution.DataParallel(devices=devices)
            )
        model = make()
        loss = float(model.train_on_batch(x, y))
        kl = sum(float(g.kl_loss()) for _, g in kv.report.gates(model))
        weights = [np.asarray(w) for w in model.get_weights()]
        history = model.fit(x, y, batch_size=32, epochs=2, verbose=0,
                            callbacks=[kv.VIBMonitor(verbose=0)])
        assert np.isfinite(history.history["kl"][-1])
        slim = kv.slim_model(model)
        np.testing.assert_allclose(
            np.asarray(slim(x)), np.asarray(model(x)), atol=1e-5
        )
        results[mode] = (loss, kl, weights)
    (l1, k1, w1), (l2, k2, w2) = results["one device"], results["two devices"]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(w1, w2))
    print("RESULT", json.dumps({"loss": [l1, l2], "kl": [k1, k2], "diff": diff}))
    """
)


@pytest.mark.slow
def test_fit_under_jax_data_parallel_on_two_devices():
    """`keras.distribution.DataParallel` on two CPU devices: the same loss
    (the KL counted once) and the same update as on one device; the monitor
    runs and the result slims."""
    pytest.importorskip("jax")
    result = subprocess.run(
        [sys.executable, "-c", JAX_DATA_PARALLEL_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = _result(result.stdout)
    (l1, l2), (k1, k2) = found["loss"], found["kl"]
    assert k1 > 0.1  # a KL term that would show if counted twice
    assert l2 == pytest.approx(l1, rel=1e-5)
    assert k2 == pytest.approx(k1, rel=1e-5)
    assert found["diff"] < 1e-5


# --------------------------------------------------------------------------
# A gate closes, reopens and freezes its own units


def _gate(units=6, seed=0):
    gate = kv.VIBGate()
    gate.build((None, units))
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.5, 1.5, units) * rng.choice([-1, 1], units)
    set_gates(gate, mu, np.full(units, -9.0))
    return gate


def test_close_and_reopen_move_log_alpha_past_the_threshold():
    gate = _gate()
    mu_before = to_numpy(gate.mu).copy()
    gate.close([1, 4], margin=2.0)
    log_alpha = to_numpy(gate.log_alpha())
    np.testing.assert_allclose(log_alpha[[1, 4]], 2.0, atol=1e-5)
    assert gate.kept_mask().tolist() == [True, False, True, True, False, True]
    gate.reopen([4])
    np.testing.assert_allclose(to_numpy(gate.log_alpha())[4], -1.0, atol=1e-5)
    assert gate.num_kept() == 5
    np.testing.assert_array_equal(to_numpy(gate.mu), mu_before)  # mu untouched


def test_set_kept_changes_only_the_units_on_the_wrong_side():
    gate = _gate()
    gate.close([0])
    before = to_numpy(gate.log_sigma2).copy()
    mask = np.array([False, True, False, True, True, True])
    gate.set_kept(mask)
    np.testing.assert_array_equal(gate.kept_mask(), mask)
    after = to_numpy(gate.log_sigma2)
    # Unit 0 was closed already and units 1, 3-5 kept: left as they were.
    np.testing.assert_array_equal(after[[0, 1, 3, 4, 5]], before[[0, 1, 3, 4, 5]])
    assert after[2] != before[2]


def test_freeze_turns_the_noise_off_and_keeps_the_order():
    gate = _gate()
    gate.close([2])
    log_alpha = to_numpy(gate.log_alpha()).copy()
    gate.freeze(margin=5.0)
    assert gate.frozen
    x = np.ones((3, 6), "float32")
    np.testing.assert_allclose(
        to_numpy(gate(x, training=True)), to_numpy(gate(x, training=False))
    )
    np.testing.assert_allclose(
        to_numpy(gate.log_alpha()),
        log_alpha + np.where(gate.kept_mask(), -5.0, 5.0),
        atol=1e-4,
    )
    gate.unfreeze()
    assert not gate.frozen
    assert not np.allclose(
        to_numpy(gate(x, training=True)), to_numpy(gate(x, training=False))
    )


def test_set_kl_scale_scales_the_kl_term():
    gate = _gate()
    full = float(to_numpy(gate.kl_loss()))
    gate.set_kl_scale(0.25)
    np.testing.assert_allclose(float(to_numpy(gate.kl_loss())), 0.25 * full, rtol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda g: g.close([6]), r"indices=\[6\]"),
        (lambda g: g.close([-1]), r"indices=\[-1\]"),
        (lambda g: g.reopen([0.5]), r"indices=\[0.5\]"),
        (lambda g: g.close([0], margin=0), "margin=0"),
        (lambda g: g.set_kept([True, False]), r"mask of shape \(2,\)"),
        (lambda g: g.freeze(margin=-1), "margin=-1"),
        (lambda g: g.set_kl_scale(-0.5), "value=-0.5"),
    ],
)
def test_gate_methods_refuse_bad_arguments(call, match):
    gate = _gate()
    before = to_numpy(gate.log_sigma2).copy()
    with pytest.raises(ValueError, match=match):
        call(gate)
    np.testing.assert_array_equal(to_numpy(gate.log_sigma2), before)


class _TinyAttention(keras.layers.Layer):
    """Attention of another library's kind: `_compute_attention(query, key,
    value, mask)` on values repeated per query head (2 key/value heads, 2
    query heads each), as keras-hub's Llama attention."""

    num_key_value_heads = 2

    def build(self, shape):
        self.q = self.add_weight(shape=(shape[-1], 4, 3), name="q")
        self.k = self.add_weight(shape=(shape[-1], 2, 3), name="k")
        self.v = self.add_weight(shape=(shape[-1], 2, 3), name="v")
        self.o = self.add_weight(shape=(4, 3, shape[-1]), name="o")

    def _compute_attention(self, query, key, value, attention_mask=None):
        scores = keras.ops.softmax(keras.ops.einsum("bquh,bkuh->buqk", query, key))
        return keras.ops.einsum("buqk,bkuh->bquh", scores, value)

    def call(self, x, attention_mask=None, training=None):
        query = keras.ops.einsum("bqm,muh->bquh", x, self.q)
        key = keras.ops.repeat(keras.ops.einsum("bkm,mvh->bkvh", x, self.k), 2, axis=2)
        value = keras.ops.repeat(
            keras.ops.einsum("bkm,mvh->bkvh", x, self.v), 2, axis=2
        )
        out = self._compute_attention(query, key, value, attention_mask)
        return keras.ops.einsum("bquh,uhm->bqm", out, self.o)


def test_attention_heads_gate_another_library_s_layer():
    from keras_vib.layers import VIBAttentionHeads

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    inner = _TinyAttention()
    plain = keras.ops.convert_to_numpy(inner(x))
    gated = VIBAttentionHeads(inner, mu_initializer="ones")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gated(x)), plain, atol=1e-5)
    assert gated.gate.units == 2 and gated.num_kept() == 2
    gated.gate.set_kept(np.array([True, False]))  # the second key/value head
    closed = keras.ops.convert_to_numpy(gated(x))
    # The same as the layer with that head's values (both its query heads) at 0.
    weights = inner.get_weights()
    inner.v.assign(np.concatenate([weights[2][:, :1], 0 * weights[2][:, 1:]], axis=1))
    np.testing.assert_allclose(closed, keras.ops.convert_to_numpy(inner(x)), atol=1e-5)
    assert not np.allclose(closed, plain)
    with pytest.raises(ValueError, match="_compute_attention"):
        VIBAttentionHeads(keras.layers.Dense(3))
