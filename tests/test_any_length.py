"""Models whose inputs have sizes left open (issue 25, item 1): a text
model of any length, an image model of any size."""

import keras
import numpy as np
import pytest
from helpers import assert_close, random_gates

import keras_vib as kv

L = keras.layers


def text_model():
    inputs = keras.Input((None,), dtype="int32", name="tokens")
    x = L.Embedding(50, 8, name="embed")(inputs)
    x = L.Conv1D(16, 3, activation="relu", name="conv")(x)
    x = L.GlobalMaxPooling1D()(x)
    return keras.Model(inputs, L.Dense(2, name="out")(x))


def image_model(size=None):
    inputs = keras.Input((size, size, 3))
    x = L.Conv2D(8, 3, activation="relu", name="c1")(inputs)
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(2, name="out")(x))


def tokens(rng, length, n=3):
    return rng.integers(0, 50, (n, length)).astype("int32")


def test_text_model_of_any_length_gates_slims_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    model = text_model()
    gated = kv.add_gates(model)
    # The embedding's columns are units too (a gate after the table).
    assert [name for name, _ in kv.gates.gates(gated)] == ["embed_gate", "conv_gate"]
    for length in (7, 12):
        x = tokens(rng, length)
        assert_close(gated(x), model(x))
    columns, kept = random_gates(gated, rng)
    slim = kv.slim_model(gated)
    assert slim.get_layer("embed").output_dim == columns.sum() < 8
    assert slim.get_layer("conv").filters == kept.sum() < 16
    for length in (5, 12):
        x = tokens(rng, length)
        assert_close(slim(x), gated(x))
    assert slim.count_params() == kv.compression_report(gated).kept_params
    path = tmp_path / "slim.keras"
    slim.save(path)
    x = tokens(rng, 9)
    assert_close(keras.models.load_model(path)(x), gated(x))


def test_flops_need_a_reference_size():
    rng = np.random.default_rng(1)
    gated = kv.add_gates(text_model())
    columns, kept = random_gates(gated, rng)
    report = kv.compression_report(gated)
    assert report.flops is None and report.total_flops is None
    assert "input_shape=" in str(report)
    # The embedding table counts its kept columns (a kernel of 50 rows).
    c, k = columns.sum(), kept.sum()
    assert report.kept_weights == 50 * c + 3 * c * k + k * 2
    at_12 = kv.compression_report(gated, input_shape=(12,))
    # Conv1D 'valid' over 12 tokens: 10 positions.
    assert at_12.flops == 10 * 3 * c * k + k * 2
    assert at_12.total_flops == 10 * 3 * 8 * 16 + 16 * 2
    assert at_12.kept_weights == report.kept_weights


def test_an_image_model_of_any_size_counts_as_at_its_reference_size():
    rng = np.random.default_rng(2)
    model = image_model()
    gated = kv.add_gates(model)
    random_gates(gated, rng)
    slim = kv.slim_model(gated)
    for size in (9, 16):
        x = rng.normal(size=(2, size, size, 3)).astype("float32")
        assert_close(slim(x), gated(x))
    fixed = image_model(16)
    fixed.set_weights(model.get_weights())
    fixed_gated = kv.add_gates(fixed)
    for layer in fixed_gated.layers:  # (the open model has an InputSize more)
        if not layer.weights:
            continue
        layer.set_weights(gated.get_layer(layer.name).get_weights())
    expected = kv.compression_report(fixed_gated)
    got = kv.compression_report(gated, input_shape=(16, 16, 3))
    assert (got.flops, got.total_flops) == (expected.flops, expected.total_flops)
    assert got.kept_params == expected.kept_params


@pytest.mark.parametrize("input_shape", [(12, 1), (0,), ("12",), [(12,), (12,)], 12])
def test_a_bad_reference_size_is_refused_by_name(input_shape):
    with pytest.raises(ValueError, match="input_shape="):
        kv.compression_report(text_model(), input_shape=input_shape)


def test_a_fixed_size_must_be_kept():
    with pytest.raises(ValueError, match=r"input_shape=\(8, 8, 3\)"):
        kv.compression_report(image_model(16), input_shape=(8, 8, 3))


