"""Compress to a budget: steer the KL pressure until the model fits it."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_vib import _validate, graph
from keras_vib import report as _report
from keras_vib.deploy.convert import QUANTIZATIONS
from keras_vib.gates import gates as _gates_of
from keras_vib.gates import recorded_input_shape, records_input_size, rounded_mask
from keras_vib.handlers.base import positions
from keras_vib.latency import LatencyModel

__all__ = ["VIBBudget"]

_KINDS = ("flops", "params", "latency")
_UNIT_COSTS = ("auto", "shared", "marginal")
_MORE_TRIALS = 128  # units tried one by one past the reopened prefix
_MARGIN = 5.0  # nats of log alpha `_freeze` puts between a unit and the threshold


def _changed(masks, changes, close):
    """A copy of `masks` with the units `changes` (`(gate, index)` pairs)
    closed (or reopened)."""
    out = dict(masks)
    for gate, j in changes:
        key = id(gate)
        if out[key] is masks[key]:
            out[key] = masks[key].copy()
        out[key][j] = not close
    return out


class _Cost:
    """A model's FLOPs or slim parameters for any kept masks of its gates.

    The graph is analysed once (`graph.Structure`); each question is then
    a pass over arrays.
    """

    def __init__(self, model, kind, input_shape=None):
        self.structure = graph.Structure(model, input_shape)
        self.params = kind == "params"

    def __call__(self, masks=None):
        return self.parts(masks)[0]

    def parts(self, masks=None):
        """The total, and each kernel layer's share of it (its kept kernel
        weights, or its FLOPs), in graph order."""
        analysis = graph.analyze(self.structure, masks, folds=self.params)
        report = _report.measure(analysis, params=self.params)
        layers = [
            (w.kept_weights if self.params else w.flops) or 0
            for w in report.weight_layers
        ]
        return (report.kept_params if self.params else report.flops), layers

    def total_flops(self):
        """The FLOPs of the model with every unit kept (None: unknown)."""
        analysis = graph.analyze(self.structure, folds=False)
        return _report.measure(analysis, params=False).total_flops

    def positions(self, gate):
        """The positions a gate scales its KL term by: its own, or for sizes
        left open those of the graph's reference size (1 without one)."""
        if gate.positions is not None:
            return gate.positions
        graph_ = self.structure.graph
        for i, g in self.structure.gates.items():
            if g is gate:
                at = positions(graph_.shapes[graph_.nodes[i].outputs[0]])
                return 1 if at is None else at
        return 1


class _LatencyCost(_Cost):
    """A model's predicted LiteRT latency (ms) for any kept masks
    (`keras_vib.latency.LatencyModel`), with `_Cost`'s questions."""

    def __init__(self, model, input_shape, num_threads, quantization, verbose):
        self.model = LatencyModel(
            model,
            input_shape,
            num_threads=num_threads,
            quantization=quantization,
            verbose=verbose,
        )
        self.structure = self.model.structure
        self.params = False

    def parts(self, masks=None):
        return self.model.parts(masks)


def _check_budget(name, value):
    """A fraction in (0, 1), or a whole count >= 1."""
    ok = _validate.is_real(value) and (
        0 < value < 1 or (value >= 1 and float(value).is_integer())
    )
    if not ok:
        raise ValueError(
            f"Expected `{name}` to be a fraction in (0, 1) of the original "
            f"model or a whole count >= 1. Received: {name}={value!r}"
        )
    return float(value) if value < 1 else int(value)


