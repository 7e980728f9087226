import math

import keras
import numpy as np
import pytest

import keras_vib as kv
from keras_vib import datasets, models
from keras_vib.report import gated_layers

VIB_LAYERS = (kv.VIBGate, kv.VIBDense, kv.VIBConv2D)


def vgg16_kernel_weights(width=1.0, num_classes=10, in_channels=3):
    """Kernel entries of the modified VGG16, counted from VGG16_CONFIG."""
    total, channels = 0, in_channels
    for item in models.VGG16_CONFIG:
        if item == "M":
            continue
        filters = max(1, round(item[0] * width))
        total += 9 * channels * filters
        channels = filters
    for units in (512, 512):
        units = max(1, round(units * width))
        total += channels * units
        channels = units
    return total + channels * num_classes


def has_vib_layers(model):
    return any(isinstance(layer, VIB_LAYERS) for layer in model.layers)


def test_lenet_300_100():
    model = models.lenet_300_100()
    report = kv.compression_report(model)
    assert report.total_weights == 266_200
    assert report.total_neurons == 784 + 300 + 100 == 1184
    assert report.structure == "784-300-100"
    assert [name for name, _ in gated_layers(model)] == ["input_gate", "fc1", "fc2"]
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    assert all(layer.kl_weight == 2e-4 for _, layer in gated_layers(model))


def test_lenet_300_100_without_input_gate():
    model = models.lenet_300_100(input_gate=False, kl_weight=1e-3, num_classes=7)
    report = kv.compression_report(model)
    assert report.total_neurons == 400
    assert report.structure == "300-100"
    assert model.output_shape == (None, 7)
    assert model.get_layer("fc1").kl_weight == 1e-3


def test_lenet5_caffe():
    model = models.lenet5_caffe()
    report = kv.compression_report(model)
    assert report.total_weights == 430_500
    assert report.total_neurons == 20 + 50 + 500
    assert report.structure == "20-50-500"
    assert model.output_shape == (None, 10)
    conv1 = model.get_layer("conv1")
    assert isinstance(conv1, kv.VIBConv2D) and conv1.conv.padding == "valid"
    assert conv1.conv.kernel_size == (5, 5) and conv1.bn is None
    assert isinstance(model.get_layer("pool2"), keras.layers.MaxPooling2D)
    assert model.get_layer("flatten").output.shape == (None, 800)


def test_lenet5_caffe_kl_multipliers():
    kl = 2e-5
    model = models.lenet5_caffe(kl_weight=kl)
    weights = [layer.kl_weight for _, layer in gated_layers(model)]
    assert weights == pytest.approx([kl * m for m in models.LENET5_KL_MULTIPLIERS])
    # fc1 holds most weights: it gets the strongest KL weight per unit.
    assert weights[2] > weights[1] > 0
    model = models.lenet5_caffe(kl_weight=1e-4, kl_multipliers=(0, 1, 2))
    weights = [layer.kl_weight for _, layer in gated_layers(model)]
    assert weights == pytest.approx([0.0, 1e-4, 2e-4])


def test_vgg16_full_width():
    model = models.vgg16()
    report = kv.compression_report(model)
    assert report.total_weights == vgg16_kernel_weights() == 15_239_872
    assert report.total_neurons == 2 * 64 + 2 * 128 + 3 * 256 + 6 * 512 + 2 * 512
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)
    convs = [layer for layer in model.layers if isinstance(layer, kv.VIBConv2D)]
    assert len(convs) == 13
    assert all(c.batch_norm and c.conv.padding == "same" for c in convs)
    assert all(c.conv.kernel_size == (3, 3) for c in convs)
    pools = [
        layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)
    ]
    assert len(pools) == 5
    assert model.get_layer("flatten").output.shape == (None, 512)


def test_vgg16_kl_multipliers_shrink_toward_the_input():
    kl = 2e-5
    model = models.vgg16(kl_weight=kl, width=0.25)
    weights = [layer.kl_weight for _, layer in gated_layers(model)]
    assert len(weights) == 15
    assert weights == pytest.approx([kl * m for m in models.vgg16_kl_multipliers()])
    assert all(a <= b for a, b in zip(weights, weights[1:]))  # input first
    assert weights[0] == pytest.approx(kl / 32)
    assert weights[12] == pytest.approx(kl / 2)  # block5_conv3
    assert model.get_layer("block1_conv2").kl_weight == pytest.approx(kl / 32)
    assert model.get_layer("block2_conv1").kl_weight == pytest.approx(kl / 16)
    assert model.get_layer("block3_conv3").kl_weight == pytest.approx(kl / 8)
    assert model.get_layer("block4_conv1").kl_weight == pytest.approx(kl / 4)
    assert model.get_layer("fc2").kl_weight == pytest.approx(kl)


