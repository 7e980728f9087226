"""Tests of `keras_vib.callbacks.VIBMonitor`."""

import csv
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_vib.callbacks import VIBMonitor, VIBProgbarLogger
from keras_vib.layers import VIBDense, VIBGate
from keras_vib.report import compression_report, gated_layers

GATED = ("input_gate", "fc1", "fc2")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_data(n=128, features=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0.5).astype("int32")
    return x, y.clip(0, classes - 1)


def make_model(kl_weight=1e-3, partly_pruned=False, seed=0):
    """16 -> gate -> VIBDense 32 -> VIBDense 16 -> Dense 3.

    With `partly_pruned`, the gates start with log_sigma2 = 0 and
    mu ~ U(-1.5, 1.5), so about two thirds of their units are pruned.
    """
    keras.utils.set_random_seed(seed)
    gate_args = {"kl_weight": kl_weight}
    if partly_pruned:
        gate_args["mu_initializer"] = keras.initializers.RandomUniform(
            -1.5, 1.5, seed=seed
        )
        gate_args["log_sigma2_initializer"] = "zeros"
    model = keras.Sequential(
        [
            keras.Input((16,)),
            VIBGate(name="input_gate", **gate_args),
            VIBDense(32, activation="relu", name="fc1", **gate_args),
            VIBDense(16, activation="relu", name="fc2", **gate_args),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
    )
    return model


def gates(model):
    """`(name, VIBGate)` for each gated layer of `model`."""
    return [
        (name, getattr(layer, "gate", layer)) for name, layer in gated_layers(model)
    ]


def total_kl(model):
    return sum(float(ops.convert_to_numpy(gate.kl_loss())) for _, gate in gates(model))


def kl_scales(model):
    return [float(ops.convert_to_numpy(gate.kl_scale)) for _, gate in gates(model)]


def assert_png(path):
    assert os.path.isfile(path)
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5000


def test_logs_in_history_csv_and_consistent_with_report(tmp_path):
    x, y = make_data()
    model = make_model(partly_pruned=True)
    monitor = VIBMonitor(verbose=0)
    csv_path = tmp_path / "log.csv"
    epochs = 3
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=epochs,
        verbose=0,
        callbacks=[monitor, keras.callbacks.CSVLogger(str(csv_path))],
    )
    keys = [f"kept/{name}" for name in GATED] + ["r_w", "r_n", "flops", "kl"]
    for key in keys:
        assert len(history.history[key]) == epochs, key
        assert monitor.history[key] == history.history[key], key
    assert "kl_scale" not in history.history
    assert monitor.epoch == list(range(epochs))
    for name in GATED:
        assert all(isinstance(v, int) for v in history.history[f"kept/{name}"])

    # The CSV file has the same columns and values.
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == epochs
    for key in keys:
        logged = [float(row[key]) for row in rows]
        np.testing.assert_allclose(logged, history.history[key], rtol=1e-6)

    # The last epoch's values match the model as it is after training.
    report = compression_report(model)
    last = {key: values[-1] for key, values in history.history.items()}
    assert [layer.name for layer in report.layers] == list(GATED)
    for layer in report.layers:
        assert last[f"kept/{layer.name}"] == layer.kept
    assert "-".join(str(last[f"kept/{name}"]) for name in GATED) == report.structure
    assert 0.0 < last["r_w"] < 1.0  # partly pruned, so strictly inside
    assert 0.0 < last["r_n"] < 1.0
    assert last["r_w"] == pytest.approx(report.r_w)
    assert last["r_n"] == pytest.approx(report.r_n)
    assert last["flops"] == pytest.approx(report.flops)
    assert last["kl"] == pytest.approx(total_kl(model), rel=1e-5)
    assert last["kl"] > 0.0

    # Last log alpha per layer is kept, one value per unit.
    for name, gate in gates(model):
        alpha = monitor.log_alpha[name]
        assert alpha.shape == (gate.units,)
        np.testing.assert_array_equal(alpha < gate.threshold, gate.kept_mask())


