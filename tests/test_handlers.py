"""Tests of the layer-handler registry: each layer kind end to end.

Every model goes through `contract.check_contract`: the gated clone equals
the original with the gates open; with about half of every gate closed (mu
of both signs) the slim model equals the gated one to 1e-5, has the
parameters, kernel entries and FLOPs the report predicts (the FLOPs also
counted from its TensorFlow graph), and reloads from `.keras`.
"""

import warnings

import keras
import numpy as np
import pytest
from contract import check_contract
from helpers import OpaqueScale, random_gates, randomize_statistics, set_gates

import keras_vib as kv
from keras_vib.report import gated_layers

L = keras.layers


def gate_names(model):
    return [name for name, _ in gated_layers(model)]


def data(model, rng, n=3):
    return rng.normal(size=(n,) + tuple(model.inputs[0].shape[1:])).astype("float32")


def run(model, tmp_path, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    randomize_statistics(model, rng)
    return check_contract(model, data(model, rng), rng, tmp_path=tmp_path, **kwargs)


# --------------------------------------------------------------------------
# Kernel layers


def test_separable_conv2d(tmp_path):
    inputs = keras.Input((10, 10, 3))
    x = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="sep1")(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.SeparableConv2D(6, 3, activation="relu", name="sep2")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3, name="out")(x))
    gated, slim = run(model, tmp_path)
    assert gate_names(gated) == ["sep1_gate", "sep2_gate"]
    k1 = gated.get_layer("sep1_gate").num_kept()
    assert slim.get_layer("sep1").filters == k1 < 8
    # The second conv reads only the kept channels, per depthwise multiplier.
    assert slim.get_layer("sep2").depthwise_kernel.shape[-2] == k1


def test_separable_conv1d(tmp_path):
    inputs = keras.Input((12, 4))
    x = L.SeparableConv1D(8, 3, activation="relu", name="sep")(inputs)
    x = L.Conv1D(5, 3, activation="relu", name="conv")(x)
    x = L.GlobalMaxPooling1D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    gated, slim = run(model, tmp_path, seed=1)
    assert gate_names(gated) == ["sep_gate", "conv_gate"]
    assert slim.get_layer("sep").filters < 8


def test_conv2d_transpose(tmp_path):
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = L.Conv2DTranspose(6, 3, strides=2, padding="same", name="up")(x)
    x = L.ReLU()(x)
    x = L.Conv2DTranspose(4, 2, activation="relu", name="up2")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    gated, slim = run(model, tmp_path, seed=2)
    assert gate_names(gated) == ["conv_gate", "up_gate", "up2_gate"]
    up = slim.get_layer("up")
    k_conv = gated.get_layer("conv_gate").num_kept()
    k_up = gated.get_layer("up_gate").num_kept()
    assert up.kernel.shape[-2:] == (k_up, k_conv)  # (filters, input channels)


def test_conv1d(tmp_path):
    inputs = keras.Input((16, 3))
    x = L.Conv1D(8, 3, padding="causal", activation="relu", name="c1")(inputs)
    x = L.Conv1D(6, 3, activation="tanh", name="c2")(x)
    x = L.Flatten()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    gated, slim = run(model, tmp_path, seed=3)
    assert gate_names(gated) == ["c1_gate", "c2_gate"]
    assert slim.get_layer("c2").filters == gated.get_layer("c2_gate").num_kept()


def test_conv3d(tmp_path):
    inputs = keras.Input((5, 6, 6, 2))
    x = L.Conv3D(6, 3, padding="same", name="c1")(inputs)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.MaxPooling3D()(x)
    x = L.Conv3D(4, 2, activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling3D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    gated, slim = run(model, tmp_path, seed=15)
    assert gate_names(gated) == ["c1_gate", "c2_gate"]
    assert slim.get_layer("c2").filters == gated.get_layer("c2_gate").num_kept() > 0
    assert slim.get_layer("c1").filters == gated.get_layer("c1_gate").num_kept()


def test_depthwise_grouped_conv_is_per_channel(tmp_path):
    # ConvNeXt's depthwise conv is a Conv2D with groups == channels.
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 1, activation="relu", name="expand")(inputs)
    x = L.Conv2D(8, 3, padding="same", groups=8, name="dw")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(4, 1, name="project")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    gated, slim = run(model, tmp_path, seed=5)
    assert "dw_gate" not in gate_names(gated)
    kept = gated.get_layer("expand_gate").num_kept()
    assert slim.get_layer("dw").groups == slim.get_layer("dw").filters == kept


