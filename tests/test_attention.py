"""Attention heads as units (issue 25, item 2): a gate per head of
`MultiHeadAttention` (self- and cross-attention, `value_dim` != `key_dim`,
attention masks), a gate per key/value head of `GroupQueryAttention`, the
slim model's stock attention layers with fewer heads, a layer that loses
every head replaced by its output bias."""

import warnings

import keras
import numpy as np
import pytest
from contract import check_contract
from helpers import assert_close

import keras_vib as kv

L = keras.layers

# Keras's own MultiHeadAttention with `value_dim != key_dim` fails on JAX
# (Keras 3.15: `jax.nn.dot_product_attention` wants values as wide as
# keys), gated or not: value_dim differs from key_dim on TensorFlow only.
VALUE_DIM = 4 if keras.backend.backend() == "jax" else 6


def encoder(kind="mha", mask=False, length=6, vocab=50, width=16):
    """The issue's encoder: `Embedding` -> 2 x (attention, `Add`,
    `LayerNormalization`, gelu FFN, `x + f`, `LayerNormalization`) ->
    pooling -> `Dense`."""
    tokens = keras.Input((length,), dtype="int32", name="tokens")
    inputs = [tokens]
    attention_mask = None
    if mask:
        attention_mask = keras.Input((length, length), dtype="bool", name="mask")
        inputs.append(attention_mask)
    x = L.Embedding(vocab, width, name="embed")(tokens)
    for i in range(2):
        if kind == "mha":
            att = L.MultiHeadAttention(4, 4, value_dim=VALUE_DIM, name=f"att{i}")
        else:
            att = L.GroupQueryAttention(4, 4, 2, name=f"att{i}")
        a = att(x, x, attention_mask=attention_mask)
        x = L.LayerNormalization(name=f"ln{i}a")(L.Add()([x, a]))
        f = L.Dense(2 * width, activation="gelu", name=f"ff{i}")(x)
        x = L.LayerNormalization(name=f"ln{i}b")(x + L.Dense(width, name=f"out{i}")(f))
    y = L.Dense(3, name="head")(L.GlobalAveragePooling1D()(x))
    return keras.Model(inputs if mask else tokens, y)