def test_vgg16_custom_multipliers_width_and_classes():
    multipliers = [1.0] * 13 + [0.5, 0.25]
    model = models.vgg16(
        num_classes=100, kl_weight=1e-4, width=0.125, kl_multipliers=multipliers
    )
    assert model.output_shape == (None, 100)
    weights = [layer.kl_weight for _, layer in gated_layers(model)]
    assert weights == pytest.approx([1e-4 * m for m in multipliers])
    report = kv.compression_report(model)
    assert report.total_weights == vgg16_kernel_weights(0.125, 100)
    assert report.structure.split("-")[:3] == ["8", "8", "16"]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("lenet300", {}),
        ("lenet5", {}),
        ("vgg16", {"width": 0.0625}),
        ("vgg16", {"width": 0.0625, "num_classes": 100}),
    ],
)
def test_baseline_is_stock_keras_with_the_same_shapes(name, kwargs):
    vib = models.get_model(name, vib=True, **kwargs)
    plain = models.get_model(name, vib=False, **kwargs)
    assert has_vib_layers(vib)
    assert not has_vib_layers(plain)
    assert all(type(layer).__module__.startswith("keras.") for layer in plain.layers), [
        type(layer) for layer in plain.layers
    ]
    assert plain.input_shape == vib.input_shape
    assert plain.output_shape == vib.output_shape
    assert plain.name.endswith("_baseline") and not vib.name.endswith("_baseline")
    # The same kernels: the baseline is the uncompressed reference.
    assert (
        kv.compression_report(plain).total_weights
        == kv.compression_report(vib).total_weights
    )
    x = np.random.default_rng(0).uniform(size=(2,) + vib.input_shape[1:])
    assert plain(x.astype("float32")).shape == vib(x.astype("float32")).shape
    # The layer names are shared where a layer exists in both.
    vib_names = {layer.name for layer in vib.layers}
    shared = vib_names & {layer.name for layer in plain.layers}
    assert shared >= {"flatten", "classifier"}
    assert shared == vib_names - {"input_gate"}


def test_baseline_vgg16_has_bn_and_relu_per_conv():
    plain = models.vgg16(vib=False, width=0.0625)
    kinds = [type(layer).__name__ for layer in plain.layers]
    assert kinds.count("Conv2D") == kinds.count("BatchNormalization") == 13
    assert kinds.count("ReLU") == 13
    # Each conv is followed by its batch norm, then its ReLU.
    for i, layer in enumerate(plain.layers):
        if isinstance(layer, keras.layers.Conv2D):
            after = [type(x).__name__ for x in plain.layers[i + 1 : i + 3]]
            assert after == ["BatchNormalization", "ReLU"], layer.name


def test_vgg16_trains_on_synthetic_cifar():
    model = models.vgg16(width=0.0625, kl_weight=1e-4)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,  # tracing the train step would take longer
    )
    ds = datasets.synthetic("cifar10", "train", num_examples=32, batch_size=16)
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert math.isfinite(history.history["loss"][0])
    # One KL term per gate. Read after a call of the model's own: JAX's
    # fit runs stateless and leaves `model.losses` empty.
    x, _ = next(iter(ds))
    model(keras.ops.convert_to_tensor(np.asarray(x)), training=True)
    assert len(model.losses) == 15


def test_zoo_model_round_trips_through_keras_file(tmp_path):
    model = models.lenet5_caffe()
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    path = tmp_path / "lenet5.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-6)


def test_get_model_builds_each_model():
    assert set(models.MODELS) == {"lenet300", "lenet5", "vgg16", "vit"}
    assert models.get_model("lenet300").name == "lenet_300_100"
    assert models.get_model("lenet5", vib=False).name == "lenet5_caffe_baseline"
    assert models.get_model("vgg16", width=0.0625, name="tiny").name == "tiny"


