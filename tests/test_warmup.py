"""VIBWarmup: the KL weight ramps up from 0 over the first epochs."""

import numpy as np
import pytest
from test_callbacks import kl_scales, make_data, make_model, total_kl

import keras_vib as kv
from keras_vib import VIBMonitor, VIBWarmup


def test_kl_warmup_anneals_kl_scale_and_loss():
    x, y = make_data()
    # A large KL weight: the full KL term dwarfs the cross-entropy.
    model = make_model(kl_weight=1.0)
    full_kl = total_kl(model)
    assert full_kl > 100.0
    warmup, monitor = VIBWarmup(4), VIBMonitor(verbose=0)
    callbacks = [warmup, monitor]
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=callbacks)
    np.testing.assert_allclose(history.history["kl_scale"], [0.0, 0.25, 0.5])
    kl_log = history.history["kl"]
    assert kl_log[0] == 0.0
    assert kl_log[1] == pytest.approx(0.25 * full_kl, rel=0.05)
    assert kl_log[2] == pytest.approx(0.5 * full_kl, rel=0.05)
    # Epoch 0 trains on the data term alone; epoch 1 carries a quarter of KL.
    loss = history.history["loss"]
    assert loss[0] < 5.0
    assert loss[1] > 0.2 * full_kl
    # Training ends with the full KL weight.
    assert kl_scales(model) == [1.0, 1.0, 1.0]

    # A resumed fit continues the ramp from `initial_epoch`.
    history = model.fit(
        x,
        y,
        batch_size=32,
        initial_epoch=3,
        epochs=5,
        verbose=0,
        callbacks=callbacks,
    )
    np.testing.assert_allclose(history.history["kl_scale"], [0.75, 1.0])
    assert monitor.epoch == [3, 4]
    assert kl_scales(model) == [1.0, 1.0, 1.0]


@pytest.mark.tensorflow
def test_mirrored_strategy_warmup():
    import tensorflow as tf

    x, y = make_data(n=64)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = make_model()
    callbacks = [VIBWarmup(2), VIBMonitor(verbose=0)]
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=callbacks)
    np.testing.assert_allclose(history.history["kl_scale"], [0.0, 0.5, 1.0])
    assert history.history["kl"][0] == 0.0
    assert history.history["kl"][2] > 0.0
    assert kl_scales(model) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("epochs", [0, -1, 2.5, True, "3", None])
def test_bad_epochs(epochs):
    with pytest.raises(ValueError, match=f"epochs={epochs!r}"):
        VIBWarmup(epochs)


def test_a_model_without_gates_is_refused():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    x = np.zeros((8, 4), "float32")
    with pytest.raises(ValueError, match="no VIB gate"):
        model.fit(x, x[:, :2], epochs=1, verbose=0, callbacks=[kv.VIBWarmup(2)])