def test_grouped_conv_of_two_groups_is_opaque(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 1, name="expand")(inputs)
    x = L.Conv2D(8, 3, padding="same", groups=2, name="g")(x)
    x = L.Conv2D(4, 1, activation="relu", name="project")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    with pytest.warns(UserWarning, match="'expand'.*'g' of class Conv2D"):
        gated, slim = run(model, tmp_path, seed=17)
    # The channels the groups read stay whole: no gate before the conv.
    assert gate_names(gated) == ["project_gate"]
    assert slim.get_layer("g").kernel.shape == (3, 3, 3, 8)


# --------------------------------------------------------------------------
# Batch norms without scale or center


@pytest.mark.parametrize(
    "scale, center", [(False, True), (True, False), (False, False)]
)
def test_batch_norm_without_scale_or_center(tmp_path, scale, center):
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = L.BatchNormalization(scale=scale, center=center, name="bn")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(4, 3, name="conv2")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    gated, slim = run(model, tmp_path, seed=6)
    kept = gated.get_layer("conv_gate").num_kept()
    bn = slim.get_layer("bn")
    assert bn.moving_mean.shape == (kept,)
    # The gate's scale folds forward into conv2: the batch norm keeps its form.
    assert (bn.gamma is not None) == scale and (bn.beta is not None) == center


# --------------------------------------------------------------------------
# Raw keras.ops in a functional graph


def test_elementwise_ops_pass_channels(tmp_path):
    inputs = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="a")(inputs)
    a = keras.ops.tanh(a) * 2.0  # an activation as ops, times a constant
    b = L.Conv2D(8, 1, name="b")(inputs)
    b = L.ReLU(6.0)(b + 3.0) * (1.0 / 6.0)  # MobileNetV3's hard sigmoid
    x = a + b  # two tensors: one channel group, one gate after the sum
    x = L.Conv2D(4, 3, name="c")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    gated, slim = run(model, tmp_path, seed=7)
    names = gate_names(gated)
    assert len(names) == 2 and names[1] == "c_gate"
    assert names[0].startswith("add")  # after the sum, for both branches
    assert slim.get_layer("a").filters < 8


def test_unknown_op_is_refused_by_name():
    inputs = keras.Input((6,))
    h = kv.VIBDense(8, activation="relu", name="fc")(inputs)
    h = keras.ops.cumsum(h, axis=-1)  # mixes channels: cannot be cut
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    random_gates(model, np.random.default_rng(8))
    with pytest.raises(ValueError, match=r"keras.ops call 'cumsum.*\(Cumsum\)"):
        kv.slim_model(model)
    report = kv.compression_report(model)  # counts, never an AttributeError
    assert report.kept_params > 0
    with pytest.warns(UserWarning, match="keras.ops call 'cumsum"):
        kv.add_gates(keras.Model(inputs, L.Dense(2)(keras.ops.cumsum(
            L.Dense(8, name="plain")(inputs), axis=-1))))  # fmt: skip


def test_per_channel_constant_is_not_cut():
    inputs = keras.Input((4,))
    h = kv.VIBDense(3, name="fc")(inputs)
    h = h * np.array([1.0, 2.0, 3.0], "float32")  # would need slicing
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    set_gates(model.get_layer("fc").gate, np.ones(3), [-9.0, 6.0, -9.0])
    with pytest.raises(ValueError, match="keras.ops call 'multiply"):
        kv.slim_model(model)


# --------------------------------------------------------------------------
# Nested models


def _base():
    inner = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(8, 3, padding="same", name="inner_conv"),
            L.BatchNormalization(name="inner_bn"),
            L.ReLU(name="inner_relu"),
        ],
        name="inner",
    )
    inputs = keras.Input((8, 8, 3))
    x = inner(inputs)
    x = L.Conv2D(6, 3, activation="relu", name="base_conv")(x)
    return keras.Model(inputs, x, name="base")


def test_nested_models_at_depth_two(tmp_path):
    base = _base()  # a functional model holding a Sequential one
    inputs = keras.Input((8, 8, 3))
    x = L.Rescaling(1 / 255.0)(inputs)
    x = base(x, training=False)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(10, activation="relu", name="head")(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    gated, slim = run(model, tmp_path, seed=10)
    # Gates go inside what were the nested models; the results are flat.
    assert gate_names(gated) == ["inner_conv_gate", "base_conv_gate", "head_gate"]
    assert not any(isinstance(layer, keras.Model) for layer in slim.layers)
    assert slim.get_layer("inner_conv").filters < 8


def test_sequential_holding_a_functional_base(tmp_path):
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), _base(), L.Flatten(), L.Dense(2, name="out")]
    )
    gated, slim = run(model, tmp_path, seed=11)
    assert gate_names(gated) == ["inner_conv_gate", "base_conv_gate"]


