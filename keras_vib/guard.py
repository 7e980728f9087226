"""A guard on the validation error: pruning stops before it costs accuracy."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_vib import _validate
from keras_vib.gates import gates_of_callback

__all__ = ["VIBGuard"]


class VIBGuard(keras.callbacks.Callback):
    """Eases, then stops, pruning when the validation error rises over its best.

    At the end of every epoch it reads the validation accuracy of the
    epoch logs (so `fit` needs `validation_data`; use data held out from
    the training set, not the test set you report on) and turns it into an
    error in %. While that error stays within `max_error_increase` points
    of the lowest seen so far, it remembers which units each gate keeps.
    An epoch whose error goes past that margin, with units closed since the
    last epoch within it, is a rise (a rise with none closed is left to the
    training): those units reopen and the KL pressure is multiplied by
    `backoff` from then on (on top of a warm-up's scale). The `max_rises`-th
    rise stops the pruning: the units reopen, every gate is frozen
    (`VIBGate.freeze`: noise off, kept units fixed) and the KL terms are
    switched off (`kl_scale` 0), so the epochs left train the pruned network
    back. Stopped gates stay frozen after training (`gate.unfreeze()` and a
    KL scale of 1 resume pruning).

    A safe default for a model and data whose KL weight was never tuned:
    a KL weight too strong for the data prunes until the net collapses;
    with the guard it prunes only as far as the data allows. Put it after
    `VIBWarmup` in the callbacks (it scales the warm-up's KL scale); do not
    combine it with `VIBBudget`, which sets the size and the KL scale
    itself.

    Args:
        max_error_increase: float > 0, the rise of the validation error in
            percentage points (over its lowest so far) that counts.
        backoff: float in (0, 1), the factor on the KL pressure at each
            rise before the last.
        max_rises: positive int, the rise that stops pruning (1: the first).
        monitor: the accuracy entry of the epoch logs to watch
            (`"val_accuracy"`, or the name of another accuracy metric).
        verbose: 0 or 1; 1 prints one line at each rise.

    Attributes:
        best_error: the lowest validation error seen, in %.
        best_epoch: the epoch (from 0) it was seen at.
        rises: the epochs of the rises.
        kl_factor: the factor the rises have put on the KL pressure.
        stopped_epoch: the epoch at whose end pruning stopped, or None.
        kept_epoch: the epoch whose kept units the last rise restored.
        reopened: the number of units the rises reopened.

    Example:

    >>> model.fit(train, validation_data=held_out, epochs=20, callbacks=[
    ...     keras_vib.VIBWarmup(2), keras_vib.VIBGuard(1.0)])
    """

    def __init__(
        self,
        max_error_increase: float = 1.0,
        backoff: float = 0.25,
        max_rises: int = 3,
        monitor: str = "val_accuracy",
        verbose: int = 1,
    ):
        super().__init__()
        self.max_error_increase = _validate.number(
            "max_error_increase", max_error_increase, low=0, low_open=True
        )
        self.backoff = _validate.number(
            "backoff", backoff, low=0, high=1, low_open=True, high_open=True
        )
        self.max_rises = _validate.integer("max_rises", max_rises, minimum=1)
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(
                "Expected `monitor` to be the name of an accuracy in the epoch "
                f"logs, such as 'val_accuracy'. Received: monitor={monitor!r}"
            )
        self.monitor = monitor
        self.verbose = _validate.integer("verbose", verbose, minimum=0)
        self._gates = None
        self._reset()

    def _reset(self):
        self.best_error = None
        self.best_epoch = None
        self.rises = []
        self.kl_factor = 1.0
        self.stopped_epoch = None
        self.kept_epoch = None
        self.reopened = 0
        self._kept = None
        self._scale = None  # the KL scale last set here

    @property
    def stopped(self) -> bool:
        """Whether pruning has stopped."""
        return self.stopped_epoch is not None

    def _get_scale(self):
        return float(ops.convert_to_numpy(self._gates[0][1].kl_scale))

    def _set_scale(self, value):
        for _, gate in self._gates:
            gate.set_kl_scale(value)
        self._scale = self._get_scale()  # as the variable holds it

    def on_train_begin(self, logs=None):
        self._gates = gates_of_callback(self.model, "VIBGuard")
        self._reset()

    def on_epoch_begin(self, epoch, logs=None):
        if self.stopped:  # after any warm-up's own setting
            self._set_scale(0.0)
        elif self.rises and self._get_scale() != self._scale:
            # A warm-up has set its scale since: the rises' factor on it.
            self._set_scale(self._get_scale() * self.kl_factor)

    def _error(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(
                f"VIBGuard watches {self.monitor!r}, which the epoch logs do not "
                "have: pass `validation_data` to `fit` (held-out training "
                "examples), or name another accuracy with `monitor=`. "
                f"Received: logs with {sorted(logs or {})}"
            )
        return 100.0 * (1.0 - float(value))

    def on_epoch_end(self, epoch, logs=None):
        error = self._error(logs)
        if self.stopped:
            return
        if self.best_error is None or error < self.best_error:
            self.best_error, self.best_epoch = error, epoch
        kept = [gate.kept_mask() for _, gate in self._gates]
        if error <= self.best_error + self.max_error_increase:
            self._kept, self.kept_epoch = kept, epoch
        elif any(np.any(then & ~now) for then, now in zip(self._kept, kept)):
            self._rise(epoch, error)
        # (A rise with no unit closed since is the training's own noise.)

    def _rise(self, epoch, error):
        """Reopens the units closed since the last epoch within the margin;
        eases the KL pressure, or at the last rise freezes the gates and
        switches the KL terms off."""
        self.rises.append(epoch)
        reopened = 0
        for (_, gate), kept in zip(self._gates, self._kept):
            reopened += int(np.sum(kept & ~gate.kept_mask()))
            gate.set_kept(kept)
        self.reopened += reopened
        if len(self.rises) >= self.max_rises:
            self.stopped_epoch = epoch
            for _, gate in self._gates:
                gate.freeze()
            self._set_scale(0.0)
            then = "pruning stops"
        else:
            self.kl_factor *= self.backoff
            self._set_scale(self._get_scale() * self.backoff)
            then = f"KL pressure x{self.backoff:g}"
        if self.verbose:
            print(
                f"VIBGuard: validation error {error:.2f}% at epoch {epoch + 1}, "
                f"more than {self.max_error_increase:g} points over its best "
                f"({self.best_error:.2f}%, epoch {self.best_epoch + 1}): the "
                f"units of epoch {self.kept_epoch + 1} back ({reopened} "
                f"reopened), {then}",
                flush=True,
            )
