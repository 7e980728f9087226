"""Training callbacks of keras_vib: monitoring, plotting and the progress bar."""

from __future__ import annotations

import logging
import math
import os

import keras
import numpy as np
from keras import ops

from keras_vib import _validate
from keras_vib import report as _report
from keras_vib.gates import gates_of_callback

__all__ = ["VIBMonitor", "VIBProgbarLogger"]

_logger = logging.getLogger("keras_vib")


def _print(message):
    """Print like Keras does: to stdout, or to the log when Keras logs."""
    if keras.config.is_interactive_logging_enabled():
        print(message, flush=True)
    else:
        _logger.info(message)


class VIBMonitor(keras.callbacks.Callback):
    """Monitors the compression of a VIB model during `fit`, and plots it.

    At the end of every epoch the monitor writes into the epoch `logs`:

    - `kept/<layer>`: the number of units kept by each gated layer (an int),
      named as in `keras_vib.report.gated_layers` and counted as
      `keras_vib.compression_report` counts them (so they make up the
      report's `structure`);
    - `r_w`, `r_n`: the fractions of weights and of neurons kept, in [0, 1];
    - `flops`: the multiply-accumulates of the pruned network;
    - `kl`: the sum of the gates' weighted KL terms, i.e. the KL part of the
      loss as it stands at the end of the epoch (a float).

    The `logs` dict is updated in place, so the callbacks that come after the
    monitor in the `callbacks` list, the `History` returned by `fit` and the
    progress bar all see these entries. Put the monitor *before*
    `keras.callbacks.CSVLogger` and `keras.callbacks.TensorBoard` in the
    list so that they record them too.

    The monitor also keeps its own record: `epoch` (the list of epoch
    indices), `history` (a dict mapping each key above to its list of
    per-epoch values) and `log_alpha` (a dict mapping each gated layer to a
    numpy array of its per-unit log alpha at the last epoch end). The record
    is reset at the start of every `fit`.

    The monitor only watches; the KL warm-up is `keras_vib.VIBWarmup`'s
    job (as tfmot keeps `UpdatePruningStep` apart from `PruningSummaries`).

    Args:
        plot_dir: optional directory (created if needed). When set, the
            monitor writes `kept_neurons.png` (see `plot_kept`) and
            `log_alpha.png` (see `plot_log_alpha`) there when training ends.
        verbose: integer >= 0. With a value > 0 the monitor prints one line
            per epoch, e.g. `VIB: r_W 12.30% r_N 40.10% FLOPs 1.2M KL 3.5
            structure 97-71-33`. The line is printed once Keras' progress bar
            has finished the epoch's line. 0 is silent.
        input_shape: for a model whose inputs have sizes left open
            (`keras.Input((None,))`), the reference size its FLOPs are
            counted at (the shape of one example, no batch axis); without
            one, the size of the training data where `add_gates` records it
            (`InputSize`), else such a model's epochs log no `flops`.

    Example:

    >>> monitor = keras_vib.VIBMonitor(plot_dir="vib_plots")
    >>> history = model.fit(
    ...     x, y, epochs=20,
    ...     callbacks=[keras_vib.VIBWarmup(5), monitor,
    ...                keras.callbacks.CSVLogger("train.csv")])
    >>> history.history["r_w"][-1]  # fraction of weights kept
    0.0359
    >>> monitor.plot_kept("kept.png")  # doctest: +SKIP
    """

    def __init__(
        self,
        plot_dir: str | os.PathLike | None = None,
        verbose: int = 1,
        input_shape=None,
    ):
        super().__init__()
        if plot_dir is not None and not isinstance(plot_dir, (str, os.PathLike)):
            raise ValueError(
                "Expected `plot_dir` to be None or a path (str or os.PathLike). "
                f"Received: plot_dir={plot_dir!r}"
            )
        self.plot_dir = plot_dir
        if isinstance(verbose, bool):
            verbose = int(verbose)
        self.verbose = _validate.integer("verbose", verbose, minimum=0)
        self.input_shape = input_shape
        self.epoch = []
        self.history = {}
        self.log_alpha = {}
        self._gates = None
        self._pending_message = None
        self._structure = None

    # -- model inspection -------------------------------------------------

    def _gated_layers(self):
        if self._gates is None:
            if self.model is None:
                raise ValueError(
                    "VIBMonitor has no model: use it as a callback of "
                    "`model.fit`, or call `set_model(model)` first."
                )
            gates = gates_of_callback(self.model, "VIBMonitor", "remove the monitor")
            names = [name for name, _ in gates]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(
                    "VIBMonitor needs unique gated layer names to name its "
                    f"`kept/<layer>` logs. Received duplicates: {duplicates}"
                )
            self._gates = gates
        return self._gates

    def _flush_message(self):
        if self._pending_message is not None:
            _print(self._pending_message)
            self._pending_message = None

    # -- callback hooks -------------------------------------------------

    def set_model(self, model):
        super().set_model(model)
        self._gates = None

    def on_train_begin(self, logs=None):
        self._gates = None
        self._gated_layers()
        self.epoch = []
        self.history = {}
        self.log_alpha = {}
        self._pending_message = None
        self._structure = None

    def on_epoch_begin(self, epoch, logs=None):
        self._flush_message()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            logs = {}
        gates = self._gated_layers()
        report = _report.compression_report(self.model, input_shape=self.input_shape)
        # Kept units as the report counts them (a unit none of whose
        # consumers is kept is dropped too), so that they add up to `r_n`.
        report_kept = {layer.name: int(layer.kept) for layer in report.layers}
        values = {}
        kl = 0.0
        for name, gate in gates:
            values[f"kept/{name}"] = report_kept.get(name, int(gate.num_kept()))
            kl += float(ops.convert_to_numpy(gate.kl_loss()))
            self.log_alpha[name] = np.asarray(
                ops.convert_to_numpy(gate.log_alpha()), dtype="float64"
            ).reshape(-1)
        values["r_w"] = float(report.r_w)
        values["r_n"] = float(report.r_n)
        if report.flops is not None:
            values["flops"] = int(round(float(report.flops)))
        values["kl"] = kl
        logs.update(values)

        self.epoch.append(int(epoch))
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)

        self._structure = report.structure
        if self.verbose:
            self._pending_message = _line(report, kl)

    def on_train_end(self, logs=None):
        if self.verbose and self.epoch:
            # What changed after the last epoch (VIBBudget's last closures)
            # replaces its line: the line printed last is never stale.
            report = _report.compression_report(
                self.model, input_shape=self.input_shape
            )
            if report.structure != self._structure:
                kl = sum(
                    float(ops.convert_to_numpy(gate.kl_loss()))
                    for _, gate in self._gated_layers()
                )
                self._pending_message = _line(report, kl) + " (end of training)"
        self._flush_message()
        if self.plot_dir is not None and self.epoch:
            os.makedirs(self.plot_dir, exist_ok=True)
            self.plot_kept(os.path.join(self.plot_dir, "kept_neurons.png"))
            self.plot_log_alpha(os.path.join(self.plot_dir, "log_alpha.png"))

    # -- plots ----------------------------------------------------------

    def _check_can_plot(self, method):
        if not self.epoch:
            raise ValueError(
                f"`VIBMonitor.{method}` needs at least one completed epoch, "
                "but none has ended yet: train with `model.fit(..., "
                "callbacks=[monitor])` first."
            )

    @staticmethod
    def _new_figure(width, height):
        try:
            from matplotlib.figure import Figure
        except ImportError as e:  # pragma: no cover
            raise ImportError(
                "VIBMonitor plots need matplotlib: `pip install matplotlib`."
            ) from e
        return Figure(figsize=(width, height), layout="constrained")

    @staticmethod
    def _save(figure, path):
        path = os.fspath(path)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        figure.savefig(path, dpi=100)

    def _panels(self, count, width, height):
        """A figure with `count` panels, at most 4 per row."""
        ncols = min(count, 4)
        nrows = math.ceil(count / ncols)
        figure = self._new_figure(width * ncols, height * nrows)
        return figure, [figure.add_subplot(nrows, ncols, i + 1) for i in range(count)]

    def plot_kept(self, path: str | os.PathLike):
        """Plots the kept units of each gated layer against the epoch.

        One panel per gated layer, each on its own scale from 0 to the
        layer's units (784 input pixels and 100 units would hide each
        other's changes on one axis); the x axis is the epoch number counted
        from 1, as Keras prints it.

        Args:
            path: file to write; the format follows its extension (`.png`,
                `.pdf`, `.svg`...). Missing parent directories are created.

        Returns:
            The `matplotlib.figure.Figure` that was saved.

        Example:

        >>> monitor.plot_kept("kept_neurons.png")  # doctest: +SKIP
        """
        self._check_can_plot("plot_kept")
        from matplotlib.ticker import MaxNLocator

        gates = self._gated_layers()
        figure, panels = self._panels(len(gates), 3.5, 2.8)
        epochs = [e + 1 for e in self.epoch]
        for axes, (name, gate) in zip(panels, gates):
            kept = self.history[f"kept/{name}"]
            axes.plot(epochs, kept, marker="o", markersize=3, color="tab:blue")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
            axes.set_ylim(0, gate.units * 1.05)
            axes.set_title(
                f"{name}: {int(kept[-1])}/{gate.units} kept", fontsize="medium"
            )
            axes.set_xlabel("epoch")
            axes.set_ylabel("kept units")
            axes.grid(True, alpha=0.3)
        figure.suptitle("Kept neurons / channels per gated layer")
        self._save(figure, path)
        return figure

    def plot_log_alpha(self, path: str | os.PathLike, bins: int = 50):
        """Plots a histogram of log alpha for each gated layer.

        One panel per gated layer, in the style of Figure 2 of Dai et al.
        (2018): the distribution of `log alpha = log(sigma^2 / mu^2)` over
        the layer's units at the last epoch end, with the pruning threshold
        as a vertical line: units to its right are pruned, the panel title
        counts the open ones (to its left).

        Args:
            path: file to write; the format follows its extension (`.png`,
                `.pdf`, `.svg`...). Missing parent directories are created.
            bins: positive integer, the number of histogram bins per panel.

        Returns:
            The `matplotlib.figure.Figure` that was saved.

        Example:

        >>> monitor.plot_log_alpha("log_alpha.png")  # doctest: +SKIP
        """
        bins = _validate.integer("bins", bins, minimum=1)
        self._check_can_plot("plot_log_alpha")
        from matplotlib.ticker import MaxNLocator

        gates = self._gated_layers()
        figure, panels = self._panels(len(gates), 3.5, 3.0)
        for axes, (name, gate) in zip(panels, gates):
            values = self.log_alpha[name]
            values = values[np.isfinite(values)]
            threshold = float(gate.threshold)
            kept = int(np.sum(values < threshold))
            axes.hist(values, bins=int(bins), color="tab:blue", alpha=0.8)
            axes.axvline(threshold, color="tab:red", linestyle="--", label="threshold")
            low, high = axes.get_xlim()
            axes.axvspan(
                threshold, max(high, threshold + 1), color="tab:red", alpha=0.1,
                label="pruned (right)",
            )  # fmt: skip
            axes.set_xlim(low, max(high, threshold + 1))
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
            axes.set_title(f"{name}: {kept}/{values.size} open", fontsize="medium")
            axes.set_xlabel("log alpha")
            axes.set_ylabel("units")
            axes.legend(loc="upper center", fontsize="small")
        epoch = self.epoch[-1] + 1
        figure.suptitle(f"log alpha per gated layer after epoch {epoch}")
        self._save(figure, path)
        return figure


