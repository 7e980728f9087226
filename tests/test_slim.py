"""Tests of `keras_vib.slim_model`: closed units physically removed.

Every model gets random stock weights (biases, batch-norm statistics) and
random gates (`helpers.random_gates`: about half of the units closed, mu of
both signs), and `contract.check_contract` verifies the whole contract on
it: same function as the gated model at inference, stock Keras layers only,
the same compression report, the parameters, kernel entries and FLOPs the
report predicts (the FLOPs also counted from the TensorFlow graph), and the
original model left untouched.
"""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from contract import check_contract
from helpers import OpaqueScale, random_gates, set_gates

import keras_vib as kv
from keras_vib import graph

L = keras.layers


# --------------------------------------------------------------------------
# Shared checks


def randomize_stock_weights(model, rng):
    """Random biases, batch-norm parameters and statistics, PReLU slopes.

    Kernels keep their (random) initial values; gate variables are left alone.
    """
    for v in model.weights:
        if v.name in ("bias", "beta", "moving_mean"):
            v.assign(rng.normal(0.0, 0.3, tuple(v.shape)).astype("float32"))
        elif v.name in ("gamma", "moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
        elif v.name == "alpha":
            v.assign(rng.uniform(0.1, 0.5, tuple(v.shape)).astype("float32"))


def prepare(model, seed, **gate_kwargs):
    """Randomizes stock weights and gates; returns `(model, masks, x)`."""
    rng = np.random.default_rng(seed)
    randomize_stock_weights(model, rng)
    masks = random_gates(model, rng, **gate_kwargs)
    x = rng.normal(size=(4,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    return model, masks, x


def numpy_out(tensor):
    return keras.ops.convert_to_numpy(tensor)


def assert_same_function(out, ref):
    out, ref = numpy_out(out), numpy_out(ref)
    assert out.shape == ref.shape
    assert out.dtype == np.float32
    scale = max(float(np.max(np.abs(ref))), 1e-6)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * scale)


def select_features_layers(slim):
    return [layer for layer in slim.layers if isinstance(layer, kv.slim.SelectFeatures)]


# --------------------------------------------------------------------------
# Model factories (small shapes)


def lenet_300_100(input_gate=True):
    layers = [keras.Input((784,))]
    if input_gate:
        layers.append(kv.VIBGate(name="input_gate"))
    layers += [
        kv.VIBDense(300, activation="relu", name="fc1"),
        kv.VIBDense(100, activation="relu", name="fc2"),
        L.Dense(10, name="classifier"),
    ]
    return keras.Sequential(layers)


def lenet5_caffe():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            kv.VIBConv2D(20, 5, activation="relu", name="conv1"),
            L.MaxPooling2D(),
            kv.VIBConv2D(50, 5, activation="relu", name="conv2"),
            L.MaxPooling2D(),
            L.Flatten(),
            kv.VIBDense(500, activation="relu", name="fc1"),
            L.Dense(10, name="classifier"),
        ]
    )


def vgg_like():
    def block(filters, name):
        return kv.VIBConv2D(
            filters,
            3,
            padding="same",
            batch_norm=True,
            activation="relu",
            name=name,
        )

    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            block(8, "conv1_1"),
            block(8, "conv1_2"),
            L.MaxPooling2D(),
            block(12, "conv2_1"),
            L.MaxPooling2D(),
            block(16, "conv3_1"),
            L.MaxPooling2D(),
            L.Flatten(),
            kv.VIBDense(16, activation="relu", name="fc1"),
            L.Dense(10, name="classifier"),
        ]
    )


def residual(activation="relu"):
    inputs = keras.Input((8, 8, 3))
    a = kv.VIBConv2D(8, 3, padding="same", activation=activation, name="a")(inputs)
    b = kv.VIBConv2D(8, 3, padding="same", activation=activation, name="b")(a)
    added = L.Add()([a, b])
    pooled = L.GlobalAveragePooling2D()(added)
    return keras.Model(inputs, L.Dense(3, name="classifier")(pooled))