def test_subclassed_model_refused_with_advice():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="Net.*functional API"):
        kv.add_gates(Net())


# --------------------------------------------------------------------------
# Layer normalisation: the normalised stream stays whole


def test_transformer_feed_forward_hidden_units_are_gated(tmp_path):
    inputs = keras.Input((5, 8))
    x = L.LayerNormalization(name="ln")(inputs)
    h = L.Dense(16, activation="gelu", name="expand")(x)
    h = L.Dense(8, name="project")(h)
    x = L.Add(name="residual")([inputs, h])
    x = L.LayerNormalization(name="ln_out")(x)
    x = L.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    with pytest.warns(UserWarning) as record:
        gated, slim = run(model, tmp_path, seed=12)
    (warning,) = [w for w in record if w.category is UserWarning]
    message = str(warning.message)
    assert "\n" not in message and "'project'" in message
    assert "LayerNormalization" in message
    assert gate_names(gated) == ["expand_gate"]
    kept = gated.get_layer("expand_gate").num_kept()
    assert slim.get_layer("expand").units == kept < 16
    assert slim.get_layer("project").kernel.shape == (kept, 8)


# --------------------------------------------------------------------------
# A user's own layer through the public registry


def _custom_model():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = OpaqueScale(name="scale")(x)
    x = L.Conv2D(4, 3, name="conv2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(2, name="out")(x))


def test_register_layer_gates_and_slims_a_custom_layer(tmp_path):
    with pytest.warns(UserWarning, match="'scale' of class OpaqueScale"):
        kv.add_gates(_custom_model())
    kv.register_layer(OpaqueScale, kv.handlers.Channelwise(follower=True))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            gated, slim = run(_custom_model(), tmp_path, seed=13)
        # The gate moved after the per-channel scale, which is sliced.
        assert gated.get_layer("conv_gate").input is gated.get_layer("scale").output
        kept = gated.get_layer("conv_gate").num_kept()
        assert slim.get_layer("scale").w.shape == (kept,)
    finally:
        kv.unregister_layer(OpaqueScale)


def test_register_layer_bad_arguments():
    with pytest.raises(ValueError, match="layer_class='Dense'"):
        kv.register_layer("Dense", kv.handlers.Channelwise())
    with pytest.raises(ValueError, match="handler=42"):
        kv.register_layer(OpaqueScale, 42)


def test_unregistered_custom_layer_is_refused_by_name():
    inputs = keras.Input((6,))
    h = kv.VIBDense(8, activation="relu", name="fc")(inputs)
    h = OpaqueScale(name="scale")(h)
    gated = keras.Model(inputs, L.Dense(2)(h))
    random_gates(gated, np.random.default_rng(14))
    with pytest.raises(ValueError, match="'scale' of class OpaqueScale.*register"):
        kv.slim_model(gated)


def test_subclass_with_its_own_call_does_not_inherit_a_handler():
    class Doubling(L.Dense):
        def call(self, inputs):
            return super().call(inputs) * 2.0

    class Named(L.Dense):
        pass

    assert kv.handlers.handler_for(Named(3)) is kv.handlers.handler_for(L.Dense(3))
    assert not kv.handlers.is_registered(Doubling(3))


# --------------------------------------------------------------------------
# tf_keras twins (for quantization-aware training)


def test_twins_of_the_new_kernel_kinds(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = L.SeparableConv2D(6, 3, padding="same", activation="relu", name="sep")(inputs)
    x = L.Conv2DTranspose(4, 2, strides=2, activation="relu", name="up")(x)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    rng = np.random.default_rng(16)
    _, slim = run(model, tmp_path, seed=16)
    twin = kv.export.to_tf_keras(slim)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        twin(x).numpy(), keras.ops.convert_to_numpy(slim(x)), rtol=1e-5, atol=1e-5
    )


def test_twin_of_a_raw_op_is_refused_by_name():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, L.Dense(2)(keras.ops.tanh(inputs) * 2.0))
    with pytest.raises(ValueError, match="'tanh'"):
        kv.export.to_tf_keras(model)