def _line(report, kl):
    """The monitor's line: `VIB: r_W ... r_N ... FLOPs ... KL ... structure`."""
    flops = "?" if report.flops is None else _report.format_count(report.flops)
    return (
        f"VIB: r_W {100 * report.r_w:.2f}% r_N {100 * report.r_n:.2f}% "
        f"FLOPs {flops} KL {kl:.4g} structure {report.structure}"
    )


class VIBProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras's progress bar without `VIBMonitor`'s counts.

    Keras's `ProgbarLogger` prints every log entry as a float with four
    decimals (`kept/fc1: 300.0000 - flops: 8434.0000`). This one leaves out
    the counts `VIBMonitor` writes into the epoch logs (`kept/<layer>` and
    `flops`), which the monitor's own line already shows as whole numbers
    (with `verbose` > 0); the fractions (`r_w`, `r_n`), the KL, the loss
    and the metrics stay in the bar. `History`, `CSVLogger` and
    `TensorBoard` still get every entry: only the bar's copy is trimmed.
    Keras uses a `ProgbarLogger` found in `callbacks` in place of its own,
    with `fit`'s `verbose`.

    Example:

    >>> model.fit(
    ...     train_ds,
    ...     epochs=20,
    ...     callbacks=[keras_vib.VIBMonitor(), keras_vib.VIBProgbarLogger()],
    ... )
    """

    @staticmethod
    def _trim(logs):
        if logs is None:
            return None
        return {
            key: value
            for key, value in logs.items()
            if not (key.startswith("kept/") or key == "flops")
        }

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._trim(logs))
