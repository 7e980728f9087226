"""README's "Your own layers": its code blocks run as written and do what
the text says."""

import pathlib
import re
import warnings

import keras
import numpy as np
import pytest
from helpers import assert_close, random_gates

import keras_vib as kv

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _blocks():
    text = README.read_text()
    section = text.split("## Your own layers", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def forget():
    """Unregisters the classes a block registered."""
    classes = []
    yield classes
    for cls in classes:
        kv.unregister_layer(cls)


def _run(code, model=None):
    namespace = {"keras": keras, "kv": kv, "np": np, "model": model}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def _split(block):
    """The block's definitions, and its lines from `gated = ` on (the model
    they gate is built in between, from the block's layer)."""
    head, tail = block.split("gated = ", 1)
    return head, "gated = " + tail


def test_the_channelwise_block(forget, tmp_path):
    head, tail = _split(_blocks()[0])
    channel_scale = _run(head)["ChannelScale"]
    forget.append(channel_scale)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = channel_scale(name="scale")(x)
    x = keras.layers.Conv2D(4, 3, name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "no warning"
        ns = _run(tail, model)
    gated = ns["gated"]
    # The gate moved after the per-channel scale, whose w is sliced.
    assert gated.get_layer("conv_gate").input is gated.get_layer("scale").output
    random_gates(gated, np.random.default_rng(4))
    slim = kv.slim_model(gated)
    kept = gated.get_layer("conv_gate").num_kept()
    assert slim.get_layer("scale").w.shape == (kept,) and kept < 8
    x = np.random.default_rng(5).normal(size=(2, 8, 8, 3)).astype("float32")
    assert_close(slim(x), gated(x))


def test_the_kernel_layer_block(forget, tmp_path):
    block = _blocks()[1]
    handler = block.split("class ReluDenseHandler", 1)[1].split("\n\n\n", 1)[0]
    assert len(handler.strip().splitlines()) + 1 < 40  # the README's promise
    head, tail = _split(block)
    relu_dense = _run(head)["ReluDense"]
    forget.append(relu_dense)
    inputs = keras.Input((6,))
    h = relu_dense(16, name="a")(inputs)
    h = relu_dense(12, name="b")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    rng = np.random.default_rng(3)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, tuple(w.shape)).astype("float32"))
    x = rng.normal(size=(5, 6)).astype("float32")
    gated = _run(tail, model)["gated"]
    assert_close(gated(x), model(x))
    assert [n for n, _ in kv.gates.gates(gated)] == ["a_gate", "b_gate"]
    random_gates(gated, rng, negative_mu=True)
    slim = kv.slim_model(gated)
    assert_close(slim(x), gated(x))
    report = kv.compression_report(gated)
    assert slim.count_params() == report.kept_params
    kept = [g.num_kept() for _, g in kv.gates.gates(gated)]
    assert [slim.get_layer(n).units for n in ("a", "b")] == kept
    slim_report = kv.compression_report(slim)
    assert (slim_report.kept_weights, slim_report.flops) == (
        report.kept_weights,
        report.flops,
    )
    entries = sum(int(np.prod(w.shape)) for w in slim.weights if len(w.shape) == 2)
    assert entries == report.kept_weights
    path = tmp_path / "slim.keras"
    slim.save(path)
    assert_close(keras.models.load_model(path)(x), gated(x))


def test_the_composite_block(forget):
    head, tail = _split(_blocks()[2])
    block = _run(head)["Block"]
    forget.append(block)
    inputs = keras.Input((6, 16))
    x = block(16, name="block")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the residual stream
        gated = _run(tail, model)["gated"]
    kinds = {type(layer).__name__ for _, layer in kv.gates.gated_layers(gated)}
    assert kinds == {"VIBMultiHeadAttention", "VIBGate"}  # heads, `up` units
    random_gates(gated, np.random.default_rng(6))
    slim = kv.slim_model(gated)
    assert "block" not in [layer.name for layer in slim.layers]
    x = np.random.default_rng(7).normal(size=(2, 6, 16)).astype("float32")
    assert_close(slim(x), gated(x))
