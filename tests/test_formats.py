"""ONNX and SavedModel: the slim model for ONNX Runtime and TF Serving
(`keras_vib.export.to_onnx`, `to_saved_model`, `keras-vib export --format`)."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import _keras_vib_cli
import keras_vib as kv

ort = pytest.importorskip("onnxruntime")
tf = pytest.importorskip("tensorflow")


def _onnx_outputs(path, x):
    session = ort.InferenceSession(str(path))
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _close(a, b, rtol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    assert np.abs(a - b).max() <= rtol * np.abs(b).max(), np.abs(a - b).max()


@pytest.mark.tensorflow
def test_onnx_runs_in_onnx_runtime_as_the_slim_model(random_lenet5, tmp_path):
    gated, x = random_lenet5
    path = kv.export.to_onnx(gated, tmp_path / "lenet5.onnx")
    assert path == str(tmp_path / "lenet5.onnx")
    _close(_onnx_outputs(path, x), gated(x, training=False))
    # The file holds the slim model: its weights, not the gated model's.
    slim_params = kv.slim_model(gated).count_params()
    assert os.path.getsize(path) < 4 * gated.count_params()
    assert os.path.getsize(path) > 4 * slim_params
    assert sorted(os.listdir(tmp_path)) == ["lenet5.onnx"]


@pytest.mark.tensorflow
def test_saved_model_reloads_and_serves_the_slim_model(random_lenet5, tmp_path):
    gated, x = random_lenet5
    kv.export.to_saved_model(gated, tmp_path / "served")
    loaded = tf.saved_model.load(str(tmp_path / "served"))
    _close(loaded.serve(x), gated(x, training=False))
    serving = loaded.signatures["serving_default"]
    (out,) = serving(tf.constant(x)).values()
    _close(out, gated(x, training=False))
    assert sorted(os.listdir(tmp_path)) == ["served"]


def test_bad_paths_are_refused_and_nothing_is_written(random_lenet5, tmp_path):
    gated, _ = random_lenet5
    with pytest.raises(ValueError, match=r"end in \.onnx.*path='.*model\.tflite'"):
        kv.export.to_onnx(gated, tmp_path / "model.tflite")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="does not exist yet.*taken"):
        kv.export.to_saved_model(gated, tmp_path / "taken")
    with pytest.raises(ValueError, match="existing directory"):
        kv.export.to_onnx(gated, tmp_path / "no" / "such.onnx")
    with pytest.raises(ValueError, match="Keras model"):
        kv.export.to_onnx("model.keras", tmp_path / "m.onnx")
    assert sorted(os.listdir(tmp_path)) == ["taken"]
    assert not os.listdir(tmp_path / "taken")


def run(capsys, *argv):
    code = _keras_vib_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.tensorflow
def test_the_command_exports_each_format(random_lenet5, tmp_path, capsys):
    gated, x = random_lenet5
    gated.save(tmp_path / "gated.keras")
    expected = gated(x, training=False)
    for out, flags in (
        ("m.onnx", []),
        ("served", []),
        ("other.onnx", ["--format", "onnx"]),
        ("m.tflite", ["--format", "litert"]),
    ):
        code, printed, err = run(
            capsys, "export", str(tmp_path / "gated.keras"),
            "--out", str(tmp_path / out), *flags,
        )  # fmt: skip
        assert code == 0, err
        assert printed.strip() == f"wrote {tmp_path / out}"
    _close(_onnx_outputs(tmp_path / "m.onnx", x), expected)
    served = tf.saved_model.load(str(tmp_path / "served"))  # (kept: its variables)
    _close(served.serve(x), expected)
    _close(kv.export.run_tflite((tmp_path / "m.tflite").read_bytes(), x), expected)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--out", "m.tflite", "--format", "onnx"], "--format onnx writes .onnx"),
        (["--out", "served", "--format", "litert"], "--format litert writes .tflite"),
        (["--out", "m.onnx", "--quantization", "int8"], "is for litert"),
        (["--out", "m.onnx", "--format", "saved_model"], "writes a folder"),
    ],
)
def test_bad_formats_are_refused_before_tensorflow(tmp_path, capsys, flags, message):
    model = tmp_path / "m.keras"
    model.write_bytes(b"PK")  # (never read: refused on parsing)
    code, _, err = run(capsys, "export", str(model), *flags)
    assert code == 2 and err.count("\n") == 1 and message in err, err


@pytest.mark.slow
def test_a_model_trained_on_jax_exports_to_every_format(tmp_path):
    """Issue 27: gated and trained on the JAX backend, then one command per
    format (on JAX too: the export runs where TensorFlow does)."""
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    train = (
        "import sys, numpy as np, keras, keras_vib as kv\n"
        "assert keras.backend.backend() == 'jax'\n"
        "keras.utils.set_random_seed(0)\n"
        "model = kv.models.get_model('lenet5', vib=True, num_classes=10,"
        " input_shape=(28, 28, 1), kl_weight=1e-2)\n"
        "model.compile('adam', keras.losses.SparseCategoricalCrossentropy("
        "from_logits=True))\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.random((64, 28, 28, 1)).astype('float32')\n"
        "model.fit(x, rng.integers(0, 10, 64), epochs=2, verbose=0)\n"
        "model.save(sys.argv[1] + '/gated.keras')\n"
        "np.save(sys.argv[1] + '/x.npy', x[:8])\n"
        "np.save(sys.argv[1] + '/y.npy', np.asarray(model(x[:8], training=False)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", train, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    script = pathlib.Path(sys.executable).parent / "keras-vib"
    for out in ("m.onnx", "served", "m.tflite"):
        result = subprocess.run(
            [str(script), "export", str(tmp_path / "gated.keras"),
             "--out", str(tmp_path / out)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().endswith(f"wrote {tmp_path / out}")
    x, expected = np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy")
    _close(_onnx_outputs(tmp_path / "m.onnx", x), expected)
    served = tf.saved_model.load(str(tmp_path / "served"))  # (kept: its variables)
    _close(served.serve(x), expected)
    _close(kv.export.run_tflite((tmp_path / "m.tflite").read_bytes(), x), expected)