def vit(size=16, patch=4, width=16, blocks=2):
    """A tiny ViT: patches by a strided `Conv2D` and a `Reshape`, pre-norm
    blocks, pooling."""
    images = keras.Input((size, size, 1))
    n = (size // patch) ** 2
    x = L.Conv2D(width, patch, strides=patch, name="patches")(images)
    x = L.Reshape((n, width))(x)
    for i in range(blocks):
        h = L.LayerNormalization(name=f"ln{i}a")(x)
        x = L.Add()([x, L.MultiHeadAttention(4, 4, name=f"att{i}")(h, h)])
        h = L.LayerNormalization(name=f"ln{i}b")(x)
        f = L.Dense(2 * width, activation="gelu", name=f"ff{i}")(h)
        x = L.Add()([x, L.Dense(width, name=f"out{i}")(f)])
    x = L.GlobalAveragePooling1D()(L.LayerNormalization()(x))
    return keras.Model(images, L.Dense(10, name="head")(x))


def tokens(rng, n=3, length=6):
    return rng.integers(0, 50, (n, length)).astype("int32")


def gated_quietly(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the residual stream
        return kv.add_gates(model, **kwargs)


def contract(model, x, rng, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return check_contract(model, x, rng, **kwargs)


@pytest.mark.parametrize("mask", [False, True])
def test_each_head_of_self_attention_is_a_unit(mask, tmp_path):
    rng = np.random.default_rng(0)
    model = encoder(mask=mask)
    x = tokens(rng)
    if mask:
        x = [x, rng.random((3, 6, 6)) > 0.3]
    gated, slim = contract(model, x, rng, tmp_path=tmp_path)
    for i in range(2):
        layer = gated.get_layer(f"att{i}")
        assert isinstance(layer, kv.VIBMultiHeadAttention)
        assert layer.gate.units == 4
        new = slim.get_layer(f"att{i}")
        assert type(new) is L.MultiHeadAttention  # stock, fewer heads
        assert new.num_heads == layer.num_kept()
        assert (new.key_dim, new.value_dim) == (4, VALUE_DIM)
    report = kv.compression_report(gated)
    rows = {row.name: (row.kept, row.total) for row in report.layers}
    assert rows["att0"] == (gated.get_layer("att0").num_kept(), 4)


def test_heads_may_differ_from_layer_to_layer():
    rng = np.random.default_rng(1)
    gated = gated_quietly(encoder())
    gated.get_layer("att0").gate.set_kept([True, False, False, False])
    gated.get_layer("att1").gate.set_kept([True, True, False, True])
    slim = kv.slim_model(gated)
    assert slim.get_layer("att0").num_heads == 1
    assert slim.get_layer("att1").num_heads == 3
    x = tokens(rng)
    assert_close(slim(x), gated(x, training=False))


def test_cross_attention_with_value_dim_other_than_key_dim(tmp_path):
    rng = np.random.default_rng(2)
    queries = keras.Input((5, 12), name="queries")
    memory = keras.Input((7, 10), name="memory")
    keys = keras.Input((7, 8), name="keys")
    m = L.Dense(10, activation="relu", name="mem")(memory)
    a = L.MultiHeadAttention(3, 4, value_dim=VALUE_DIM, name="cross")(
        queries, m, key=keys
    )
    x = L.Add()([queries, a])
    y = L.Dense(2, name="head")(L.GlobalAveragePooling1D()(x))
    model = keras.Model([queries, memory, keys], y)
    x = [
        rng.normal(size=(2, 5, 12)).astype("float32"),
        rng.normal(size=(2, 7, 10)).astype("float32"),
        rng.normal(size=(2, 7, 8)).astype("float32"),
    ]
    gated, slim = contract(model, x, rng, tmp_path=tmp_path)
    # The heads and the memory's units are both gated; the value rows of
    # the closed memory units go.
    names = [name for name, _ in kv.gates.gates(gated)]
    assert names == ["mem_gate", "cross"]
    kept = gated.get_layer("mem_gate").num_kept()
    new = slim.get_layer("cross")
    assert new.num_heads == gated.get_layer("cross").num_kept()
    assert new.value_dense.kernel.shape == (kept, new.num_heads, VALUE_DIM)
    assert new.key_dense.kernel.shape == (8, new.num_heads, 4)


def test_a_key_value_head_goes_with_its_query_heads(tmp_path):
    rng = np.random.default_rng(3)
    model = encoder(kind="gqa")
    gated, slim = contract(model, tokens(rng), rng, tmp_path=tmp_path)
    for i in range(2):
        layer = gated.get_layer(f"att{i}")
        assert isinstance(layer, kv.VIBGroupQueryAttention)
        assert layer.gate.units == 2  # key/value heads
        if not layer.num_kept():  # both closed: its output bias
            assert isinstance(slim.get_layer(f"att{i}_bias"), L.Rescaling)
            continue
        new = slim.get_layer(f"att{i}")
        assert type(new) is L.GroupQueryAttention
        assert new.num_key_value_heads == layer.num_kept()
        assert new.num_query_heads == 2 * layer.num_kept()


@pytest.mark.parametrize("kind", ["mha", "gqa"])
def test_a_layer_that_loses_every_head_computes_its_output_bias(kind, tmp_path):
    rng = np.random.default_rng(4)
    gated = gated_quietly(encoder(kind=kind))
    layer = gated.get_layer("att0")
    bias = keras.ops.convert_to_numpy(layer.weights[-1])  # the output bias
    layer.gate.set_kept(np.zeros(layer.gate.units, bool))
    gated, slim = contract(gated, tokens(rng), rng, tmp_path=tmp_path)
    assert "att0" not in [layer.name for layer in slim.layers]
    constant = slim.get_layer("att0_bias")
    assert isinstance(constant, L.Rescaling) and not constant.weights
    x = tokens(rng)
    out = keras.Model(slim.inputs[0], constant.output)(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out)[1, 2], bias, 1e-6)
    report = kv.compression_report(gated)
    assert {r.name: r.kept for r in report.layers}["att0"] == 0


@pytest.mark.parametrize("build", [encoder, vit])
def test_half_of_every_gate_closed_keeps_at_most_three_quarters(build):
    """The issue's target for the hand-built encoder and ViT."""
    rng = np.random.default_rng(5)
    model = build()
    gated = gated_quietly(model)
    for _, gate in kv.gates.gates(gated):
        gate.set_kept(np.arange(gate.units) < gate.units // 2)
    slim = kv.slim_model(gated)
    ratio = slim.count_params() / model.count_params()
    assert ratio <= 0.75, ratio
    x = tokens(rng) if build is encoder else rng.random((2, 16, 16, 1), "float32")
    assert_close(slim(x), gated(x, training=False))


def test_the_gated_attention_saves_reloads_and_trains(tmp_path):
    rng = np.random.default_rng(6)
    gated = gated_quietly(encoder(), kl_weight=1e-2, seed=1)
    layer = gated.get_layer("att0")
    x = tokens(rng, n=8)
    gated(x, training=True)
    # The KL terms of the heads, through add_loss: 2 layers and 2 FFNs.
    assert len(gated.losses) == 4 and len(layer.losses) == 1
    layer.gate.set_kept([True, False, True, True])
    path = tmp_path / "gated.keras"
    gated.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        loaded.get_layer("att0").kept_mask(), [True, False, True, True]
    )
    assert_close(loaded(x), gated(x, training=False))
    gated.compile("adam", "sparse_categorical_crossentropy")
    before = keras.ops.convert_to_numpy(layer.gate.mu).copy()
    history = gated.fit(x, rng.integers(0, 3, 8), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(keras.ops.convert_to_numpy(layer.gate.mu), before)


def test_an_encoder_of_any_length():
    rng = np.random.default_rng(7)
    tokens_in = keras.Input((None,), dtype="int32")
    x = L.Embedding(50, 16)(tokens_in)
    a = L.MultiHeadAttention(4, 4, name="att")(x, x)
    x = L.LayerNormalization()(L.Add()([x, a]))
    model = keras.Model(tokens_in, L.Dense(2)(L.GlobalAveragePooling1D()(x)))
    gated = gated_quietly(model)
    gated.get_layer("att").gate.set_kept([True, False, True, False])
    assert kv.compression_report(gated).flops is None
    at_10 = kv.compression_report(gated, input_shape=(10,))
    # 2 of 4 heads: q, k, v and output projections, scores and sums.
    full = 10 * 16 * 16 * 4 + 10 * 10 * 16 * 2
    assert at_10.total_flops == full + 16 * 2
    assert at_10.flops == full // 2 + 16 * 2
    slim = kv.slim_model(gated)
    for length in (5, 11):
        x = tokens(rng, length=length)
        assert_close(slim(x), gated(x, training=False))


def test_attention_the_analysis_cannot_slice_is_left_whole():
    inputs = keras.Input((4, 4, 8))
    a = L.MultiHeadAttention(2, 4, attention_axes=(2,), name="att")(inputs, inputs)
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(a)))
    gated = gated_quietly(model)
    assert type(gated.get_layer("att")) is L.MultiHeadAttention
    x = np.random.default_rng(8).random((2, 4, 4, 8), "float32")
    assert_close(kv.slim_model(gated)(x), model(x))


def test_a_gate_over_heads():
    gate = kv.VIBGate(axis=-2, seed=3)
    x = np.ones((2, 5, 3, 4), "float32")
    y = keras.ops.convert_to_numpy(gate(x, training=True))
    assert gate.units == 3 and gate.positions == 5
    # One factor per example and head, over positions and head values.
    assert np.allclose(y, y[:, :1, :, :1])
    assert not np.allclose(y[0], y[1])
    again = kv.VIBGate.from_config(gate.get_config())
    assert again.axis == -2
    with pytest.raises(ValueError, match="Expected `axis` to be a negative int"):
        kv.VIBGate(axis=1)
    with pytest.raises(ValueError, match="rank >= 4"):
        kv.VIBGate(axis=-3)(np.ones((2, 3), "float32"))