def tensorboard_scalars(log_dir):
    """`{tag: [values by step]}` of the scalars in a TensorBoard log folder."""
    import tensorflow as tf

    scalars = {}
    for root, _, files in os.walk(log_dir):
        for name in sorted(f for f in files if "tfevents" in f):
            for record in tf.data.TFRecordDataset(os.path.join(root, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name == "scalars":
                        number = float(tf.make_ndarray(value.tensor))
                        scalars.setdefault(value.tag, []).append(number)
    return scalars


def test_tensorboard_records_the_monitor_logs(tmp_path):
    x, y = make_data()
    model = make_model(partly_pruned=True)
    monitor = VIBMonitor(verbose=0)
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[monitor, keras.callbacks.TensorBoard(str(tmp_path))],
    )
    scalars = tensorboard_scalars(tmp_path / "train")
    keys = [f"kept/{name}" for name in GATED] + ["r_w", "r_n", "flops", "kl"]
    for key in keys:
        np.testing.assert_allclose(
            scalars[f"epoch_{key}"], history.history[key], rtol=1e-6, err_msg=key
        )


def test_kl_warmup_epochs_is_gone():
    # Removed after its deprecation: the warm-up is `VIBWarmup`'s job.
    with pytest.raises(TypeError, match="kl_warmup_epochs"):
        VIBMonitor(kl_warmup_epochs=2)


def test_plots_written(tmp_path):
    x, y = make_data()
    model = make_model(partly_pruned=True)
    plot_dir = tmp_path / "plots" / "run"
    monitor = VIBMonitor(plot_dir=str(plot_dir), verbose=0)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[monitor])
    assert_png(plot_dir / "kept_neurons.png")
    assert_png(plot_dir / "log_alpha.png")

    figure = monitor.plot_kept(tmp_path / "kept.png")
    assert_png(tmp_path / "kept.png")
    # One panel per layer, each on its own scale: 0 to the layer's units.
    assert len(figure.axes) == len(GATED)
    for axes, (name, layer) in zip(figure.axes, gated_layers(model)):
        units = layer.gate.units if hasattr(layer, "gate") else layer.units
        assert axes.get_title().startswith(f"{name}: ")
        assert axes.get_title().endswith(f"/{units} kept")
        assert axes.get_ylim()[0] == 0 and units <= axes.get_ylim()[1] < 1.1 * units
        assert all(float(t).is_integer() for t in axes.get_yticks())
    figure = monitor.plot_log_alpha(tmp_path / "alpha.png", bins=20)
    assert_png(tmp_path / "alpha.png")
    assert len(figure.axes) == len(GATED)
    for axes in figure.axes:
        assert all(float(t).is_integer() for t in axes.get_yticks())
        labels = axes.get_legend_handles_labels()[1]
        assert labels == ["threshold", "pruned (right)"]


def test_plot_before_any_epoch_raises():
    monitor = VIBMonitor()
    monitor.set_model(make_model())
    with pytest.raises(ValueError, match="plot_kept.*epoch"):
        monitor.plot_kept("never.png")
    with pytest.raises(ValueError, match="plot_log_alpha.*epoch"):
        monitor.plot_log_alpha("never.png")
    assert not os.path.exists("never.png")


def test_verbose_prints_one_line_per_epoch(capsys):
    x, y = make_data(n=64)
    model = make_model()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[VIBMonitor(verbose=1)])
    lines = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("VIB:")
    ]
    assert len(lines) == 2
    assert "r_W" in lines[0] and "r_N" in lines[0] and "FLOPs" in lines[0]
    assert "structure 16-32-16" in lines[0]

    model.fit(x, y, epochs=2, verbose=0, callbacks=[VIBMonitor(verbose=0)])
    assert "VIB:" not in capsys.readouterr().out


@pytest.mark.parametrize("verbose", [1, 2])
def test_progbar_logger_leaves_the_counts_to_the_monitor(capsys, verbose):
    """Keras's bar prints `kept/fc1: 32.0000`; `VIBProgbarLogger` leaves
    the counts out of the bar (the monitor's line has them as integers),
    while History still gets them."""
    x, y = make_data(n=64)
    model = make_model()
    model.fit(x, y, epochs=1, verbose=verbose, callbacks=[VIBMonitor(verbose=1)])
    assert "kept/fc1:" in capsys.readouterr().out  # Keras's own bar
    history = model.fit(
        x,
        y,
        epochs=2,
        verbose=verbose,
        callbacks=[VIBMonitor(verbose=1), VIBProgbarLogger()],
    )
    out = capsys.readouterr().out
    assert "kept/" not in out and "flops:" not in out
    assert "r_w:" in out and "loss:" in out  # the rest of the bar stays
    assert "structure 16-32-16" in out  # the monitor's line
    assert history.history["kept/fc1"] == [32, 32]
    assert "flops" in history.history


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"verbose": -1}, "verbose"),
        ({"verbose": "1"}, "verbose"),
        ({"plot_dir": 3}, "plot_dir"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
        VIBMonitor(**kwargs)


def test_bad_bins_raises(tmp_path):
    monitor = VIBMonitor()
    with pytest.raises(ValueError, match="`bins`.*Received: bins=0"):
        monitor.plot_log_alpha(tmp_path / "a.png", bins=0)


def test_model_without_gates_raises():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((8, 4), "float32")
    with pytest.raises(ValueError, match="no VIB gate"):
        model.fit(x, np.zeros((8, 2)), epochs=1, verbose=0, callbacks=[VIBMonitor()])


def test_the_last_line_is_never_stale(capsys):
    """The budget closes units when training ends (after the monitor's last
    epoch line): the monitor's last line says what the model is then."""
    import warnings

    import keras_vib as kv

    model = make_model(kl_weight=0.0)  # no KL pressure: only the end cuts
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = make_data()
    budget = kv.VIBBudget(target_flops=0.3, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the budget's closures
        model.fit(x, y, epochs=1, callbacks=[budget, VIBMonitor()], verbose=0)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("VIB:")]
    structure = compression_report(model).structure
    assert budget.adjusted > 0
    assert lines[-1].endswith(f"structure {structure} (end of training)")
