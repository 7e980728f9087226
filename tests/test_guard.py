"""VIBGuard: pruning stops when the validation error rises over its best."""

import keras
import numpy as np
import pytest
from test_callbacks import kl_scales, make_data, make_model

from keras_vib import VIBGuard, VIBWarmup
from keras_vib.gates import gates


def _masks(model):
    return [gate.kept_mask() for _, gate in gates(model)]


def _started(model, **kwargs):
    guard = VIBGuard(verbose=0, **kwargs)
    guard.set_model(model)
    guard.on_train_begin()
    return guard


def test_a_rise_reopens_what_closed_since_and_eases_the_kl_pressure():
    model = make_model()
    guard = _started(model, max_error_increase=1.0, backoff=0.5, max_rises=2)
    fc1 = dict(gates(model))["fc1"]
    guard.on_epoch_begin(0)
    guard.on_epoch_end(0, {"val_accuracy": 0.90})  # 10 %: the best
    fc1.close(range(4))
    guard.on_epoch_end(1, {"val_accuracy": 0.895})  # 10.5 %: within 1 point
    kept = _masks(model)
    assert kept[1].sum() == 28
    fc1.close(range(4, 10))
    guard.on_epoch_end(2, {"val_accuracy": 0.88})  # 12 %: a rise
    assert guard.rises == [2] and not guard.stopped
    assert guard.best_error == pytest.approx(10.0)
    assert guard.best_epoch == 0 and guard.kept_epoch == 1
    assert guard.reopened == 6
    for now, then in zip(_masks(model), kept):
        np.testing.assert_array_equal(now, then)
    assert not any(gate.frozen for _, gate in gates(model))
    assert kl_scales(model) == [0.5, 0.5, 0.5] and guard.kl_factor == 0.5
    guard.on_epoch_begin(3)  # nobody else set the scale: left as it is
    assert kl_scales(model) == [0.5, 0.5, 0.5]
    # A warm-up before it sets its own scale each epoch: the factor goes on it.
    for _, gate in gates(model):
        gate.set_kl_scale(0.8)
    guard.on_epoch_begin(3)
    np.testing.assert_allclose(kl_scales(model), [0.4, 0.4, 0.4])
    # The second rise stops pruning: units back, gates frozen, KL off.
    fc1.close(range(10, 12))
    guard.on_epoch_end(3, {"val_accuracy": 0.85})
    assert guard.stopped and guard.stopped_epoch == 3 and guard.rises == [2, 3]
    assert guard.reopened == 8
    for now, then in zip(_masks(model), kept):
        np.testing.assert_array_equal(now, then)
    assert all(gate.frozen for _, gate in gates(model))
    assert kl_scales(model) == [0.0, 0.0, 0.0]
    for _, gate in gates(model):
        gate.set_kl_scale(1.0)
    guard.on_epoch_begin(4)  # a warm-up's scale is set back to 0
    assert kl_scales(model) == [0.0, 0.0, 0.0]
    # Once stopped, a later error changes nothing.
    guard.on_epoch_end(4, {"val_accuracy": 0.5})
    assert guard.stopped_epoch == 3 and guard.reopened == 8


def test_a_new_best_moves_the_margin():
    model = make_model()
    guard = _started(model, max_error_increase=2.0, max_rises=1, monitor="val_acc")
    for epoch, accuracy in enumerate([0.80, 0.95, 0.94, 0.935]):
        guard.on_epoch_end(epoch, {"val_acc": accuracy})
    assert not guard.rises
    assert guard.best_error == pytest.approx(5.0) and guard.best_epoch == 1
    # 8 %, 3 points over 5 %, but no unit closed: the training's own noise.
    guard.on_epoch_end(4, {"val_acc": 0.92})
    assert not guard.rises
    dict(gates(model))["fc2"].close([0])
    guard.on_epoch_end(5, {"val_acc": 0.92})
    assert guard.stopped and guard.kept_epoch == 3 and guard.reopened == 1


def test_fit_with_a_kl_weight_far_too_strong():
    """The KL term dwarfs the data term: unguarded, the net collapses; the
    guard stops pruning once the held-out error rises, and keeps more."""
    x, y = make_data(n=512)
    held_out = make_data(n=256, seed=1)

    def train(callbacks):
        model = make_model(kl_weight=0.1)
        model.compile(
            keras.optimizers.Adam(1e-2),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        history = model.fit(
            x,
            y,
            batch_size=32,
            epochs=12,
            validation_data=held_out,
            callbacks=callbacks,
            verbose=0,
        )
        kept = sum(int(mask.sum()) for mask in _masks(model))
        return 100 * (1 - history.history["val_accuracy"][-1]), kept

    free_error, free_kept = train([VIBWarmup(2)])
    guard = VIBGuard(max_error_increase=3.0, max_rises=1, verbose=0)
    guarded_error, guarded_kept = train([VIBWarmup(2), guard])
    assert guard.stopped
    assert guarded_kept > free_kept
    assert guarded_error < free_error
    assert guarded_error <= guard.best_error + 2 * guard.max_error_increase


def test_prints_one_line_when_it_stops(capsys):
    model = make_model()
    guard = VIBGuard(1.0, max_rises=2)
    guard.set_model(model)
    guard.on_train_begin()
    guard.on_epoch_end(0, {"val_accuracy": 0.9})
    dict(gates(model))["fc1"].close([0, 1])
    guard.on_epoch_end(1, {"val_accuracy": 0.8})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == (
        "VIBGuard: validation error 20.00% at epoch 2, more than 1 points over its "
        "best (10.00%, epoch 1): the units of epoch 1 back (2 reopened), KL "
        "pressure x0.25"
    )


def test_needs_the_validation_accuracy():
    guard = _started(make_model())
    with pytest.raises(ValueError, match="'val_accuracy'.*validation_data"):
        guard.on_epoch_end(0, {"accuracy": 0.9, "loss": 0.3})


def test_needs_gates():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    guard = VIBGuard()
    guard.set_model(model)
    with pytest.raises(ValueError, match="found no VIB gate"):
        guard.on_train_begin()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_error_increase": 0}, "max_error_increase=0"),
        ({"max_error_increase": "1"}, "max_error_increase='1'"),
        ({"monitor": ""}, "monitor=''"),
        ({"backoff": 1}, "backoff=1"),
        ({"backoff": 0}, "backoff=0"),
        ({"max_rises": 0}, "max_rises=0"),
        ({"verbose": -1}, "verbose=-1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VIBGuard(**kwargs)