def concat_branches():
    inputs = keras.Input((8, 8, 3))
    a = kv.VIBConv2D(6, 3, padding="same", activation="relu", name="a")(inputs)
    b = kv.VIBConv2D(5, 1, activation="relu", name="b")(inputs)
    joined = L.Concatenate()([a, b])
    mixed = L.Conv2D(6, 3, padding="same", activation="relu", name="mix")(joined)
    pooled = L.GlobalAveragePooling2D()(mixed)
    return keras.Model(inputs, L.Dense(3, name="classifier")(pooled))


def depthwise(multiplier=1):
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            kv.VIBConv2D(6, 3, padding="same", activation="relu", name="c1"),
            L.DepthwiseConv2D(3, padding="same", depth_multiplier=multiplier),
            kv.VIBConv2D(8, 1, activation="relu", name="c2"),
            L.GlobalAveragePooling2D(),
            L.Dense(3, name="classifier"),
        ]
    )


def gap_classifier():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            kv.VIBConv2D(6, 3, activation="relu", name="c1"),
            kv.VIBConv2D(8, 3, activation="relu", name="c2"),
            L.GlobalAveragePooling2D(),
            L.Dense(3, name="classifier"),
        ]
    )


def dense_with_dropout():
    return keras.Sequential(
        [
            keras.Input((12,)),
            kv.VIBDense(16, activation="relu", name="fc1"),
            L.Dropout(0.5),
            kv.VIBDense(12, activation="relu", name="fc2"),
            L.Dropout(0.3),
            L.Dense(10, name="fc3"),
            L.Activation("tanh"),
            kv.VIBGate(name="gate3"),
            L.Dense(3, name="classifier"),
        ]
    )


