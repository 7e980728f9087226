"""KL warm-up: the KL term's weight ramps up over the first epochs."""

from __future__ import annotations

import keras
from keras import ops

from keras_vib import _validate
from keras_vib.gates import gates_of_callback

__all__ = ["VIBWarmup"]


class VIBWarmup(keras.callbacks.Callback):
    """Ramps the KL term of a VIB model up from 0 over the first epochs.

    At the beginning of epoch `e` it sets the `kl_scale` variable of every
    gate of the model to `min(1, e / epochs)`: the KL term is off at epoch 0
    and reaches its full weight (the gates' `kl_weight`) at epoch `epochs`,
    so that the network learns its task before the gates start to close.
    `kl_scale` is a variable, so this needs no retracing of the train step.
    It is set back to 1 when training ends. The epoch index counts from
    `initial_epoch`, so a resumed `fit` continues the ramp. The epoch logs
    get `kl_scale` (put the callback before `CSVLogger` or `TensorBoard` to
    record it).

    Use it or `VIBBudget`, not both: the budget sets `kl_scale` itself.

    Args:
        epochs: positive integer, the epochs over which the KL weight grows
            linearly from 0 to its full value.

    Example:

    >>> model.fit(x, y, epochs=20, callbacks=[
    ...     keras_vib.VIBWarmup(5), keras_vib.VIBMonitor()])
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = _validate.integer("epochs", epochs, minimum=1)
        self._gates = None

    def _set_scale(self, value):
        for _, gate in self._gates:
            gate.set_kl_scale(value)

    def on_train_begin(self, logs=None):
        self._gates = gates_of_callback(self.model, "VIBWarmup")

    def on_epoch_begin(self, epoch, logs=None):
        self._set_scale(min(1.0, float(epoch) / self.epochs))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_scale"] = float(ops.convert_to_numpy(self._gates[0][1].kl_scale))

    def on_train_end(self, logs=None):
        self._set_scale(1.0)