@pytest.mark.parametrize("name", ["resnet50", "LeNet300", "", None, 3])
def test_get_model_unknown_name(name):
    with pytest.raises(ValueError, match="lenet300.*lenet5.*vgg16") as info:
        models.get_model(name)
    assert repr(name) in str(info.value)


def test_get_model_unknown_argument():
    with pytest.raises(ValueError, match="width") as info:
        models.get_model("lenet300", width=0.5)
    assert "kl_weight" in str(info.value)  # lists the accepted arguments


BAD_ARGUMENTS = [
    (lambda: models.lenet_300_100(num_classes=0), "num_classes=0"),
    (lambda: models.lenet5_caffe(num_classes=-1), "num_classes=-1"),
    (lambda: models.vgg16(num_classes=2.5), "num_classes=2.5"),
    (lambda: models.lenet_300_100(kl_weight=-1.0), "kl_weight=-1.0"),
    (lambda: models.vgg16(kl_weight=float("nan")), "kl_weight=nan"),
    (lambda: models.lenet_300_100(vib="yes"), "vib='yes'"),
    (lambda: models.lenet_300_100(input_gate=None), "input_gate=None"),
    (lambda: models.lenet_300_100(input_shape=(28, 0)), r"input_shape=\(28, 0\)"),
    (lambda: models.lenet5_caffe(input_shape=(28, 28)), r"input_shape=\(28, 28\)"),
    (lambda: models.lenet5_caffe(input_shape=(12, 12, 1)), "at least 16x16"),
    (lambda: models.vgg16(input_shape=(28, 28, 3)), "at least 32x32"),
    (lambda: models.vgg16(width=0), "width=0"),
    (lambda: models.vgg16(width=-0.5), "width=-0.5"),
    (lambda: models.vgg16(kl_multipliers=[1.0] * 13), "kl_multipliers="),
    (lambda: models.vgg16(kl_multipliers=[1.0] * 14 + [-1]), "kl_multipliers="),
    (lambda: models.lenet5_caffe(kl_multipliers=(1, 2)), r"conv1, conv2, fc1"),
    (lambda: models.lenet5_caffe(kl_multipliers=5), "kl_multipliers=5"),
]


@pytest.mark.parametrize(
    "build, match", BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS]
)
def test_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_vit_gates_heads_and_mlp_units_and_slims():
    gated = models.vit(vib=True, depth=2, width=32, mlp_units=48)
    names = [name for name, _ in kv.gates.gates(gated)]
    assert names == [
        "block0_attention",
        "block0_mlp1_gate",
        "block1_attention",
        "block1_mlp1_gate",
    ]
    plain = models.vit(vib=False, depth=2, width=32, mlp_units=48)
    assert plain.name == "vit_baseline" and not kv.gates.gates(plain)
    assert plain.count_params() == gated.count_params() - sum(
        g.count_params() for _, g in kv.gates.gates(gated)
    )
    for _, gate in kv.gates.gates(gated):
        gate.set_kept(np.arange(gate.units) % 2 == 0)
    x = np.random.default_rng(0).random((2, 28, 28, 1), "float32")
    slim = kv.slim_model(gated)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(slim(x)),
        keras.ops.convert_to_numpy(gated(x, training=False)),
        atol=1e-5,
    )
    assert slim.get_layer("block0_attention").num_heads == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patch_size=5), "multiples of `patch_size`"),
        (dict(width=30), "multiple of `num_heads`"),
        (dict(depth=0), "depth"),
    ],
)
def test_vit_refuses_bad_shapes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.vit(**kwargs)


def test_vit_slims_with_every_unit_of_a_block_closed():
    """A block whose heads and MLP units all close (what VIBBudget does at
    10 % of the FLOPs): the MLP's second layer still reads the normalised
    stream whole (a LayerNormalization gives all its channels or none)."""
    gated = models.vit(vib=True, depth=2, width=32, mlp_units=48)
    for name, gate in kv.gates.gates(gated):
        mask = np.zeros(gate.units, bool)
        if name.startswith("block1"):
            mask[:2] = True
        gate.set_kept(mask)
    slim = kv.slim_model(gated)
    x = np.random.default_rng(1).random((2, 28, 28, 1), "float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(slim(x)),
        keras.ops.convert_to_numpy(gated(x, training=False)),
        atol=1e-5,
    )
    assert slim.count_params() == kv.compression_report(gated).kept_params