def conv_bn_relu_gate():
    """Gate after BN and activation written as separate stock layers."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(8, 3, padding="same", name="conv"),
            L.BatchNormalization(name="bn"),
            L.ReLU(),
            kv.VIBGate(name="gate"),
            L.MaxPooling2D(),
            L.Conv2D(6, 3, name="conv2"),
            L.Flatten(),
            L.Dense(3, name="classifier"),
        ]
    )


def conv3_same():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            kv.VIBConv2D(6, 3, padding="same", activation="relu", name="c1"),
            kv.VIBConv2D(6, 3, padding="same", activation="relu", name="c2"),
            kv.VIBConv2D(6, 3, padding="same", activation="relu", name="c3"),
            L.GlobalAveragePooling2D(),
            L.Dense(3, name="classifier"),
        ]
    )


# --------------------------------------------------------------------------
# 1. LeNet-300-100 with an input gate


def test_lenet_300_100_input_gate():
    model, masks, x = prepare(lenet_300_100(), 0)
    _, slim = check_contract(model, x)
    # The input keeps its shape; one SelectFeatures drops the closed features.
    assert tuple(slim.inputs[0].shape) == (None, 784)
    (select,) = select_features_layers(slim)
    assert select._inbound_nodes[0].input_tensors[0] is slim.inputs[0]
    dense = [layer for layer in slim.layers if isinstance(layer, L.Dense)]
    assert len(dense) == 3
    k0, k1, k2 = (int(m.sum()) for m in masks)
    assert [tuple(d.kernel.shape) for d in dense] == [(k0, k1), (k1, k2), (k2, 10)]


def test_lenet_300_100_without_input_shape():
    model, masks, x = prepare(lenet_300_100(), 2)
    indices = kv.slim.kept_input_indices(model)
    assert isinstance(indices, list) and len(indices) == 1
    (idx,) = indices
    assert isinstance(idx, np.ndarray) and np.issubdtype(idx.dtype, np.integer)
    np.testing.assert_array_equal(idx, np.flatnonzero(masks[0]))
    _, slim = check_contract(model, x, keep_input_shape=False)
    assert tuple(slim.inputs[0].shape) == (None, len(idx))
    assert not select_features_layers(slim)


def test_no_input_gate_no_select_features():
    model, _, x = prepare(lenet_300_100(input_gate=False), 3)
    _, slim = check_contract(model, x)
    assert not select_features_layers(slim)
    (idx,) = kv.slim.kept_input_indices(model)
    np.testing.assert_array_equal(idx, np.arange(784))


# --------------------------------------------------------------------------
# 2-8. Architectures (LeNet-5 and VGG: see their own tests below)


@pytest.mark.parametrize(
    "factory",
    [
        residual,
        lambda: residual("sigmoid"),
        concat_branches,
        depthwise,
        lambda: depthwise(2),
        gap_classifier,
        dense_with_dropout,
        conv_bn_relu_gate,
    ],
    ids=[
        "residual_relu",
        "residual_sigmoid",
        "concat",
        "depthwise",
        "depthwise_x2",
        "gap",
        "dropout_and_standalone_gate",
        "conv_bn_relu_gate",
    ],
)
def test_architectures(factory):
    model, _, x = prepare(factory(), 4)
    check_contract(model, x)


def test_lenet5_shapes():
    model, masks, x = prepare(lenet5_caffe(), 5)
    _, slim = check_contract(model, x)
    k1, k2, k3 = (int(m.sum()) for m in masks)
    convs = [layer for layer in slim.layers if isinstance(layer, L.Conv2D)]
    assert [c.filters for c in convs] == [k1, k2]
    dense = [layer for layer in slim.layers if isinstance(layer, L.Dense)]
    assert [tuple(d.kernel.shape) for d in dense] == [(16 * k2, k3), (k3, 10)]


def test_vgg_batch_norm_keeps_only_kept_channels():
    model, masks, x = prepare(vgg_like(), 6)
    _, slim = check_contract(model, x)
    kept = [int(m.sum()) for m in masks]
    convs = [layer for layer in slim.layers if isinstance(layer, L.Conv2D)]
    assert [c.filters for c in convs] == kept[:4]
    dense = [layer for layer in slim.layers if isinstance(layer, L.Dense)]
    assert [d.units for d in dense] == [kept[4], 10]
    # Each block keeps its batch norm, cut to the kept channels (the slimmer
    # may add per-channel scale layers, batch norms too, of the same width).
    norms = [layer for layer in slim.layers if isinstance(layer, L.BatchNormalization)]
    assert len(norms) >= 4
    assert {int(n.gamma.shape[0]) for n in norms} <= set(kept[:4])


# --------------------------------------------------------------------------
# Negative mu before a max-pool (mu * x does not commute with max when mu < 0)


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid"])
@pytest.mark.parametrize(
    "pool, signs", [("max", "negative"), ("max", "mixed"), ("global_max", "mixed")]
)
def test_negative_mu_before_max_pool(activation, pool, signs):
    layers = [keras.Input((8, 8, 3)), L.Conv2D(8, 3, padding="same", name="conv")]
    if activation:
        layers.append(L.Activation(activation))
    layers.append(kv.VIBGate(name="gate"))
    if pool == "max":
        layers += [L.MaxPooling2D(), L.Conv2D(4, 3), L.Flatten()]
    else:
        layers.append(L.GlobalMaxPooling2D())
    layers.append(L.Dense(3, name="classifier"))
    model, _, x = prepare(keras.Sequential(layers), 7)
    gate = model.get_layer("gate")
    mu = np.array([-1.3, -0.7, 0.9, -1.1, -0.6, 1.2, -1.4, -0.8])
    if signs == "negative":
        mu = -np.abs(mu)
    set_gates(gate, mu, [-9, 6, -9, -9, 6, -9, 6, -9])
    check_contract(model, x)


def test_vib_conv_negative_mu_before_max_pool():
    model, _, x = prepare(lenet5_caffe(), 8)
    for name in ("conv1", "conv2"):
        gate = model.get_layer(name).gate
        mu = -np.abs(numpy_out(gate.mu))
        set_gates(gate, mu, numpy_out(gate.log_sigma2))
    check_contract(model, x)


@pytest.mark.parametrize("keep_input_shape", [True, False])
def test_input_gate_with_negative_mu_before_max_pool(keep_input_shape):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 6)),
            kv.VIBGate(name="input_gate"),
            L.MaxPooling2D(),
            L.Conv2D(4, 3, name="conv"),
            L.GlobalAveragePooling2D(),
            L.Dense(3, name="classifier"),
        ]
    )
    model, _, x = prepare(model, 9)
    set_gates(
        model.get_layer("input_gate"),
        [-1.2, 0.8, -0.6, -1.4, 1.1, -0.9],
        [-9, 6, -9, -9, 6, 6],
    )
    _, slim = check_contract(model, x, keep_input_shape=keep_input_shape)
    (idx,) = kv.slim.kept_input_indices(model)
    np.testing.assert_array_equal(idx, [0, 2, 3])
    assert len(select_features_layers(slim)) == int(keep_input_shape)


# --------------------------------------------------------------------------
# Channel-wise layers and merges after a gate


CHANNELWISE = {
    "batch_norm": lambda: L.BatchNormalization(),
    "relu": lambda: L.ReLU(),
    "leaky_relu": lambda: L.LeakyReLU(negative_slope=0.2),
    "prelu": lambda: L.PReLU(),
    "elu": lambda: L.ELU(),
    "sigmoid": lambda: L.Activation("sigmoid"),
    "dropout": lambda: L.Dropout(0.5),
    "spatial_dropout": lambda: L.SpatialDropout2D(0.5),
    "gaussian_noise": lambda: L.GaussianNoise(0.1),
    "zero_padding": lambda: L.ZeroPadding2D(1),
    "cropping": lambda: L.Cropping2D(1),
    "upsampling": lambda: L.UpSampling2D(),
    "average_pool": lambda: L.AveragePooling2D(2),
    "max_pool_same": lambda: L.MaxPooling2D(padding="same"),
}


# Layers that turn a closed (zero) channel into a nonzero constant.
MAKES_CONSTANTS = ("batch_norm", "sigmoid")


@pytest.mark.parametrize("kind", sorted(CHANNELWISE))
def test_channelwise_layer_after_gate(kind):
    # A closed channel is 0 after the gate; BN or sigmoid make it a nonzero
    # constant, which the zero padding of the next conv turns into a varying
    # border: the slim model must still match (and may then have to keep
    # those channels, so it need not be smaller).
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            kv.VIBConv2D(8, 3, padding="same", activation="relu", name="c1"),
            CHANNELWISE[kind](),
            L.Conv2D(6, 3, padding="same", name="conv2"),
            L.GlobalAveragePooling2D(),
            L.Dense(3, name="classifier"),
        ]
    )
    model, _, x = prepare(model, 10)
    check_contract(model, x, fewer=kind not in MAKES_CONSTANTS)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_constant_channel_into_depthwise_conv(padding):
    # Closed channels become constants (BN beta) before a depthwise conv; with
    # "same" padding the border makes them vary over the positions.
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            kv.VIBConv2D(6, 3, padding="same", activation="relu", name="c1"),
            L.BatchNormalization(),
            L.DepthwiseConv2D(3, padding=padding),
            L.Conv2D(4, 1, name="conv2"),
            L.GlobalAveragePooling2D(),
            L.Dense(3, name="classifier"),
        ]
    )
    model, _, x = prepare(model, 11)
    # With "same" padding every constant channel must stay.
    check_contract(model, x, fewer=padding == "valid")


@pytest.mark.parametrize(
    "merge", [L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Multiply]
)
def test_merge_of_gated_branches(merge):
    inputs = keras.Input((6, 6, 3))
    a = kv.VIBConv2D(6, 3, padding="same", activation="relu", name="a")(inputs)
    b = kv.VIBConv2D(6, 3, padding="same", activation="relu", name="b")(inputs)
    merged = merge()([a, b])
    mixed = L.Conv2D(4, 1, name="mix")(merged)
    pooled = L.GlobalAveragePooling2D()(mixed)
    model = keras.Model(inputs, L.Dense(3, name="classifier")(pooled))
    model, _, x = prepare(model, 12)
    # A merged channel stays while either branch keeps it, and mu of both
    # signs before a merge needs explicit scale layers: no size guarantee.
    check_contract(model, x, fewer=False)


@pytest.mark.parametrize("activation", ["linear", "relu", "sigmoid"])
def test_gate_at_the_model_output(activation):
    # Output channels are all kept (closed ones as zeros).
    model = keras.Sequential(
        [
            keras.Input((10,)),
            kv.VIBDense(12, activation="relu", name="fc1"),
            kv.VIBDense(5, activation=activation, name="out"),
        ]
    )
    model, _, x = prepare(model, 13)
    _, slim = check_contract(model, x)
    assert slim.outputs[0].shape[-1] == 5


# --------------------------------------------------------------------------
# 9. A gated layer closed entirely


def close(layer):
    gate = getattr(layer, "gate", layer)
    set_gates(gate, np.ones(gate.units), np.full(gate.units, 6.0))


@pytest.mark.parametrize("closed", ["input_gate", "fc1", "fc2"])
def test_dense_layer_closed_entirely(closed):
    model, _, x = prepare(lenet_300_100(), 14)
    close(model.get_layer(closed))
    _, slim = check_contract(model, x)
    # What comes out is a constant: the classifier bias folded with the rest.
    out = numpy_out(slim(x, training=False))
    np.testing.assert_allclose(out, np.broadcast_to(out[:1], out.shape), rtol=1e-6)


def test_first_dense_closed_gives_nonzero_constant_downstream():
    # fc1 closed: fc2 sees zeros and outputs mu * relu(bias), a nonzero
    # constant that must be folded into the classifier bias.
    model, _, x = prepare(lenet_300_100(input_gate=False), 15)
    model.get_layer("fc2").bias.assign(np.abs(numpy_out(model.get_layer("fc2").bias)))
    close(model.get_layer("fc1"))
    ref = numpy_out(model(x, training=False))
    assert not np.allclose(ref, numpy_out(model.get_layer("classifier").bias))
    check_contract(model, x)


@pytest.mark.parametrize("closed", ["c1", "c2", "c3"])
def test_conv_layer_closed_entirely(closed):
    model, _, x = prepare(conv3_same(), 16)
    close(model.get_layer(closed))
    check_contract(model, x)


@pytest.mark.parametrize("closed", ["conv2", "fc1"])
def test_lenet5_layer_closed_entirely(closed):
    model, _, x = prepare(lenet5_caffe(), 17)
    close(model.get_layer(closed))
    check_contract(model, x)


# --------------------------------------------------------------------------
# 10. Layers the slimmer cannot see through


def _opaque_after_gate(kind):
    if kind == "lstm":
        inputs = keras.Input((5, 4))
        h = kv.VIBDense(6, activation="relu", name="fc1")(inputs)
        h = L.LSTM(3, name="blocker")(h)
    else:
        inputs = keras.Input((6,))
        h = kv.VIBDense(8, activation="relu", name="fc1")(inputs)
        if kind == "lambda":
            h = L.Lambda(lambda t: t * 2.0, name="blocker")(h)
        else:
            h = OpaqueScale(name="blocker")(h)
    return keras.Model(inputs, L.Dense(2, name="classifier")(h))


@pytest.mark.parametrize(
    "kind, class_name",
    [("lstm", "LSTM"), ("lambda", "Lambda"), ("custom", "OpaqueScale")],
)
def test_opaque_layer_after_gate_raises(kind, class_name):
    model, _, x = prepare(_opaque_after_gate(kind), 18)
    before = [w.copy() for w in model.get_weights()]
    ref = numpy_out(model(x, training=False))
    with pytest.raises(ValueError) as info:
        kv.slim_model(model)
    message = str(info.value)
    assert "blocker" in message and class_name in message
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(numpy_out(model(x, training=False)), ref)


def test_opaque_layer_after_standalone_gate_raises():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(8, name="fc"),
            kv.VIBGate(name="gate"),
            OpaqueScale(name="blocker"),
            L.Dense(2, name="classifier"),
        ]
    )
    model, _, _ = prepare(model, 19)
    with pytest.raises(ValueError, match="blocker.*OpaqueScale|OpaqueScale.*blocker"):
        kv.slim_model(model)


@pytest.mark.parametrize("kind", ["lstm", "custom", "lambda"])
def test_opaque_layer_before_gates_is_copied(kind):
    if kind == "lstm":
        inputs = keras.Input((5, 4))
        h = L.LSTM(6, name="front")(inputs)
    else:
        inputs = keras.Input((6,))
        if kind == "custom":
            h = OpaqueScale(name="front")(inputs)
        else:
            h = L.Lambda(lambda t: t * 2.0, name="front")(inputs)
    h = kv.VIBDense(12, activation="relu", name="fc1")(h)
    model = keras.Model(inputs, L.Dense(2, name="classifier")(h))
    model, _, x = prepare(model, 20)
    _, slim = check_contract(model, x, fewer=False)
    front_type = type(model.get_layer("front"))
    assert sum(type(layer) is front_type for layer in slim.layers) == 1


def test_custom_layer_after_ungated_dense_downstream_of_gate():
    # The custom layer reads a plain Dense (all its channels kept): nothing
    # needs cutting or folding through it.
    inputs = keras.Input((6,))
    h = kv.VIBDense(12, activation="relu", name="fc1")(inputs)
    h = L.Dense(5, name="fc2")(h)
    h = OpaqueScale(name="custom")(h)
    model = keras.Model(inputs, L.Dense(2, name="classifier")(h))
    model, _, x = prepare(model, 21)
    check_contract(model, x)


# --------------------------------------------------------------------------
# Saving


def test_slim_with_select_features_saves_and_loads(tmp_path):
    model, _, x = prepare(lenet_300_100(), 22)
    slim = kv.slim_model(model)
    assert select_features_layers(slim)
    path = tmp_path / "slim.keras"
    slim.save(path)
    loaded = keras.models.load_model(path)
    assert_same_function(loaded(x, training=False), model(x, training=False))


LOAD_SCRIPT = textwrap.dedent(
    """
    import os
    import sys

    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras
    import numpy as np

    model = keras.models.load_model(sys.argv[1])
    x = np.load(sys.argv[2])
    np.save(sys.argv[3], keras.ops.convert_to_numpy(model(x, training=False)))
    print("KERAS_VIB_IMPORTED", "keras_vib" in sys.modules)
    """
)


@pytest.mark.slow
def test_slim_loads_without_keras_vib(tmp_path):
    model, _, x = prepare(lenet5_caffe(), 23)
    ref = numpy_out(model(x, training=False))
    slim = kv.slim_model(model)
    path = tmp_path / "slim.keras"
    slim.save(path)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_SCRIPT,
            str(path),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "KERAS_VIB_IMPORTED False" in result.stdout
    assert_same_function(np.load(tmp_path / "y.npy"), ref)


def test_inserted_scale_layers_stay_fixed_in_training_mode():
    # A negative mu before a max-pool needs an explicit scale layer; training
    # the slim model must not turn it into a batch norm over the batch.
    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            kv.VIBConv2D(2, 1, activation="relu", name="g"),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(1),
        ]
    )
    set_gates(model.get_layer("g").gate, [-1.0, 1.0], [-9.0, -9.0])
    slim = kv.slim_model(model)
    assert graph.analyze(model).folds[0][0] == graph.EXPLICIT
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 2)).astype("float32")
    assert_same_function(slim(x, training=True), model(x, training=False))
    assert_same_function(slim(x, training=False), model(x, training=False))


def test_input_gate_after_flatten_selects_pixels():
    # The zoo's LeNet-300-100 reads images: Flatten, then the input gate.
    model, masks, x = prepare(kv.lenet_300_100(), 21)
    k0, k1, k2 = (int(m.sum()) for m in masks)
    report = kv.compression_report(model)
    assert report.kept_weights == k0 * k1 + k1 * k2 + k2 * 10
    _, slim = check_contract(model, x)
    (select,) = select_features_layers(slim)
    assert select.input.shape[-1] == 784 and select.output.shape[-1] == k0
    assert isinstance(slim.layers[1], L.Flatten)


def _log_sigma2_for(mu, log_alpha):
    return np.asarray(log_alpha) + np.log(np.square(mu) + 1e-8)


def test_rounded_masks_reopen_nearest_and_close_farthest():
    """Kept counts to the nearest multiple: reopening the closed units of
    lowest log alpha, closing the open units of highest; the gates stay."""
    from helpers import lenet5

    model = lenet5()
    gates = dict(kv.gates.gates(model))
    rng = np.random.default_rng(0)
    states = {
        "conv1": rng.permutation(20) < 0,  # none kept: stays empty
        "conv2": rng.permutation(50) < 13,  # 13 -> 16: three reopen
        "fc1": rng.permutation(500) < 11,  # 11 -> 8: three close
    }
    for name, kept in states.items():
        gate = gates[name]
        mu = np.ones(gate.units)
        log_alpha = np.where(
            kept, -rng.uniform(1, 5, gate.units), rng.uniform(1, 5, gate.units)
        )
        set_gates(gate, mu, _log_sigma2_for(mu, log_alpha))
    before = {n: g.kept_mask() for n, g in gates.items()}
    masks = kv.slim.rounded_masks(model, 8)
    for name, gate in gates.items():
        np.testing.assert_array_equal(gate.kept_mask(), before[name])  # unchanged
    log_alpha = {n: keras.ops.convert_to_numpy(g.log_alpha()) for n, g in gates.items()}
    assert masks[id(gates["conv1"])].sum() == 0
    conv2 = masks[id(gates["conv2"])]
    assert conv2.sum() == 16 and (conv2 >= before["conv2"]).all()
    reopened = conv2 & ~before["conv2"]
    still_closed = ~conv2
    assert log_alpha["conv2"][reopened].max() <= log_alpha["conv2"][still_closed].min()
    fc1 = masks[id(gates["fc1"])]
    assert fc1.sum() == 8 and (fc1 <= before["fc1"]).all()
    closed = before["fc1"] & ~fc1
    assert log_alpha["fc1"][closed].min() >= log_alpha["fc1"][fc1].max()
    # A count under the multiple goes up to it; a gate smaller than it
    # keeps everything.
    assert kv.slim.rounded_masks(model, 32)[id(gates["conv2"])].sum() == 32
    assert kv.slim.rounded_masks(model, 64)[id(gates["conv2"])].sum() == 50
    with pytest.raises(ValueError, match="round_to=0"):
        kv.slim.rounded_masks(model, 0)


def test_a_slim_model_rounded_to_8_computes_the_gated_model_with_those_units():
    from helpers import lenet5

    rng = np.random.default_rng(1)
    model = lenet5()
    random_gates(model, rng)
    x = rng.random((4, 28, 28, 1)).astype("float32")
    before = [g.kept_mask() for _, g in kv.gates.gates(model)]
    slim = kv.slim_model(model, round_to=8)
    for mask, (_, gate) in zip(before, kv.gates.gates(model)):  # unchanged
        np.testing.assert_array_equal(gate.kept_mask(), mask)
    widths = [la.filters for la in slim.layers if isinstance(la, keras.layers.Conv2D)]
    widths += [la.units for la in slim.layers if isinstance(la, keras.layers.Dense)]
    assert all(w % 8 == 0 for w in widths[:-1]), widths  # (the classifier: 10)
    # The same as the gated model with its gates set to those masks.
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    masks = kv.slim.rounded_masks(model, 8)
    for (_, gate), (_, original) in zip(kv.gates.gates(twin), kv.gates.gates(model)):
        gate.set_kept(masks[id(original)])
    np.testing.assert_allclose(slim(x), twin(x, training=False), rtol=1e-4, atol=1e-5)
