import warnings

import keras
import numpy as np
import pytest
from contract import check_contract
from helpers import randomize_statistics
from keras.ops import convert_to_numpy as to_numpy

import keras_vib as kv
from keras_vib.report import gated_layers

L = keras.layers


def gate_names(model):
    return [name for name, _ in gated_layers(model)]


def assert_close(a, b, rtol=1e-5):
    a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def small_cnn():
    inputs = keras.Input((12, 12, 3), name="image")
    x = L.Conv2D(8, 3, name="conv1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(6, 3, activation="relu", name="conv2")(x)
    x = L.Flatten()(x)
    x = L.Dense(16, activation="relu", name="fc1")(x)
    return keras.Model(inputs, L.Dense(4, name="classifier")(x))


def test_gates_go_after_bn_and_activation_never_on_the_output():
    model = small_cnn()
    gated = kv.add_gates(model)
    assert gate_names(gated) == ["conv1_gate", "conv2_gate", "fc1_gate"]
    # conv1's gate reads relu1, not conv1 or bn1.
    gate = gated.get_layer("conv1_gate")
    assert gate.input is gated.get_layer("relu1").output
    assert "classifier_gate" not in [layer.name for layer in gated.layers]


def test_clone_computes_the_same_function_and_leaves_the_original():
    rng = np.random.default_rng(0)
    model = small_cnn()
    randomize_statistics(model, rng)
    before = [w.copy() for w in model.get_weights()]
    x = rng.normal(size=(4, 12, 12, 3)).astype("float32")
    gated = kv.add_gates(model, kl_weight=1e-4)
    assert_close(gated(x, training=False), model(x, training=False), rtol=1e-6)
    for gate in (layer for _, layer in gated_layers(gated)):
        np.testing.assert_array_equal(to_numpy(gate.mu), 1.0)  # open, mu = 1
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert not {id(v) for v in model.weights} & {id(v) for v in gated.weights}


def test_sequential_models_work():
    model = keras.Sequential(
        [
            keras.Input((10,)),
            L.Dense(12, activation="relu", name="a"),
            L.Dense(8, activation="tanh", name="b"),
            L.Dense(3, name="out"),
        ]
    )
    gated = kv.add_gates(model, gate_input=True)
    assert gate_names(gated) == ["input_gate", "a_gate", "b_gate"]
    x = np.random.default_rng(0).normal(size=(5, 10)).astype("float32")
    assert_close(gated(x, training=False), model(x))


@pytest.mark.parametrize(
    "layers, expected",
    [
        (["conv2"], ["conv2_gate"]),
        (L.Dense, ["fc1_gate"]),
        ((L.Conv2D,), ["conv1_gate", "conv2_gate"]),
        (lambda layer: layer.name.endswith("1"), ["conv1_gate", "fc1_gate"]),
    ],
    ids=["names", "class", "classes", "predicate"],
)
def test_which_layers_to_gate(layers, expected):
    assert gate_names(kv.add_gates(small_cnn(), layers=layers)) == expected


def test_kl_weight_per_layer_and_gate_options():
    gated = kv.add_gates(
        small_cnn(),
        kl_weight={"conv1": 1e-6, "fc1": 0.5},
        mu_initializer=keras.initializers.Constant(0.9),
        kl_spatial_scaling=False,
    )
    assert gated.get_layer("conv1_gate").kl_weight == 1e-6
    assert gated.get_layer("fc1_gate").kl_weight == 0.5
    assert gated.get_layer("conv2_gate").kl_weight == 1e-3  # not in the dict
    assert gated.get_layer("conv2_gate").positions == 1
    np.testing.assert_allclose(to_numpy(gated.get_layer("fc1_gate").mu), 0.9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layers": 42}, "layers=42"),
        ({"kl_weight": -1.0}, "kl_weight=-1.0"),
        ({"kl_weight": {"conv1": float("nan")}}, "kl_weight=nan"),
        ({"gate_input": "yes"}, "gate_input='yes'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kv.add_gates(small_cnn(), **kwargs)


def check_end_to_end(model, x, y, rng, tol=1e-5):
    """add_gates -> a short fit -> close half the gates -> the contract."""
    gated = kv.add_gates(model, kl_weight=1e-6)
    assert_close(gated(x, training=False), model(x, training=False), rtol=tol)
    gated.compile(
        keras.optimizers.SGD(1e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    gated.fit(x, y, batch_size=len(y), epochs=1, verbose=0)
    # A short fit on random data closes nothing: close half of every gate.
    gated, slim = check_contract(gated, x, rng, close=True, tol=tol)
    assert slim.count_params() < model.count_params()
    return gated, slim


APPLICATIONS = ["MobileNetV2", "ResNet50", "DenseNet121", "VGG16"]


@pytest.mark.slow
@pytest.mark.parametrize("name", APPLICATIONS)
def test_keras_applications_end_to_end(name):
    rng = np.random.default_rng(1)
    model = getattr(keras.applications, name)(
        input_shape=(32, 32, 3),
        weights=None,
        classes=10,
        classifier_activation=None,
    )
    randomize_statistics(model, rng)
    x = rng.normal(size=(8, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 8)
    gated, _ = check_end_to_end(model, x, y, rng)
    assert len(gated_layers(gated)) > 10


def test_two_input_functional_model():
    rng = np.random.default_rng(2)
    image = keras.Input((10, 10, 1), name="image")
    meta = keras.Input((5,), name="meta")
    a = L.Conv2D(6, 3, activation="relu", name="conv")(image)
    a = L.GlobalAveragePooling2D()(a)
    b = L.Dense(7, activation="relu", name="meta_fc")(meta)
    joined = L.Concatenate()([a, b])
    h = L.Dense(9, activation="relu", name="fc")(joined)
    model = keras.Model([image, meta], L.Dense(3, name="out")(h))
    randomize_statistics(model, rng)
    x = [
        rng.normal(size=(6, 10, 10, 1)).astype("float32"),
        rng.normal(size=(6, 5)).astype("float32"),
    ]
    y = rng.integers(0, 3, 6)
    gated, _ = check_end_to_end(model, x, y, rng)
    assert gate_names(gated) == ["conv_gate", "meta_fc_gate", "fc_gate"]


def test_add_tied_channels_get_one_gate():
    inputs = keras.Input((8, 8, 4))
    a = L.Conv2D(6, 3, padding="same", name="branch_a")(inputs)
    a = L.BatchNormalization(name="bn_a")(a)
    b = L.Conv2D(6, 1, name="branch_b")(inputs)
    b = L.BatchNormalization(name="bn_b")(b)
    x = L.ReLU(name="relu")(L.Add(name="add")([a, b]))
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    gated = kv.add_gates(model)
    # Both branches lead to the same gate, after the sum and its ReLU.
    assert gate_names(gated) == ["add_gate"]
    assert gated.get_layer("add_gate").input is gated.get_layer("relu").output
    report = kv.compression_report(gated)
    assert report.total_neurons == 6  # the tied channels count once
    rng = np.random.default_rng(3)
    x_in = rng.normal(size=(4, 8, 8, 4)).astype("float32")
    check_end_to_end(model, x_in, np.array([0, 1, 0, 1]), rng)


def squeeze_excite():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Dense(2, activation="relu", name="squeeze")(s)
    s = L.Dense(8, activation="sigmoid", name="excite")(s)
    x = L.Multiply(name="attention")([x, s])
    x = L.Conv2D(5, 3, activation="relu", name="conv_after")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(2, name="out")(x))


def test_squeeze_and_excitation_is_one_channel_group():
    # The feature map's gate also prunes the excitation units that scale it:
    # no gate of their own, no warning, and slimming cuts both.
    model = squeeze_excite()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        gated = kv.add_gates(model)
    names = gate_names(gated)
    assert names == ["conv_gate", "squeeze_gate", "conv_after_gate"]
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    gated, slim = check_end_to_end(model, x, np.array([0, 1, 1, 0]), rng)
    kept = int(gated.get_layer("conv_gate").num_kept())
    assert slim.get_layer("conv").filters == kept < 8
    assert slim.get_layer("excite").units == kept


def test_recurrent_consumer_is_left_ungated_with_a_warning():
    inputs = keras.Input((6, 4))
    x = L.Dense(5, activation="relu", name="proj")(inputs)
    x = L.LSTM(3, name="lstm")(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    with pytest.warns(UserWarning, match="'proj'.*'lstm' of class LSTM") as record:
        gated = kv.add_gates(model)
    # One warning of ours, on one line (the backend may add its own).
    ours = [w for w in record if "of class LSTM" in str(w.message)]
    assert len(ours) == 1 and "\n" not in str(ours[0].message)
    assert gate_names(gated) == []
    kv.slim_model(gated)  # nothing to cut, and no refusal


def test_a_shared_layer_stays_shared():
    inputs = keras.Input((6,))
    shared = L.Dense(5, activation="relu", name="shared")
    a, b = shared(inputs), shared(inputs * 2.0)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Concatenate()([a, b])))
    gated = kv.add_gates(model)
    clone = gated.get_layer("shared")
    assert len(clone._inbound_nodes) == 2  # one layer, called twice
    x = np.random.default_rng(5).normal(size=(3, 6)).astype("float32")
    assert_close(gated(x, training=False), model(x))


def _application(name, size):
    rng = np.random.default_rng(7)
    model = getattr(keras.applications, name)(
        input_shape=(size, size, 3), weights=None, classes=10
    )
    assert "logits_gate" not in [
        layer.name for layer in kv.add_gates(model).layers
    ]  # not even behind the softmax: the classifier's outputs stay whole
    randomize_statistics(model, rng)
    for v in model.weights:
        if "layer_scale" in v.path:  # ConvNeXt's start at 1e-6
            v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    return model, x, rng


@pytest.mark.slow
# Squeeze-and-excitation: the excitation rides on the feature map's gate.
@pytest.mark.parametrize(
    "name", ["EfficientNetB0", "EfficientNetV2B0", "MobileNetV3Small"]
)
def test_squeeze_and_excitation_applications(name, tmp_path):
    model, x, rng = _application(name, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing left ungated
        gated, slim = check_contract(model, x, rng, tmp_path=tmp_path, kl_weight=1e-5)
    assert slim.count_params() <= 0.6 * model.count_params()


# The other families of benchmarks/coverage.py (large: run by .ci/run after
# the default tests).
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, size, share",
    [
        ("ConvNeXtTiny", 32, 0.8),
        ("Xception", 71, 0.6),
        ("NASNetMobile", 32, 0.6),
        ("InceptionV3", 75, 0.6),
        ("InceptionResNetV2", 75, 0.6),
    ],
)
def test_more_applications(name, size, share):
    model, x, rng = _application(name, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ConvNeXt's stream
        gated, slim = check_contract(model, x, rng, kl_weight=1e-5)
    assert slim.count_params() <= share * model.count_params()