class VIBBudget(keras.callbacks.Callback):
    """Steers the KL pressure of a VIB model so that it lands on a budget.

    Name the budget in multiply-accumulates (`target_flops`) or in
    parameters of the slim model (`target_params`), as a fraction of the
    model when training starts (`0.05`) or as a count (`90000`), or in
    milliseconds of LiteRT time (`target_latency`), instead of a KL weight.
    The callback sets the gates' `kl_scale` itself: it follows
    a plan that shrinks the model geometrically to the budget over the first
    `pruning_end` of the training steps, with each gate's share of the
    pressure set by what its units cost. Once the budget is reached it fills
    it, then freezes the gates (no KL term, no noise) so that the remaining
    epochs train the pruned model; when training ends the model is at or
    under the budget and fills at least `min_fraction` of it. README,
    "Compress to a budget", says how and why. Use it instead of
    `VIBWarmup`; the epoch logs get `budget` (size over budget) and
    `kl_scale`.

    Args:
        target_flops: the budget in multiply-accumulates per example.
        target_params: the budget in parameters of the slim model. Give
            exactly one of the two.
        pruning_end: float in (0, 1], the share of the training steps by
            which the plan reaches the budget.
        initial_kl: float > 0, the KL term in nats per example with which
            training starts; None keeps the gates' `kl_scale`.
        cost_aware: bool, weight each gate's KL term by what one of its
            units costs in the budget (True) or by its `kl_weight` (False).
        unit_cost: with `cost_aware`, what a unit costs: `"marginal"`
            (what closing one more unit saves), `"shared"` (each layer's
            cost split evenly among the kept units of the gates that size
            it: a weight between two gated layers is paid for by both
            sides), or `"auto"`: shared for a parameter budget, marginal
            for a FLOPs budget (README, "Compress to a budget", says why).
        cost_power: `"auto"` or a float in [0, 1], with `cost_aware`: a
            unit's pressure goes as its cost to this power; `"auto"`: 1
            unless the units' costs spread over more than
            `max_pressure_ratio`, else the power that brings them to it.
        max_pressure_ratio: float > 1, see `cost_power`.
        check_every: positive int, training steps between two checks.
        growth: float > 1, the factor by which the KL scale changes per
            check while the model is off the plan.
        min_fraction: float in (0, 1], the least share of the budget the
            final model fills.
        verbose: int; > 0 prints when the budget is reached and what the
            end of training adjusted.
        input_shape: for a model whose inputs have sizes left open
            (`keras.Input((None,))`), the reference size its FLOPs are
            counted at: the shape of one example (no batch axis), e.g.
            `(128,)`. Without it, a model from `add_gates` is measured at
            the size of its training data (recorded by its `InputSize`
            layers: the budget starts after the first step).
        target_latency: the budget in milliseconds of the slim model in
            LiteRT (XNNPACK, `latency_threads` threads, converted as
            `latency_quantization` says) on this machine, TensorFlow
            backend: units are priced by the time they save, from a latency
            model of the model's layers (`keras_vib.latency.LatencyModel`,
            timed once and cached), and when training ends the slim model
            is converted and timed (the units closed or reopened again to
            that measurement where it is over the budget or more than 10 %
            under): `measured` holds the time. Give one of the three
            budgets.
        latency_threads: positive int, LiteRT threads of `target_latency`.
        latency_quantization: None (float32), `"float16"`, `"dynamic"` or
            `"int8"`: the model `target_latency` times (as
            `keras_vib.export.to_tflite` converts it).
        round_to: optional positive int: once the budget is reached, and
            when training ends, every gate keeps a multiple of `round_to`
            units (4, 8 or 16: channel counts a runtime's kernels run
            whole; as `slim_model(round_to=)`), within the budget, closing
            and reopening `round_to` units at a time.

    Attributes:
        target: the budget as a count (set when training starts).
        reference: the model's size when training starts.
        power: the cost power in use (None before training).
        reached_epoch: the epoch (from 0) at which the budget was reached,
            or None.
        value: the model's size when training ended.
        adjusted: how many units the end of training closed (> 0) or
            reopened (< 0).
        measured: with `target_latency`, the slim model's time measured
            when training ended (ms); `predicted`: the latency model's.

    Example:

    >>> budget = keras_vib.VIBBudget(target_flops=0.05)
    >>> model.fit(x, y, epochs=30, callbacks=[budget, keras_vib.VIBMonitor()])
    >>> keras_vib.compression_report(model).flops <= budget.target
    True
    """

    def __init__(
        self,
        target_flops=None,
        target_params=None,
        pruning_end: float = 0.5,
        initial_kl: float | None = 1e-2,
        cost_aware: bool = True,
        unit_cost: str = "auto",
        cost_power: float | str = "auto",
        max_pressure_ratio: float = 32.0,
        check_every: int = 50,
        growth: float = 1.1,
        min_fraction: float = 0.85,
        verbose: int = 1,
        input_shape=None,
        round_to: int | None = None,
        target_latency: float | None = None,
        latency_threads: int = 1,
        latency_quantization: str | None = None,
    ):
        super().__init__()
        given = {
            "flops": target_flops,
            "params": target_params,
            "latency": target_latency,
        }
        if sum(v is not None for v in given.values()) != 1:
            raise ValueError(
                "Expected exactly one of `target_flops`, `target_params` and "
                f"`target_latency`. Received: target_flops={target_flops!r}, "
                f"target_params={target_params!r}, "
                f"target_latency={target_latency!r}"
            )
        self.kind = next(k for k, v in given.items() if v is not None)
        if self.kind == "latency":
            self.budget = _validate.number(
                "target_latency", target_latency, low=0, low_open=True
            )
        else:
            self.budget = _check_budget(f"target_{self.kind}", given[self.kind])
        self.latency_threads = _validate.integer(
            "latency_threads", latency_threads, minimum=1
        )
        if latency_quantization not in QUANTIZATIONS:
            raise _validate.fail(
                "latency_quantization", f"one of {QUANTIZATIONS}", latency_quantization
            )
        self.latency_quantization = latency_quantization
        self.measured = self.predicted = None
        self.pruning_end = _validate.number(
            "pruning_end", pruning_end, low=0, high=1, low_open=True
        )
        self.initial_kl = _validate.number(
            "initial_kl", initial_kl, low=0, low_open=True, optional=True
        )
        self.cost_aware = _validate.boolean("cost_aware", cost_aware)
        if unit_cost not in _UNIT_COSTS:
            raise _validate.fail("unit_cost", f"one of {_UNIT_COSTS}", unit_cost)
        self.unit_cost = unit_cost
        if unit_cost == "auto":
            self.unit_cost = "shared" if self.kind == "params" else "marginal"
        if cost_power != "auto":
            if not _validate.is_real(cost_power) or not 0 <= cost_power <= 1:
                raise _validate.fail(
                    "cost_power", '"auto" or a finite number in [0, 1]', cost_power
                )
            cost_power = float(cost_power)
        self.cost_power = cost_power
        self.max_pressure_ratio = _validate.number(
            "max_pressure_ratio", max_pressure_ratio, low=1, low_open=True
        )
        self.power = None
        self._shares = {}
        self.check_every = _validate.integer("check_every", check_every, minimum=1)
        self.growth = _validate.number("growth", growth, low=1, low_open=True)
        self.min_fraction = _validate.number(
            "min_fraction", min_fraction, low=0, high=1, low_open=True
        )
        self.verbose = int(verbose)
        self.input_shape = input_shape
        self.round_to = _validate.integer(
            "round_to", round_to, minimum=1, optional=True
        )
        self.target = self.reference = self.value = None
        self.reached_epoch = None
        self.adjusted = 0

    # -- measuring -------------------------------------------------------

    def _measure(self, masks=None):
        """The model's size in the budget's unit, with the gates' kept masks
        as they are or as `masks` (`id(gate)` -> mask) says."""
        if masks is None:
            masks = self._masks()
        return self._cost(masks)

    def _show(self, value):
        """A size in the budget's unit, for messages."""
        if self.kind == "latency":
            return f"{value:.3f} ms"
        return f"{value:,} {self.kind}"

    def _reference(self):
        if self.kind == "latency":
            return self._cost()
        if self.kind == "flops":
            total = self._cost.total_flops()
            if total is None:
                raise ValueError(
                    "Expected `input_shape` for a FLOPs budget on a model whose "
                    "inputs have sizes left open (its FLOPs depend on them) "
                    "and that records none (`add_gates` makes models that "
                    "do). Received: input_shape=None"
                )
            return total
        gates = [gate for _, gate in self._gates]
        return self.model.count_params() - sum(g.count_params() for g in gates)

    def _set_scale(self, value):
        """Sets the KL scale: each gate's `kl_scale` is `value` times its
        share (1 without `cost_aware`)."""
        self._scale = value
        for _, gate in self._gates:
            gate.set_kl_scale(value * self._shares.get(id(gate), 1.0))

    def _update_shares(self):
        """With `cost_aware`: every gate's share of the KL scale, such that
        a unit's pressure is proportional to what it costs in the budget
        (the FLOPs or parameters that closing one more unit of that gate
        saves, measured), whatever its gate's `kl_weight` and positions."""
        if not self.cost_aware:
            return
        masks = self._masks()
        costs = self._unit_costs(masks)
        weights = {id(g): g.kl_weight * self._cost.positions(g) for _, g in self._gates}
        if self.power is None:
            self.power = self._auto_power(costs.values())
        costs = {
            key: cost**self.power if cost > 0 else 0.0 for key, cost in costs.items()
        }
        scale = np.mean([c for c in costs.values() if c > 0] or [1.0])
        self._shares = {
            key: costs[key] / scale / weights[key] if weights[key] else 0.0
            for key in costs
        }

    def _unit_costs(self, masks):
        """What a unit of each gate costs (`id(gate)` -> cost; 0 for a gate
        left alone). Each gate is probed once: one unit closed (its weakest
        kept), the model measured, layer by layer. `"marginal"`: the total
        the probe saves. `"shared"`: every layer whose cost the probe
        lowers is sized by that gate, and each layer's cost is split evenly
        among the kept units of the gates that size it (a Dense layer
        between two gated layers of a and b units: cost / (a + b) to each);
        what the probe saves outside the layers' kernels (biases, batch
        norms) goes to the gate alone."""
        now, layers = self._cost.parts(masks)
        saved, lowered = {}, {}
        for _, gate in self._gates:
            kept = masks[id(gate)]
            if gate.kl_weight == 0 or kept.sum() < 2:
                continue  # never close a gate's last unit
            log_alpha = ops.convert_to_numpy(gate.log_alpha())
            weakest = int(np.argmax(np.where(kept, log_alpha, -np.inf)))
            total, probed = self._cost.parts(
                _changed(masks, [(gate, weakest)], close=True)
            )
            saved[id(gate)] = max(now - total, 0)
            lowered[id(gate)] = {
                i: layers[i] - probed[i] for i in range(len(layers))
                if layers[i] > probed[i]
            }  # fmt: skip
        costs = {id(g): 0.0 for _, g in self._gates}
        if self.unit_cost == "marginal":
            costs.update(saved)
            return costs
        payers = {}  # layer -> the units that size it
        for key, lowers in lowered.items():
            for i in lowers:
                payers[i] = payers.get(i, 0) + int(masks[key].sum())
        for key, lowers in lowered.items():
            own = max(saved[key] - sum(lowers.values()), 0)
            costs[key] = own + sum(layers[i] / payers[i] for i in lowers)
        return costs

    def _auto_power(self, costs):
        """`cost_power`, or with `"auto"` the largest power <= 1 at which
        the costliest of `costs` (per unit) is at most `max_pressure_ratio`
        times the cheapest."""
        if self.cost_power != "auto":
            return self.cost_power
        positive = [c for c in costs if c > 0]
        spread = max(positive) / min(positive) if positive else 1.0
        if spread <= self.max_pressure_ratio:
            return 1.0
        return math.log(self.max_pressure_ratio) / math.log(spread)

    # -- closing and reopening units -------------------------------------
    # Probes are answered from masks (arrays); only the chosen masks are
    # given to the gates, which close and reopen their own units.

    def _masks(self):
        """The gates' kept masks now, by `id` of the gate."""
        # Reading `self.model` brings the training state into the model's
        # variables (on JAX it stays apart during an epoch otherwise).
        _ = self.model
        return {id(g): g.kept_mask() for _, g in self._gates}

    def _units(self, masks):
        """`(gate, index, log_alpha, kept)` of every unit."""
        units = []
        for _, gate in self._gates:
            log_alpha = ops.convert_to_numpy(gate.log_alpha())
            kept = masks[id(gate)]
            units += [(gate, j, log_alpha[j], kept[j]) for j in range(gate.units)]
        return units

    def _commit(self, masks):
        """Has every gate keep what `masks` says."""
        for _, gate in self._gates:
            gate.set_kept(masks[id(gate)])

    def _search(self, masks, candidates, close):
        """The shortest (closing) or longest (reopening) prefix of
        `candidates` that leaves the model at or under the budget: returns
        its length and the masks with it applied."""

        def fits(k):
            return self._measure(_changed(masks, candidates[:k], close)) <= self.target

        lo, hi = 0, len(candidates)
        if close:  # the fewest closures that fit
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
        else:  # the most reopenings that still fit
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        return lo, _changed(masks, candidates[:lo], close)

    def _close_to_budget(self):
        if self.round_to:
            return self._fit_in_groups(fill=False)
        masks = self._masks()
        units = [u for u in self._units(masks) if u[3]]
        units.sort(key=lambda u: -u[2])  # most prunable first
        count, masks = self._search(masks, [(g, j) for g, j, _, _ in units], True)
        self._commit(masks)
        return count

    def _reopen_to_budget(self):
        if self.round_to:
            return -self._fit_in_groups(fill=True)
        masks = self._masks()
        units = [u for u in self._units(masks) if not u[3]]
        units.sort(key=lambda u: u[2])  # least prunable first
        candidates = [(g, j) for g, j, _, _ in units]
        count, masks = self._search(masks, candidates, close=False)
        # Units are coarse (a channel of a first conv layer costs what a
        # hundred dense units do): past the first that does not fit, the
        # next ones, in the same order, that still do.
        for gate, j in candidates[count + 1 : count + 1 + _MORE_TRIALS]:
            trial = _changed(masks, [(gate, j)], close=False)
            if self._measure(trial) <= self.target:
                masks, count = trial, count + 1
        self._commit(masks)
        return count

    def _fit_in_groups(self, fill):
        """With `round_to`: every gate's kept count rounded to a multiple of
        it, then groups of `round_to` units closed (the gate whose next
        group has the highest mean log alpha) while over the budget, and
        with `fill` reopened (lowest first; past a group that does not fit,
        the next that does) while they fit. Returns the units closed, net
        (< 0: reopened)."""
        k = self.round_to
        alphas = {id(g): ops.convert_to_numpy(g.log_alpha()) for _, g in self._gates}
        before = self._masks()
        masks = {key: rounded_mask(m, alphas[key], k) for key, m in before.items()}

        def groups(close):
            """`(mean log alpha, units)` of each gate's next group."""
            found = []
            for _, gate in self._gates:
                la, mask = alphas[id(gate)], masks[id(gate)]
                units = np.flatnonzero(mask if close else ~mask)
                if len(units) < (2 * k if close else k):  # a gate keeps >= k
                    continue
                order = np.argsort(-la[units] if close else la[units], kind="stable")
                group = units[order][:k]
                found.append((float(la[group].mean()), [(gate, j) for j in group]))
            return sorted(found, key=lambda item: -item[0] if close else item[0])

        while self._measure(masks) > self.target:
            options = groups(close=True)
            if not options:
                break
            masks = _changed(masks, options[0][1], close=True)
        while fill:
            for _, group in groups(close=False):
                trial = _changed(masks, group, close=False)
                if self._measure(trial) <= self.target:
                    masks = trial
                    break
            else:
                break
        self._commit(masks)
        return int(sum(before[key].sum() - masks[key].sum() for key in masks))

    def resolve(self, model) -> int:
        """The budget as a count for `model` (as it is now); checks it.

        Args:
            model: the gated model to train.

        Returns:
            The budget in FLOPs or parameters, an int.

        Raises:
            ValueError: the model has no gate, or the budget is not below
                the model's size.
        """
        shape = self.input_shape
        if shape is None:  # the size it trained on, recorded by add_gates
            shape = recorded_input_shape(model)
        if self.kind == "latency":
            self._cost = _LatencyCost(
                model,
                shape,
                self.latency_threads,
                self.latency_quantization,
                self.verbose,
            )
        else:
            self._cost = _Cost(model, self.kind, shape)
        self._gates = _gates_of(self._cost.structure.graph)
        if not self._gates:
            raise ValueError(
                f"VIBBudget found no VIB gate in the model {model.name!r}: "
                "add gates (`keras_vib.add_gates`, `VIBDense`...) first."
            )
        self.set_model(model)
        self.reference = self._reference()
        name = f"target_{self.kind}"
        target = self.budget
        if isinstance(target, float) and self.kind != "latency":
            target = int(math.floor(target * self.reference))
        if not 0 < target < self.reference:
            raise ValueError(
                f"Expected `{name}` below the model's {self._show(self.reference)} "
                f"when training starts. Received: "
                f"{name}={self.budget!r} ({self._show(target)})"
            )
        floor = self._measure({id(g): np.zeros(g.units, bool) for _, g in self._gates})
        if target < floor:
            raise ValueError(
                f"Expected `{name}` of at least {self._show(floor)}: the "
                "model keeps that many with every gated unit closed (the "
                f"layers no gate reaches). Received: {name}={self.budget!r} "
                f"({self._show(target)})"
            )
        return target

    def _freeze(self):
        """Once the budget is reached: fills it (reopens the closed units of
        lowest `log alpha` that still fit), then the gates act as at
        inference for the rest of training (`noise` 0: no noise, closed
        units off), and every unit's `log alpha` moves `_MARGIN` away from
        the threshold (the order within the kept and within the closed
        units unchanged), so that a drift of `mu` closes or reopens none
        (an optimizer's momentum still may: the next check closes again):
        the remaining epochs train the pruned model."""
        self._reopen_to_budget()
        for _, gate in self._gates:
            gate.freeze(_MARGIN)

    # -- callback hooks --------------------------------------------------

    def _initial_scale(self):
        """The KL scale at which the gates' KL terms add up to `initial_kl`."""
        if self.initial_kl is None:
            return float(ops.convert_to_numpy(self._gates[0][1].kl_scale))
        self._set_scale(1.0)
        kl = sum(
            float(ops.convert_to_numpy(g.kl_loss(self._cost.positions(g))))
            for _, g in self._gates
        )
        return self.initial_kl / kl if kl > 0 else 1.0

    def _plan(self):
        """The size the plan asks for now: geometric from the start to the
        target over the first `pruning_end` of the training steps."""
        epochs = self.params.get("epochs") or 1
        steps = self.params.get("steps") or self._epoch_steps
        if steps:
            progress = self._steps / (epochs * steps)
        else:  # the first epoch of a dataset of unknown length
            progress = self._epoch / epochs
        share = min(1.0, progress / self.pruning_end)
        return self.reference * (self.target / self.reference) ** share

    def on_train_begin(self, logs=None):
        self.measured = self.predicted = None
        self.reached_epoch = None
        self.adjusted = 0
        self._epoch = 0
        self._steps = self._offset = self._checks = 0
        self._epoch_steps = None
        optimizer = getattr(self.model, "optimizer", None)
        self._iterations = (
            0 if optimizer is None else int(ops.convert_to_numpy(optimizer.iterations))
        )
        self._started = False
        if (
            self.input_shape is None
            and recorded_input_shape(self.model) is None
            and records_input_size(self.model)
        ):
            # Sizes left open and not yet seen: the first step records them
            # (KL off until then).
            for _, gate in _gates_of(self.model):
                gate.set_kl_scale(0.0)
            return
        self._start()

    def _start(self):
        self.target = self.resolve(self.model)
        self._shares = {}
        self.power = None
        self._update_shares()
        self._set_scale(self._initial_scale())
        self._started = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._steps and not self._epoch_steps:
            self._epoch_steps = self._steps  # the length of the first epoch
        self._epoch = epoch
        self._offset = self._steps
        if epoch and self.reached_epoch is None and self._started:
            self._update_shares()
            self._set_scale(self._scale)

    def on_train_batch_begin(self, batch, logs=None):
        # The checks run as a call begins, on the steps done before it
        # (`batch` is the call's first step; several with
        # `steps_per_execution`): a hook at the end of each call would
        # make Keras wait for every call's results (no asynchronous
        # dispatch); the gates are read every `check_every` steps only.
        self._advance(self._offset + batch)

    def _advance(self, steps):
        """Counts the steps done; checks the model every `check_every`."""
        if steps <= self._steps:
            return
        self._steps = steps
        if not self._started:
            self._start()
        if self._steps // self.check_every <= self._checks:
            return
        self._checks = self._steps // self.check_every
        value = self._measure()
        if self.reached_epoch is None:
            if value > self.target:
                factor = self.growth if value > self._plan() else 1 / self.growth
                self._set_scale(self._scale * factor)
                return
            self.reached_epoch = self._epoch
            self._set_scale(0.0)
            self._freeze()
            if self.verbose:
                print(
                    f"VIBBudget: {self._show(value)} <= {self._show(self.target)} at "
                    f"epoch {self._epoch + 1}: pruning stops",
                    flush=True,
                )
        elif value > self.target:
            self._close_to_budget()

    def _check_latency(self):
        """The slim model converted and timed; where it is over the target
        or more than 10 % under it, the measurement becomes one of the
        latency model's anchors and the units are closed or reopened to the
        budget again (three times at most). `measured` holds the last
        measurement (ms)."""
        latency = self._cost.model
        for attempt in range(4):
            self.measured = latency.measure()
            if 0.9 * self.target <= self.measured <= self.target or attempt == 3:
                break
            latency.calibrate(self.measured)
            if self._measure() > self.target:
                self.adjusted += self._close_to_budget()
            else:
                self.adjusted -= self._reopen_to_budget()
        latency.flush()

    def on_epoch_end(self, epoch, logs=None):
        # The epoch's last call: its steps counted (and checked) here.
        steps = self.params.get("steps")
        if steps:
            self._advance(self._offset + steps)
        elif self.model.optimizer is not None and self._started:
            done = int(ops.convert_to_numpy(self.model.optimizer.iterations))
            self._advance(done - self._iterations)
        if logs is not None and self._started:
            logs["budget"] = self._measure() / self.target
            logs["kl_scale"] = self._scale

    def on_train_end(self, logs=None):
        if not self._started:  # no training step
            return
        kl_reached = self._measure()
        if kl_reached > self.target:
            self.adjusted = self._close_to_budget()
            _validate.warn(
                f"VIBBudget: the KL pressure reached {self._show(kl_reached)} "
                f"in these epochs, over the budget of {self._show(self.target)}; "
                f"closed the {self.adjusted} open units of highest log alpha to meet "
                "it. Train longer, or raise the KL weight, to let the KL term "
                "choose."
            )
        elif kl_reached < self.min_fraction * self.target:
            self.adjusted = -self._reopen_to_budget()
        elif self.round_to:
            self.adjusted = self._fit_in_groups(fill=False)
            if self._measure() < self.min_fraction * self.target:
                self.adjusted += self._fit_in_groups(fill=True)
        if self.kind == "latency":
            self._check_latency()
        if self.kind == "latency":
            self.predicted = self._measure()
        self.value = self._measure() if self.measured is None else self.measured
        if self.value > self.target and self.kind == "latency":
            _validate.warn(
                f"VIBBudget: the slim model measured {self._show(self.value)} in "
                f"LiteRT, over the budget of {self._show(self.target)}, after "
                "refitting to its measurements (timings vary by a few %)."
            )
        elif self.value > self.target:
            _validate.warn(
                f"VIBBudget: {self._show(self.value)} with every unit closed "
                f"that can be: the budget of {self._show(self.target)} cannot be met."
            )
        if self.verbose and self.adjusted:
            what = "closed" if self.adjusted > 0 else "reopened"
            print(
                f"VIBBudget: {what} {abs(self.adjusted)} units at the end: "
                f"{self._show(self.value)} for a budget of {self._show(self.target)}",
                flush=True,
            )
        self._shares = {}  # back to the gates' own weights
        self._set_scale(1.0)
        for _, gate in self._gates:
            gate.unfreeze()
