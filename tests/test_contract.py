"""Tests of the contract checker's own counters (tests/contract.py).

Each model's multiply-accumulates per example are computed by hand here;
the graph counter (`count_macs`, TensorFlow) and the report must both
give them.
"""

import dataclasses

import keras
import numpy as np
import pytest
from contract import check_contract, count_macs, kernel_entries, kernel_macs

import keras_vib as kv

L = keras.layers


def single(input_shape, layer):
    return keras.Sequential([keras.Input(input_shape), layer])


# (input shape, layer, MACs per example, kernel entries), by hand.
HAND = {
    # 7 inputs times 5 units.
    "dense": ((7,), lambda: L.Dense(5), 7 * 5, 7 * 5),
    # Every one of the 4 positions: 7 x 5.
    "dense_rank3": ((4, 7), lambda: L.Dense(5), 4 * 7 * 5, 7 * 5),
    # 8x8 outputs ("same"), 6 filters, each 3x3 over 3 channels.
    "conv2d_same": (
        (8, 8, 3),
        lambda: L.Conv2D(6, 3, padding="same"),
        8 * 8 * 6 * (3 * 3 * 3),
        3 * 3 * 3 * 6,
    ),
    # 9x9, 3x3 window, stride 2, "valid": (9 - 3) // 2 + 1 = 4 -> 4x4.
    "conv2d_strided": (
        (9, 9, 3),
        lambda: L.Conv2D(4, 3, strides=2),
        4 * 4 * 4 * (3 * 3 * 3),
        3 * 3 * 3 * 4,
    ),
    # 6x6x3, 3x3 window "valid": 4x4 positions, 3 * 2 outputs of 9 each.
    "depthwise": (
        (6, 6, 3),
        lambda: L.DepthwiseConv2D(3, depth_multiplier=2),
        4 * 4 * 6 * 9,
        3 * 3 * 3 * 2,
    ),
    # The same depthwise part, then 1x1 from 6 channels to 5 at 4x4.
    "separable": (
        (6, 6, 3),
        lambda: L.SeparableConv2D(5, 3, depth_multiplier=2),
        4 * 4 * 6 * 9 + 4 * 4 * 6 * 5,
        3 * 3 * 3 * 2 + 6 * 5,
    ),
    # Each of the 5x5 input positions (3 channels) spreads over a 3x3
    # window of 4 filters.
    "conv2d_transpose": (
        (5, 5, 3),
        lambda: L.Conv2DTranspose(4, 3, strides=2),
        5 * 5 * 3 * (3 * 3 * 4),
        3 * 3 * 4 * 3,
    ),
    # Dilation 2 widens the 3x3 window to 5x5: 9 - 4 = 5 -> 5x5.
    "conv2d_dilated": (
        (9, 9, 3),
        lambda: L.Conv2D(4, 3, dilation_rate=2),
        5 * 5 * 4 * (3 * 3 * 3),
        3 * 3 * 3 * 4,
    ),
    # 10 steps, window 3 "valid": 8 positions, 5 filters of 3 x 4.
    "conv1d": ((10, 4), lambda: L.Conv1D(5, 3), 8 * 5 * 3 * 4, 3 * 4 * 5),
    # 4x4x4, window 2: 3x3x3 positions, 3 filters of 2x2x2 x 2.
    "conv3d": ((4, 4, 4, 2), lambda: L.Conv3D(3, 2), 27 * 3 * 8 * 2, 8 * 2 * 3),
    # 5 input steps of 3 channels, each spread over 3 steps of 4 filters.
    "conv1d_transpose": (
        (5, 3),
        lambda: L.Conv1DTranspose(4, 3, strides=2),
        5 * 3 * (3 * 4),
        3 * 4 * 3,
    ),
    # 3x3x3 input positions of 2 channels, each over 2x2x2 x 4 filters.
    "conv3d_transpose": (
        (3, 3, 3, 2),
        lambda: L.Conv3DTranspose(4, 2, strides=2),
        27 * 2 * (8 * 4),
        8 * 4 * 2,
    ),
    # 7 steps, window 3: 5 positions, 3 channels of 3 each.
    "depthwise1d": ((7, 3), lambda: L.DepthwiseConv1D(3), 5 * 3 * 3, 3 * 3),
    # The same, then 3 -> 4 channels at the 5 positions.
    "separable1d": (
        (7, 3),
        lambda: L.SeparableConv1D(4, 3),
        5 * 3 * 3 + 5 * 3 * 4,
        3 * 3 + 3 * 4,
    ),
    # One group per channel (ConvNeXt's depthwise; run by Keras in an
    # XLA-compiled function): 6x6 positions, 4 outputs of 3x3 each.
    "grouped_conv": (
        (6, 6, 4),
        lambda: L.Conv2D(4, 3, padding="same", groups=4),
        6 * 6 * 4 * 9,
        3 * 3 * 1 * 4,
    ),
    # Two groups of 3 input channels, 4 filters each: every output reads
    # a 3x3 window of 3 channels.
    "grouped_conv_2_groups": (
        (8, 8, 6),
        lambda: L.Conv2D(8, 3, padding="same", groups=2),
        8 * 8 * 8 * (3 * 3 * 3),
        3 * 3 * 3 * 8,
    ),
}


