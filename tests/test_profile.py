"""Tests of `keras_vib.export.profile_tflite`, `op_models`, `padded_op`."""

import keras
import numpy as np
import pytest

import keras_vib as kv
from keras_vib import export

L = keras.layers


@pytest.fixture(scope="module")
def tflite():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            L.Conv2D(13, 3, padding="same", activation="relu"),
            L.DepthwiseConv2D(3, padding="same"),
            L.Conv2D(7, 1),
            L.GlobalAveragePooling2D(),
            L.Dense(5),
        ]
    )
    return model, export.to_tflite(model)


def test_the_operators_in_turn_compute_the_model(tflite):
    model, flatbuffer = tflite
    ops = export.op_models(flatbuffer)
    names = [op["op"] for op in ops]
    assert names == [
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "CONV_2D",
        "MEAN",
        "FULLY_CONNECTED",
    ]
    assert [op["model_input"] for op in ops] == [True] + [False] * 4
    assert [op["model_output"] for op in ops] == [False] * 4 + [True]
    x = np.random.default_rng(0).normal(size=(1, 12, 12, 3)).astype("float32")
    y = x
    for op in ops:
        y = export.run_tflite(op["tflite"], y)
    np.testing.assert_allclose(y, export.run_tflite(flatbuffer, x), atol=1e-5)
    # MACs from the weights' shapes: those the report counts.
    assert sum(op["macs"] for op in ops) == kv.compression_report(model).total_flops


@pytest.mark.parametrize("multiple", [4, 8, 16])
def test_a_padded_operator_computes_the_same_channels(tflite, multiple):
    _, flatbuffer = tflite
    rng = np.random.default_rng(1)
    for op in export.op_models(flatbuffer):
        if op["op"] == "MEAN":
            continue
        padded = export.padded_op(
            op["tflite"], multiple, inputs=not op["model_input"],
            outputs=not op["model_output"],
        )  # fmt: skip
        (entry,) = export.op_models(padded)
        channels_in, channels_out = entry["inputs"][0][-1], entry["output"][-1]
        if op["model_input"]:
            assert channels_in == 3  # the image's channels stay
        else:
            assert channels_in % multiple == 0
        if op["model_output"]:
            assert channels_out == 5  # the classes stay
        else:
            assert channels_out % multiple == 0
        x = rng.normal(size=op["inputs"][0]).astype("float32")
        wide = np.zeros(entry["inputs"][0], "float32")
        wide[..., : x.shape[-1]] = x
        y = export.run_tflite(padded, wide)
        expected = export.run_tflite(op["tflite"], x)
        np.testing.assert_allclose(y[..., : expected.shape[-1]], expected, atol=1e-5)
        np.testing.assert_array_equal(y[..., expected.shape[-1] :], 0.0)


def test_profile_times_every_operator(tflite):
    _, flatbuffer = tflite
    ops = export.profile_tflite(flatbuffer, runs=5, warmup=1)
    assert len(ops) == 5 and all(op["ms"] > 0 for op in ops)
    assert "tflite" not in ops[0]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f: export.profile_tflite(f, runs=0), "runs=0"),
        (lambda f: export.padded_op(export.op_models(f)[0]["tflite"], 0), "multiple=0"),
        (lambda f: export.op_models(b"not a model"), "tflite_model of 11 bytes"),
    ],
)
def test_bad_arguments(tflite, call, match):
    with pytest.raises(ValueError, match=match):
        call(tflite[1])
