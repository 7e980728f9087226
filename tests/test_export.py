import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import random_gates
from tensorflow.lite.python.schema_py_generated import BuiltinOperator

import keras_vib as kv
from keras_vib import export

BUILTIN_OPS = {name for name in dir(BuiltinOperator) if name.isupper()}


def lenet5(vib=True):
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


@pytest.fixture(scope="module")
def random_lenet5():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = lenet5()
    random_gates(model, rng)  # mu of both signs: the slim model needs scales
    x = rng.random((32, 28, 28, 1)).astype("float32")
    return model, x


@pytest.fixture(scope="module")
def mnist():
    import tensorflow_datasets as tfds

    def arrays(split):
        x, y = tfds.as_numpy(
            tfds.load("mnist", split=split, batch_size=-1, as_supervised=True)
        )
        return x.astype("float32") / 255.0, y

    return arrays("train"), arrays("test[:2000]")


@pytest.fixture(scope="module")
def trained_lenet5(mnist):
    """A gated LeNet-5 trained for one short epoch on 12,000 MNIST digits."""
    keras.utils.set_random_seed(0)
    (x, y), _ = mnist
    x, y = x[:12000], y[:12000]
    model = lenet5()
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return model


@pytest.mark.parametrize("quantization", export.QUANTIZATIONS)
def test_builtin_ops_only(random_lenet5, quantization):
    model, x = random_lenet5
    tflite = export.to_tflite(model, quantization, representative_data=x)
    ops = export.tflite_ops(tflite)
    assert "CONV_2D" in ops and "FULLY_CONNECTED" in ops
    assert set(ops) <= BUILTIN_OPS, set(ops) - BUILTIN_OPS
    assert export.run_tflite(tflite, x).shape == (32, 10)


def test_int8_io_model_has_int8_inputs_and_outputs(random_lenet5):
    from ai_edge_litert.interpreter import Interpreter

    model, x = random_lenet5
    tflite = export.to_tflite(model, "int8", representative_data=x, int8_io=True)
    interpreter = Interpreter(model_content=tflite)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert set(export.tflite_ops(tflite)) <= BUILTIN_OPS


def test_float_tflite_matches_slim_keras_model(random_lenet5):
    model, x = random_lenet5
    slim = kv.slim_model(model)
    tflite = export.to_tflite(model)
    ref = keras.ops.convert_to_numpy(slim(x))
    out = export.run_tflite(tflite, x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # The file holds the slim model, not the gated one.
    plain = export.to_tflite(lenet5(vib=False))
    assert len(tflite) < len(plain)


@pytest.mark.slow
def test_int8_keeps_accuracy_on_mnist(trained_lenet5, mnist):
    (x_train, _), test = mnist
    float_acc = export.evaluate_tflite(export.to_tflite(trained_lenet5), test)
    int8 = export.to_tflite(trained_lenet5, "int8", representative_data=x_train[:500])
    int8_acc = export.evaluate_tflite(int8, test)
    assert float_acc > 0.95
    assert abs(float_acc - int8_acc) <= 0.005, (float_acc, int8_acc)


def test_evaluate_tflite_agrees_with_run_tflite(random_lenet5):
    model, x = random_lenet5
    tflite = export.to_tflite(model)
    y = np.arange(len(x)) % 10
    expected = np.mean(np.argmax(export.run_tflite(tflite, x), -1) == y)
    assert export.evaluate_tflite(tflite, (x, y), batch_size=7) == expected
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    assert export.evaluate_tflite(tflite, dataset) == expected


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


def test_benchmark_tflite(random_lenet5):
    model, _ = random_lenet5
    tflite = export.to_tflite(model)
    result = export.benchmark_tflite(tflite, runs=20, warmup=2)
    assert result["size_bytes"] == len(tflite)
    assert 0 < result["gzip_bytes"]
    assert 0 < result["median_ms"] <= result["p90_ms"]
    with pytest.raises(ValueError, match="runs=0"):
        export.benchmark_tflite(tflite, runs=0)
    # Other kernels: only the default one hands the graph to XNNPACK.
    for kernels in export.KERNELS:
        interpreter = export._interpreter(tflite, 1, kernels)
        interpreter.allocate_tensors()
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        assert ("DELEGATE" in ops) == (kernels == "default"), (kernels, ops)
        result = export.benchmark_tflite(tflite, runs=3, warmup=1, kernels=kernels)
        assert 0 < result["median_ms"] <= result["p90_ms"]
    with pytest.raises(ValueError, match="kernels='xnnpack'"):
        export.benchmark_tflite(tflite, kernels="xnnpack")


def test_path_is_written(random_lenet5, tmp_path):
    model, _ = random_lenet5
    path = tmp_path / "model.tflite"
    content = export.to_tflite(model, path=path)
    assert path.read_bytes() == content
    assert os.listdir(tmp_path) == ["model.tflite"]  # no temporary left


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"quantization": "int8"}, "representative_data=None"),
        ({"quantization": "int4"}, r"\[None, 'float16', 'dynamic', 'int8'\].*'int4'"),
        (
            {
                "quantization": "int8",
                "representative_data": np.zeros((0, 28, 28, 1), "float32"),
            },
            "no example",
        ),
        (
            {
                "quantization": "int8",
                "representative_data": tf.data.Dataset.from_tensor_slices(
                    np.zeros((0, 28, 28, 1), "float32")
                ).batch(4),
            },
            "no example",
        ),
    ],
)
def test_bad_arguments_leave_path_untouched(random_lenet5, tmp_path, kwargs, match):
    model, _ = random_lenet5
    existing = tmp_path / "existing.tflite"
    existing.write_bytes(b"old content")
    fresh = tmp_path / "fresh.tflite"
    for path in (existing, fresh):
        with pytest.raises(ValueError, match=match):
            export.to_tflite(model, path=path, **kwargs)
    assert existing.read_bytes() == b"old content"
    assert not fresh.exists()
    assert sorted(os.listdir(tmp_path)) == ["existing.tflite"]


def test_input_of_unknown_rank():
    import tf_keras

    inputs = tf_keras.Input(type_spec=tf.TensorSpec(shape=None, dtype=tf.float32))
    model = tf_keras.Model(inputs, tf_keras.layers.Activation("relu")(inputs))
    with pytest.raises(ValueError, match="known rank"):
        export.to_tflite(model)


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


@pytest.mark.slow
def test_to_tflite_on_another_backend_says_what_to_do(tmp_path):
    """On JAX or torch, a one-line error with the command that converts."""
    import subprocess
    import sys

    pytest.importorskip("jax")
    code = (
        "import keras, keras_vib\n"
        "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n"
        "try:\n"
        "    keras_vib.export.to_tflite(m, path='x.tflite')\n"
        "except ValueError as e:\n"
        "    print(str(e))\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "needs the TensorFlow backend" in lines[0]
    assert "KERAS_BACKEND=tensorflow keras-vib export" in lines[0]
    assert not (tmp_path / "x.tflite").exists()
