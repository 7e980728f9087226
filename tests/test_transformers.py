"""Transformer blocks of plain Keras layers (issue 25): feed-forward units,
gated feed-forward units (the gate-up pair is one unit), the normalised
residual stream left whole."""

import warnings

import keras
import numpy as np
import pytest
from contract import check_contract

import keras_vib as kv

L = keras.layers


def gated_ffn_model(kind, norm):
    """Two pre-norm blocks `x + down(act(gate(h)) * up(h))`, `h = norm(x)`."""
    inputs = keras.Input((6, 16))
    x = inputs
    for i in range(2):
        h = (L.RMSNormalization if norm == "rms" else L.LayerNormalization)(
            name=f"norm{i}"
        )(x)
        if kind == "layers":  # GeGLU of Keras layers
            g = L.Dense(24, activation="gelu", name=f"gate{i}")(h)
            f = L.Multiply(name=f"mul{i}")([g, L.Dense(24, name=f"up{i}")(h)])
        else:  # SwiGLU of raw keras.ops
            g = L.Dense(24, name=f"gate{i}")(h)
            f = keras.ops.silu(g) * L.Dense(24, name=f"up{i}")(h)
        x = L.Add(name=f"res{i}")([x, L.Dense(16, name=f"down{i}")(f)])
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(2, name="out")(x))


@pytest.mark.parametrize("norm", ["layer", "rms"])
@pytest.mark.parametrize("kind", ["layers", "ops"])
def test_a_gated_feed_forward_unit_is_the_gate_up_pair(kind, norm, tmp_path):
    rng = np.random.default_rng(0)
    model = gated_ffn_model(kind, norm)
    x = rng.normal(size=(3, 6, 16)).astype("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        gated, slim = check_contract(model, x, rng, tmp_path=tmp_path)
    names = [name for name, _ in kv.gates.gates(gated)]
    # One gate per pair, on the gate branch; the up branch goes with it.
    assert {"gate0_gate", "gate1_gate"} <= set(names)
    assert not any(n.startswith("up") for n in names)
    for i in range(2):
        kept = gated.get_layer(f"gate{i}_gate").num_kept()
        assert 0 < kept < 24
        assert slim.get_layer(f"gate{i}").units == kept
        assert slim.get_layer(f"up{i}").units == kept
        assert slim.get_layer(f"down{i}").kernel.shape == (kept, 16)
    # The residual stream feeds the norms: its units stay, said once.
    ungated = [str(w.message) for w in caught if "ungated" in str(w.message)]
    assert len(ungated) == 1
    assert "'down0'" in ungated[0] and "Normalization" in ungated[0]


def test_an_rms_norm_is_refused_by_what_it_does():
    inputs = keras.Input((6, 16))
    h = kv.VIBDense(16, name="proj")(inputs)
    h = L.RMSNormalization(name="rms")(h)
    gated = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling1D()(h)))
    gated.get_layer("proj").gate.set_kept(np.arange(16) < 8)
    with pytest.raises(ValueError, match="'rms'.*normalises over its channels"):
        kv.slim_model(gated)


def test_an_einsum_dense_on_the_last_axis_is_a_dense(tmp_path):
    """Gemma's feed-forward layers: `EinsumDense("btd,df->btf")`, its output
    length left open in its config (FLOPs traced at the reference size)."""
    rng = np.random.default_rng(3)
    inputs = keras.Input((None, 8))
    up = L.EinsumDense("btd,df->btf", (None, 16), bias_axes="f", name="up")(inputs)
    gate = L.EinsumDense("btd,df->btf", (None, 16), name="gate")(inputs)
    x = keras.ops.gelu(gate) * up
    x = L.EinsumDense("btf,fd->btd", (None, 8), name="down")(x)
    # Heads out of one projection: not a Dense, kept whole.
    x = L.EinsumDense("btd,dnh->btnh", (None, 2, 4), name="heads")(x)
    model = keras.Model(inputs, L.Reshape((-1,))(x))
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    gated, slim = check_contract(model, x, rng, tmp_path=tmp_path)
    assert [name for name, _ in kv.gates.gates(gated)] == ["gate_gate"]  # the pair
    kept = slim.get_layer("up").kernel.shape[-1]
    assert kept == slim.get_layer("gate").kernel.shape[-1] < 16
    report = kv.compression_report(gated, input_shape=(5, 8))
    assert report.total_flops == 5 * (8 * 16 * 2 + 16 * 8 + 8 * 8)
