import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import builtin_ops, lenet5

import keras_vib as kv
from keras_vib import export

BUILTIN_OPS = builtin_ops()


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
