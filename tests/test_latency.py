"""Tests of `keras_vib.latency.LatencyModel` and `VIBBudget(target_latency=)`."""

import json
import warnings

import keras
import numpy as np
import pytest
from helpers import random_gates

import keras_vib as kv
from keras_vib import latency as latency_module

L = keras.layers

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="LiteRT conversion needs TF"
)


def conv_net():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(64, 3, padding="same", activation="relu", name="a")(inputs)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(96, 1, activation="relu", name="b")(x)
    x = L.GlobalAveragePooling2D()(x)
    return kv.add_gates(keras.Model(inputs, L.Dense(10, name="out")(x)), kl_weight=1e-3)


@pytest.fixture()
def counted(monkeypatch):
    """Counts the LiteRT timings the latency model makes."""
    calls = []
    original = latency_module.benchmark_tflite

    def benchmark(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(latency_module, "benchmark_tflite", benchmark)
    return calls


def test_layers_are_timed_at_the_kept_counts_and_cached(tmp_path, counted):
    gated = conv_net()
    model = latency_module.LatencyModel(gated, runs=3, cache_dir=tmp_path, verbose=0)
    # Built: every unit kept is the last anchor, the whole model measured.
    assert model() == pytest.approx(model.measured_ms)
    first = len(counted)
    random_gates(gated, np.random.default_rng(0), closed_fraction=0.5)
    total, layers = model.parts()
    assert len(layers) == 4 and total > 0 and min(layers) > 0
    assert len(counted) > first  # the new counts were timed...
    keys = set()
    model.flush()
    for path in tmp_path.glob("*.json"):
        keys |= set(json.loads(path.read_text())["times"])
    kept = [gate.num_kept() for _, gate in kv.gates.gates(gated)]
    assert f"3,{kept[0]}" in keys, (kept, keys)  # conv a: 3 inputs, kept outputs
    before = len(counted)
    assert model.parts()[0] == total  # ...once
    assert len(counted) == before
    # A new model on the same cache times only the whole model (four times).
    again = latency_module.LatencyModel(gated, runs=3, cache_dir=tmp_path, verbose=0)
    assert len(counted) == before + 4
    ratios = [a / b for a, b in zip(again.parts()[1], layers)]
    assert ratios == pytest.approx([ratios[0]] * 4)  # the same layer times


def test_predictions_interpolate_four_measurements(tmp_path, monkeypatch):
    # Whole-model "measurements" as a function of the layers' summed time;
    # one latency model (its layers timed once), fitted again per curve.
    curve = ["line"]

    def time(layers):
        if curve[0] == "line":
            return 0.25 + 2.0 * layers
        if curve[0] == "convex":
            return 0.1 + 30.0 * layers**2
        return 1.0 - layers  # falling: noise, the last anchor kept alone

    def measure(self, masks=None):
        return time(self._predict(masks)[0])

    monkeypatch.setattr(latency_module.LatencyModel, "measure", measure)
    gated = conv_net()
    model = latency_module.LatencyModel(gated, runs=3, cache_dir=tmp_path, verbose=0)
    kept = [[int(m.sum()) for m in model._kept(s).values()] for s in (0.0, 0.25)]
    assert kept == [[0, 0], [16, 24]]  # of 64 and 96 units
    some = model._kept(0.375)
    layers = model._predict(some)[0]
    for name in ("line", "convex", "noisy"):
        curve[0] = name
        model._fit()
        sums = [a for a, _ in model.anchors]
        if name == "noisy":
            assert len(sums) == 1 and model.measured_ms == time(sums[0])
            assert model(some) == pytest.approx(time(sums[0]) * layers / sums[0])
            continue
        assert len(sums) == 4 and sums == sorted(sums), model.anchors
        for share in (0.0, 0.25, 0.5, None):  # each anchor exact
            masks = model._kept(share)
            assert model(masks) == pytest.approx(time(model._predict(masks)[0]))
        if name == "line":
            assert model(some) == pytest.approx(time(layers))
        else:  # between two anchors: on the chord, above the curve
            assert time(layers) < model(some) < time(sums[3])
        every = model._predict(None)[0]
        model.calibrate(2 * model())  # a slower machine: the anchor there moves
        assert model() == pytest.approx(2 * time(every))
        # A measurement under the anchor just below `some`'s sum, over the
        # one under that: that anchor contradicts it and goes, others stay.
        times = dict(model.anchors)
        below = [a for a in sorted(times) if a < layers]
        if below:
            floor = times[below[-2]] if len(below) > 1 else 0.0
            measured = (floor + times[below[-1]]) / 2
            model.calibrate(measured, some)
            assert model(some) == pytest.approx(measured)
            assert [a for a, _ in model.anchors] == sorted(
                [a for a in times if a != below[-1]] + [layers]
            )


@pytest.mark.slow
def test_closing_units_lowers_the_prediction(tmp_path):
    gated = conv_net()
    model = latency_module.LatencyModel(gated, runs=3, cache_dir=tmp_path, verbose=0)
    full = model()
    gate = dict(kv.gates.gates(gated))["b_gate"]
    mask = np.zeros(gate.units, bool)
    mask[:32] = True
    fewer = model({id(g): (mask if g is gate else g.kept_mask())
                   for _, g in kv.gates.gates(gated)})  # fmt: skip
    assert 0 < fewer < full
    model.calibrate(2 * fewer, {id(gate): mask})
    assert model({id(gate): mask}) == pytest.approx(2 * fewer)


@pytest.mark.slow
def test_a_latency_budget_is_met_in_a_real_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_VIB_CACHE", str(tmp_path))
    gated = conv_net()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 128)
    gated.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    plain = latency_module.LatencyModel(gated, verbose=0).measured_ms
    budget = kv.VIBBudget(
        target_latency=0.5 * plain, check_every=2, growth=1.5, verbose=0
    )
    with warnings.catch_warnings():  # (two epochs: the end may close more)
        warnings.simplefilter("ignore", UserWarning)
        gated.fit(x, y, batch_size=16, epochs=2, callbacks=[budget], verbose=0)
    assert budget.kind == "latency" and budget.unit_cost == "marginal"
    # Timed in LiteRT when training ended (the band itself is a benchmark's).
    assert budget.measured is not None and budget.value == budget.measured
    assert budget.measured < plain
    assert kv.compression_report(gated).flops < kv.compression_report(gated).total_flops


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target_latency": 0}, "target_latency=0"),
        ({"target_latency": -1.0}, "target_latency=-1.0"),
        ({"target_latency": "1"}, "target_latency='1'"),
        ({"target_latency": 1.0, "target_flops": 0.5}, "exactly one"),
        ({"target_latency": 1.0, "latency_threads": 0}, "latency_threads=0"),
        (
            {"target_latency": 1.0, "latency_quantization": "int4"},
            "latency_quantization='int4'",
        ),
    ],
)
def test_bad_latency_budgets(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kv.VIBBudget(**kwargs)


def test_bad_latency_model_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_threads=0"):
        latency_module.LatencyModel(conv_net(), num_threads=0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="quantization='int4'"):
        latency_module.LatencyModel(conv_net(), quantization="int4", cache_dir=tmp_path)


@pytest.mark.slow
def test_an_int8_model_is_measured_quantized(tmp_path, monkeypatch):
    converted = []
    to_tflite = latency_module.to_tflite

    def spy(model, quantization=None, **kwargs):
        converted.append((quantization, kwargs.get("representative_data")))
        return to_tflite(model, quantization, **kwargs)

    monkeypatch.setattr(latency_module, "to_tflite", spy)
    model = latency_module.LatencyModel(
        conv_net(), quantization="int8", runs=3, cache_dir=tmp_path, verbose=0
    )
    measured = [(q, data) for q, data in converted if q is not None]
    assert len(measured) == 4 and all(q == "int8" for q, _ in measured)
    assert measured[0][1].shape[1:] == (32, 32, 3)  # calibrated on random inputs
    assert model.measured_ms > 0 and model() == pytest.approx(model.measured_ms)