def _fit(model, callbacks, rng, epochs=2):
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = tokens(rng, 12, n=64), rng.integers(0, 2, 64)
    return model.fit(x, y, batch_size=16, epochs=epochs, callbacks=callbacks, verbose=0)


def test_the_size_of_the_training_data_is_recorded():
    rng = np.random.default_rng(5)
    model = image_model()
    gated = kv.add_gates(model)
    (size,) = [la for la in gated.layers if isinstance(la, kv.layers.InputSize)]
    assert size.recorded() is None
    assert kv.compression_report(gated).flops is None
    x = rng.normal(size=(4, 11, 9, 3)).astype("float32")
    gated(x)  # inference records nothing
    assert size.recorded() is None
    gated.compile("adam", "mse")
    gated.fit(x, np.zeros((4, 2)), epochs=1, verbose=0)
    assert size.recorded() == (11, 9, 3)
    report = kv.compression_report(gated)
    assert report.input_shape == [(11, 9, 3)]
    assert "at input size (11, 9, 3)" in str(report)
    at = kv.compression_report(gated, input_shape=(11, 9, 3))
    assert (report.flops, report.total_flops) == (at.flops, at.total_flops)
    slim = kv.slim_model(gated)  # leaves the recorder out
    assert not any(isinstance(layer, kv.layers.InputSize) for layer in slim.layers)
    assert_close(slim(x), gated(x))
    against = kv.compression_report(slim, reference=gated)
    assert against.flops == report.flops
    # A model without open sizes has no recorder.
    assert not any(
        isinstance(layer, kv.layers.InputSize)
        for layer in kv.add_gates(image_model(16)).layers
    )


def test_monitor_logs_flops_at_the_reference_size():
    rng = np.random.default_rng(3)
    history = _fit(kv.add_gates(text_model()), [kv.VIBMonitor(verbose=0)], rng)
    assert "r_w" in history.history
    # Counted at the 12 tokens it trained on (recorded), or as given.
    assert 0 < history.history["flops"][-1] <= 10 * 3 * 8 * 16 + 16 * 2
    monitor = kv.VIBMonitor(verbose=0, input_shape=(20,))
    history = _fit(kv.add_gates(text_model()), [monitor], rng)
    assert 10 * 3 * 8 * 16 < history.history["flops"][0] <= 18 * 3 * 8 * 16 + 32


def _hand_gated():
    """A model of any length gated by hand: nothing records its size."""
    inputs = keras.Input((None,), dtype="int32")
    x = L.Conv1D(16, 3)(L.Embedding(50, 8)(inputs))
    x = kv.VIBDense(8, kl_weight=1e-3)(L.GlobalMaxPooling1D()(x))
    return keras.Model(inputs, L.Dense(2)(x))


def test_without_a_record_flops_need_a_reference_size():
    rng = np.random.default_rng(3)
    history = _fit(_hand_gated(), [kv.VIBMonitor(verbose=0)], rng)
    assert "flops" not in history.history and "r_w" in history.history
    with pytest.raises(ValueError, match="Received: input_shape=None"):
        _fit(_hand_gated(), [kv.VIBBudget(target_flops=0.5)], rng)


@pytest.mark.filterwarnings("ignore:VIBBudget")  # 3 epochs: closed at the end
def test_budget_on_a_model_of_any_length():
    rng = np.random.default_rng(4)
    # The reference size from the data: the first step records it.
    gated = kv.add_gates(text_model(), kl_weight=1e-2)
    budget = kv.VIBBudget(target_flops=0.5, verbose=0)
    _fit(gated, [budget], rng, epochs=3)
    assert budget.target == (10 * 3 * 8 * 16 + 16 * 2) // 2
    assert kv.compression_report(gated).flops <= budget.target
    gated = kv.add_gates(text_model(), kl_weight=1e-2)
    budget = kv.VIBBudget(target_flops=0.5, input_shape=(12,), verbose=0)
    _fit(gated, [budget], rng, epochs=3)
    report = kv.compression_report(gated, input_shape=(12,))
    assert report.flops <= budget.target == (10 * 3 * 8 * 16 + 16 * 2) // 2
    params = kv.VIBBudget(target_params=0.6, verbose=0)
    gated = kv.add_gates(text_model(), kl_weight=1e-2)
    _fit(gated, [params], rng, epochs=3)
    assert kv.compression_report(gated).kept_params <= params.target
