import json

import keras
import numpy as np
import pytest
from helpers import random_gates, set_gates

import keras_vib as kv
from keras_vib.report import gated_layers


def lenet_300_100():
    return keras.Sequential(
        [
            keras.Input((784,)),
            kv.VIBGate(name="input_gate"),
            kv.VIBDense(300, activation="relu", name="fc1"),
            kv.VIBDense(100, activation="relu", name="fc2"),
            keras.layers.Dense(10, name="classifier"),
        ]
    )


def lenet5_caffe():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            kv.VIBConv2D(20, 5, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(),
            kv.VIBConv2D(50, 5, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            kv.VIBDense(500, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="classifier"),
        ]
    )


def test_unpruned_lenet_300_100():
    report = kv.compression_report(lenet_300_100())
    assert report.total_neurons == 1184
    assert report.kept_neurons == 1184
    assert report.total_weights == 784 * 300 + 300 * 100 + 100 * 10
    assert report.r_w == 1.0 and report.r_n == 1.0
    assert report.structure == "784-300-100"
    assert report.flops == report.total_flops == report.total_weights


def test_pruned_lenet_300_100_counts():
    model = lenet_300_100()
    masks = random_gates(model, np.random.default_rng(0))
    k0, k1, k2 = (int(m.sum()) for m in masks)
    report = kv.compression_report(model)
    assert [g.name for g in report.layers] == ["input_gate", "fc1", "fc2"]
    assert report.structure == f"{k0}-{k1}-{k2}"
    assert report.kept_weights == k0 * k1 + k1 * k2 + k2 * 10
    assert report.r_n == pytest.approx((k0 + k1 + k2) / 1184)
    assert report.r_w == pytest.approx(report.kept_weights / 266200)
    assert report.flops == report.kept_weights  # dense: one MAC per weight


def test_pruned_lenet5_counts_through_pool_and_flatten():
    model = lenet5_caffe()
    masks = random_gates(model, np.random.default_rng(1))
    k1, k2, k3 = (int(m.sum()) for m in masks)
    report = kv.compression_report(model)
    # Flatten of 4x4x50: each kept conv2 channel feeds 16 inputs of fc1.
    kept = 25 * 1 * k1 + 25 * k1 * k2 + 16 * k2 * k3 + k3 * 10
    total = 25 * 20 + 25 * 20 * 50 + 800 * 500 + 500 * 10
    assert report.kept_weights == kept
    assert report.total_weights == total
    flops = 25 * k1 * 24 * 24 + 25 * k1 * k2 * 8 * 8 + 16 * k2 * k3 + k3 * 10
    assert report.flops == flops
    assert report.total_flops == 25 * 20 * 576 + 25 * 20 * 50 * 64 + 400000 + 5000
    assert report.structure == f"{k1}-{k2}-{k3}"


def test_units_whose_consumers_all_closed_are_not_kept():
    model = lenet_300_100()
    random_gates(model, np.random.default_rng(2))
    fc2 = model.get_layer("fc2").gate
    set_gates(fc2, np.ones(100), np.full(100, 5.0))  # fc2 closed entirely
    report = kv.compression_report(model)
    # Nothing reaches the classifier, so no gate keeps anything useful. The
    # classifier still has to output its (constant) logits: the slim model
    # keeps a chain of one constant unit per layer to feed it, with the
    # weights 784 -> 1 -> 1 -> 10 of width one.
    assert report.structure == "0-0-0"
    assert report.kept_weights == 1 + 1 + 10
    assert report.flops == 12