# The report counts a conv of 1 < groups < channels as if each group read
# one channel (keras_vib/handlers/kernels.py, GroupedConv.counts).
@pytest.mark.parametrize("kind", sorted(HAND))
def test_kernel_counts_by_hand(kind):
    shape, layer, macs, entries = HAND[kind]
    model = single(shape, layer())
    assert kernel_entries(model) == entries
    if keras.backend.backend() == "tensorflow":
        total, per_layer = kernel_macs(model)
        assert total == macs
        assert per_layer == {model.layers[-1].name: macs}
    report = kv.compression_report(model)
    assert report.kept_weights == entries
    assert report.flops == macs


@pytest.mark.tensorflow
def test_graph_counter_sums_layers_and_names_them():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            L.Conv2D(4, 3, name="conv"),  # 4x4 x 4 x 27
            L.ReLU(),
            L.Flatten(),
            L.Dense(2, name="fc"),  # 64 x 2
        ]
    )
    total, per_layer = kernel_macs(model)
    assert per_layer == {"conv": 16 * 4 * 27, "fc": 64 * 2}
    assert total == 16 * 4 * 27 + 64 * 2
    ops = {r.op for r in count_macs(model)}
    assert ops == {"Conv2D", "MatMul"}


@pytest.mark.tensorflow
def test_recurrent_and_attention_ops_are_not_kernel_layers():
    # An LSTM's matmuls run in a while loop, an attention's between two
    # activations (no weight): counted as ops, not as kernel-layer MACs.
    inputs = keras.Input((5, 4))
    h = L.LSTM(3, return_sequences=True, name="lstm")(inputs)
    scores = keras.ops.einsum("abc,adc->abd", h, h)  # 5 x 5 x 3 per example
    model = keras.Model(inputs, L.Dense(2, name="fc")(scores))
    records = count_macs(model)
    loop = [r for r in records if r.in_loop]
    assert loop and all(r.layer is model.get_layer("lstm") for r in loop)
    (einsum,) = [r for r in records if r.op == "Einsum"]
    assert einsum.macs == 5 * 5 * 3 and einsum.layer is None
    assert kernel_macs(model) == (5 * 5 * 2, {"fc": 5 * 5 * 2})
    # The LSTM's kernels count as kernel entries (the report's "kept").
    lstm = 4 * 3 * (4 + 3)
    assert kernel_entries(model) == lstm + 5 * 2
    assert kv.compression_report(model).kept_weights == lstm + 5 * 2


@pytest.mark.tensorflow
def test_graph_counter_reads_a_shared_layer_twice():
    inputs = keras.Input((6,))
    shared = L.Dense(4, name="shared")
    out = L.Concatenate()([shared(inputs), shared(inputs * 2.0)])
    model = keras.Model(inputs, out)
    assert kernel_macs(model) == (2 * 6 * 4, {"shared": 2 * 6 * 4})
    assert kernel_entries(model) == 6 * 4  # its weights once


def _dense_model():
    return keras.Sequential(
        [keras.Input((6,)), L.Dense(8, activation="relu"), L.Dense(3)]
    )


@pytest.mark.parametrize(
    "field",
    ["kept_weights", pytest.param("flops", marks=pytest.mark.tensorflow)],
)
def test_check_contract_catches_a_wrong_report(monkeypatch, field):
    # A report off by one, the same for the gated and the slim model: only
    # the counts taken without keras_vib can see it.
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    check_contract(_dense_model(), x, np.random.default_rng(1))
    report = kv.compression_report

    def wrong(*args, **kwargs):
        r = report(*args, **kwargs)
        return dataclasses.replace(r, **{field: getattr(r, field) + 1})

    monkeypatch.setattr(kv, "compression_report", wrong)
    with pytest.raises(AssertionError, match="report"):
        check_contract(_dense_model(), x, np.random.default_rng(1))
