"""The tf_keras twin of a slim model and quantization-aware training."""

import keras
import numpy as np
import pytest
from helpers import builtin_ops

import keras_vib as kv
from keras_vib import export

pytestmark = pytest.mark.tensorflow
BUILTIN_OPS = builtin_ops()


@pytest.mark.slow
def test_twin_and_quantization_aware_training(trained_lenet5, mnist):
    (x_train, y_train), test = mnist
    slim = kv.slim_model(trained_lenet5)
    twin = export.to_tf_keras(slim)
    assert type(twin).__module__.startswith("tf_keras")
    x = test[0][:64]
    np.testing.assert_allclose(
        twin(x).numpy(), keras.ops.convert_to_numpy(slim(x)), rtol=1e-5, atol=1e-5
    )
    float_acc = export.evaluate_tflite(export.to_tflite(slim), test)

    qat = export.quantization_aware(slim)
    qat.compile(
        "adam",
        __import__("tf_keras").losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    qat.fit(x_train, y_train, batch_size=128, epochs=1, verbose=0)  # all 60,000
    int8 = export.to_tflite(qat, "int8", representative_data=x_train[:500])
    assert set(export.tflite_ops(int8)) <= BUILTIN_OPS
    int8_acc = export.evaluate_tflite(int8, test)
    assert int8_acc >= float_acc - 0.005, (float_acc, int8_acc)


def test_twin_and_quantization_aware_training_with_an_input_gate():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            kv.VIBGate(name="input_gate"),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    gate = model.get_layer("input_gate")
    gate.log_sigma2.assign(np.array([-9, 6, -9, 6, -9, 6], "float32"))
    slim = kv.slim_model(model)  # starts with SelectFeatures([0, 2, 4])
    x = np.random.default_rng(0).normal(size=(256, 6)).astype("float32")
    twin = export.to_tf_keras(slim)
    assert twin.input_shape == (None, 6)
    assert [type(layer).__name__ for layer in twin.layers][1] == "SelectFeatures"
    np.testing.assert_allclose(
        twin(x).numpy(), keras.ops.convert_to_numpy(slim(x)), rtol=1e-5, atol=1e-6
    )
    # tfmot wraps the twin (the selection stays in float) and the int8 file
    # gathers the kept features: GATHER among the builtin ops.
    qat = export.quantization_aware(slim)
    qat.compile("adam", "mse")
    qat.fit(x, keras.ops.convert_to_numpy(slim(x)), epochs=1, verbose=0)
    int8 = export.to_tflite(qat, "int8", representative_data=x)
    ops = export.tflite_ops(int8)
    assert "GATHER" in ops and set(ops) <= BUILTIN_OPS
    out = export.run_tflite(int8, x)
    expected = qat(x).numpy()
    assert out.shape == (256, 2)
    scale = np.abs(expected).max()
    assert np.abs(out - expected).max() <= 0.05 * scale, (out[:3], expected[:3])


def test_the_batch_norms_left_to_tfmots_fold():
    """A BatchNormalization right after a Conv2D or DepthwiseConv2D without
    activation is tfmot's to fold (quantized as one); after anything else
    (an activation, a Conv2DTranspose, another layer) it stays in float."""
    import tf_keras

    from keras_vib.deploy import twin

    layers = tf_keras.layers
    x = inputs = tf_keras.Input((12, 12, 3))
    x = layers.Conv2D(4, 3, name="conv")(x)
    x = layers.BatchNormalization(name="after_conv")(x)
    x = layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = layers.BatchNormalization(name="after_depthwise")(x)
    x = layers.Conv2D(4, 3, activation="relu", name="conv_relu")(x)
    x = layers.BatchNormalization(name="after_conv_relu")(x)
    x = layers.Conv2DTranspose(4, 3, name="transpose")(x)
    x = layers.BatchNormalization(name="after_transpose")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.BatchNormalization(name="after_relu")(x)
    model = tf_keras.Model(inputs, x)
    assert twin._bn_after_linear_conv(model) == {"after_conv", "after_depthwise"}