def test_add_keeps_a_channel_if_any_branch_keeps_it():
    inputs = keras.Input((8, 8, 3))
    a = kv.VIBConv2D(4, 3, padding="same", name="a")(inputs)
    b = kv.VIBConv2D(4, 3, padding="same", name="b")(inputs)
    added = keras.layers.Add()([a, b])
    pooled = keras.layers.GlobalAveragePooling2D()(added)
    outputs = keras.layers.Dense(2, name="classifier")(pooled)
    model = keras.Model(inputs, outputs)
    set_gates(model.get_layer("a").gate, np.ones(4), [-9, -9, 5, 5])
    set_gates(model.get_layer("b").gate, np.ones(4), [-9, 5, -9, 5])
    report = kv.compression_report(model)
    # Channels 0, 1, 2 survive the Add: both convs must produce all three.
    conv_rows = {w.name: w for w in report.weight_layers}
    assert conv_rows["a"].kept_weights == 9 * 3 * 3
    assert conv_rows["b"].kept_weights == 9 * 3 * 3
    assert conv_rows["classifier"].kept_weights == 3 * 2
    assert report.structure == "2-2"  # what each gate itself keeps


def test_report_table_and_dict():
    model = lenet_300_100()
    random_gates(model, np.random.default_rng(3))
    report = kv.compression_report(model)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["structure"] == report.structure
    assert data["r_w_pct"] == pytest.approx(100 * report.r_w)
    assert [row["name"] for row in data["layers"]] == ["input_gate", "fc1", "fc2"]
    lines = str(report).splitlines()
    assert lines[0] == f"Compression report: {model.name}"
    assert lines[1].split() == ["gated", "layer", "kept", "total", "kept", "%"]
    for line, layer in zip(lines[2:5], report.layers):
        pct = f"{100 * layer.kept / layer.total:.2f}"
        assert line.split() == [layer.name, str(layer.kept), str(layer.total), pct]
    assert lines[5] == (
        f"r_W: {100 * report.r_w:.2f}% ({report.kept_weights:,} of "
        f"{report.total_weights:,} weights)"
    )
    assert lines[6].startswith(f"r_N: {100 * report.r_n:.2f}% ")
    assert lines[7].startswith("FLOPs: ") and "multiply-accumulates" in lines[7]
    assert lines[-1] == f"structure: {report.structure}"


def test_gated_layers_in_graph_order():
    names = [name for name, _ in gated_layers(lenet5_caffe())]
    assert names == ["conv1", "conv2", "fc1"]


def test_report_needs_a_graph_model():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="Subclassed"):
        kv.compression_report(Subclassed())


def test_slim_model_loaded_from_keras_reports_absolute_figures(tmp_path):
    model = lenet_300_100()
    random_gates(model, np.random.default_rng(5))
    report = kv.compression_report(model)
    path = tmp_path / "slim.keras"
    kv.slim_model(model).save(path)
    slim = keras.models.load_model(path)
    alone = kv.compression_report(slim)
    # No gates, no reference: no ratios, and nothing that reads like one.
    assert alone.r_w is None and alone.r_n is None and alone.baseline is None
    text = str(alone)
    assert "0 of 0" not in text and "%" not in text
    assert f"{report.kept_weights:,} kernel weights" in text
    assert alone.kept_params == slim.count_params() == report.kept_params
    assert alone.flops == report.flops
    # Against the gated model: its ratios and gate rows.
    against = kv.compression_report(slim, reference=model)
    assert against.r_w == pytest.approx(report.r_w)
    assert against.r_n == pytest.approx(report.r_n)
    assert against.structure == report.structure
    assert "against" in str(against) and model.name in str(against)
    data = json.loads(json.dumps(alone.to_dict()))
    assert data["r_w_pct"] is None and data["baseline"] is None


def test_report_against_the_original_model():
    # A gated model against its plain original: the totals are the original's.
    plain = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(8, name="fc"), keras.layers.Dense(2)]
    )
    gated = kv.add_gates(plain)
    random_gates(gated, np.random.default_rng(6))
    report = kv.compression_report(gated, reference=plain)
    assert report.total_weights == 12 * 8 + 8 * 2
    assert report.r_w == pytest.approx(report.kept_weights / (12 * 8 + 8 * 2))
