"""The LiteRT runtime: running, evaluating and timing .tflite models."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import builtin_ops

from keras_vib import export
from keras_vib.deploy import litert

pytestmark = pytest.mark.tensorflow
BUILTIN_OPS = builtin_ops()


def test_evaluate_tflite_agrees_with_run_tflite(random_lenet5):
    model, x = random_lenet5
    tflite = export.to_tflite(model)
    y = np.arange(len(x)) % 10
    expected = np.mean(np.argmax(export.run_tflite(tflite, x), -1) == y)
    assert export.evaluate_tflite(tflite, (x, y), batch_size=7) == expected
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    assert export.evaluate_tflite(tflite, dataset) == expected


def test_a_tflite_model_is_bytes_or_a_path(random_lenet5, tmp_path):
    model, x = random_lenet5
    tflite = export.to_tflite(model)
    path = tmp_path / "model.tflite"
    path.write_bytes(tflite)
    y = np.arange(len(x)) % 10
    for given in (str(path), path, bytearray(tflite)):
        np.testing.assert_array_equal(
            export.run_tflite(given, x), export.run_tflite(tflite, x)
        )
        assert export.evaluate_tflite(given, (x, y)) == export.evaluate_tflite(
            tflite, (x, y)
        )
    assert litert.tflite_ops(path) == litert.tflite_ops(tflite)
    assert export.benchmark_tflite(path, runs=2, warmup=1)["size_bytes"] == len(tflite)
    with pytest.raises(ValueError, match=r"no such file\)$"):
        export.run_tflite(str(tmp_path / "missing.tflite"), x)
    with pytest.raises(ValueError, match="Received: tflite_model of type int"):
        export.evaluate_tflite(3, (x, y))


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
        interpreter = litert._interpreter(tflite, 1, kernels)
        interpreter.allocate_tensors()
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        assert ("DELEGATE" in ops) == (kernels == "default"), (kernels, ops)
        result = export.benchmark_tflite(tflite, runs=3, warmup=1, kernels=kernels)
        assert 0 < result["median_ms"] <= result["p90_ms"]
    with pytest.raises(ValueError, match="kernels='xnnpack'"):
        export.benchmark_tflite(tflite, kernels="xnnpack")
