"""Tests of `keras_vib.VIBBudget`: the pruned model lands on the budget."""

import pathlib
import warnings

import keras
import numpy as np
import pytest
from helpers import set_gates

import keras_vib as kv

L = keras.layers


def mlp(kl_weight=1e-3):
    return keras.Sequential(
        [
            keras.Input((20,)),
            kv.VIBDense(32, activation="relu", kl_weight=kl_weight, name="fc1"),
            kv.VIBDense(16, activation="relu", kl_weight=kl_weight, name="fc2"),
            L.Dense(3, name="out"),
        ]
    )


def data(n=512, features=20):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype("float32")
    y = np.argmax(x[:, :3] + 0.1 * x[:, 3:6], axis=1)
    return x, y


def fit(model, budget, epochs, **kwargs):
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = data(**kwargs)
    return model.fit(x, y, batch_size=32, epochs=epochs, callbacks=[budget], verbose=0)


def test_flops_budget_is_met_within_the_band():
    model = mlp()
    total = kv.compression_report(model).total_flops
    budget = kv.VIBBudget(target_flops=0.3, check_every=4, growth=1.5, verbose=0)
    history = fit(model, budget, epochs=8)
    flops = kv.compression_report(model).flops
    assert budget.target == int(0.3 * total)
    assert 0.85 * budget.target <= flops <= budget.target
    assert budget.value == flops
    assert budget.reached_epoch is not None  # the KL pressure got there
    assert "budget" in history.history
    slim = kv.slim_model(model)
    assert kv.compression_report(slim).flops == flops
    for _, gate in kv.report.gates(model):
        assert float(keras.ops.convert_to_numpy(gate.kl_scale)) == 1.0


@pytest.mark.parametrize("kl_weight", [1e-6, 1.0])
def test_the_kl_weight_needs_no_tuning(kl_weight):
    """Six orders of magnitude of KL weight: the KL scale starts where the
    KL term is `initial_kl` nats, follows the plan, and lands in the band."""
    model = mlp(kl_weight=kl_weight)
    budget = kv.VIBBudget(target_flops=0.3, check_every=4, growth=1.5, verbose=0)
    history = fit(model, budget, epochs=8)
    assert budget.reached_epoch is not None  # the KL pressure got there
    assert budget.reached_epoch >= 1  # not at once: along the plan
    flops = kv.compression_report(model).flops
    assert 0.85 * budget.target <= flops <= budget.target
    scales = history.history["kl_scale"]
    assert scales[0] > 0 and scales[-1] == 0.0  # off once under the budget


def test_the_kl_scale_starts_at_initial_kl():
    model = mlp(kl_weight=3e-2)
    budget = kv.VIBBudget(target_flops=0.3, initial_kl=0.5, verbose=0)
    budget.set_model(model)
    budget.on_train_begin()
    kl = sum(float(g.kl_loss()) for _, g in kv.report.gates(model))
    assert kl == pytest.approx(0.5, rel=1e-5)
    scale = float(model.get_layer("fc1").gate.kl_scale)
    assert 0 < scale < 1  # the weight of 3e-2 alone gives more than 0.5 nats


def three_gates():
    """A conv layer and two dense ones whose units cost 800, 132 and 35
    FLOPs each."""
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            kv.VIBConv2D(8, 3, activation="relu", kl_weight=1e-5, name="conv"),
            L.Flatten(),
            kv.VIBDense(32, activation="relu", kl_weight=1e-1, name="fc1"),
            kv.VIBDense(4, activation="relu", kl_weight=1e-3, name="fc2"),
            L.Dense(3, name="out"),
        ]
    )


def pressure_per_unit(model, names=("conv", "fc1", "fc2")):
    """Each gate's KL weight per unit (its scale, weight and positions)."""
    pressure = {}
    for name in names:
        gate = model.get_layer(name).gate
        pressure[name] = float(gate.kl_scale) * gate.kl_weight * gate.positions
    return pressure


@pytest.mark.parametrize("power", [1.0, 0.5])
@pytest.mark.parametrize("kind", ["flops", "params"])
def test_cost_aware_pressure_follows_what_a_unit_costs(kind, power):
    """Each gate's KL weight per unit ends up proportional to the FLOPs (or
    parameters) one of its units costs, to `cost_power`, whatever its own
    `kl_weight`."""
    model = three_gates()
    budget = kv.VIBBudget(
        **{f"target_{kind}": 0.5}, unit_cost="marginal", cost_power=power, verbose=0
    )
    budget.set_model(model)
    budget.on_train_begin()
    # Closing one unit saves: conv: its 16 positions x 18 weights, its
    # 16 inputs x 32 of fc1; fc1: 128 + 4; fc2: 32 + 3 (params: + biases).
    cost = {"conv": 16 * 18 + 16 * 32, "fc1": 128 + 4, "fc2": 32 + 3}
    if kind == "params":
        cost = {"conv": 18 + 1 + 16 * 32, "fc1": 128 + 1 + 4, "fc2": 32 + 1 + 3}
    per_unit = pressure_per_unit(model)
    per_unit = {name: per_unit[name] / cost[name] ** power for name in cost}
    values = list(per_unit.values())
    assert max(values) == pytest.approx(min(values), rel=1e-5), per_unit
    plain = kv.VIBBudget(**{f"target_{kind}": 0.5}, cost_aware=False, verbose=0)
    plain.set_model(model)
    plain.on_train_begin()
    scales = {float(model.get_layer(n).gate.kl_scale) for n in cost}
    assert len(scales) == 1  # the gates' own weights share the pressure


@pytest.mark.parametrize("kind", ["flops", "params"])
def test_shared_unit_costs_split_each_layer_among_its_gates(kind):
    """`unit_cost="shared"` (a parameter budget's default): a layer sized by
    two gates is paid for evenly by their kept units, so neither side pays
    for the other's width: fc1's 128 x 32 kernel costs the 8 conv channels
    and the 32 fc1 units 4096 / 40 each."""
    model = three_gates()
    budget = kv.VIBBudget(
        **{f"target_{kind}": 0.5}, unit_cost="shared", cost_power=1.0, verbose=0
    )
    budget.set_model(model)
    budget.on_train_begin()
    fc1, fc2, out = 128 * 32 / (8 + 32), 32 * 4 / (32 + 4), 4 * 3 / 4
    # conv: its own 16 positions x 18 weights (params: 18 weights, 1 bias).
    cost = {"conv": 16 * 18 + fc1, "fc1": fc1 + fc2, "fc2": fc2 + out}
    if kind == "params":
        cost = {"conv": 18 + 1 + fc1, "fc1": fc1 + fc2 + 1, "fc2": fc2 + out + 1}
    per_unit = pressure_per_unit(model)
    ratios = [per_unit[name] / cost[name] for name in cost]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-5), per_unit


def test_auto_unit_cost_is_shared_for_params_and_marginal_for_flops():
    assert kv.VIBBudget(target_params=0.5).unit_cost == "shared"
    assert kv.VIBBudget(target_flops=0.5).unit_cost == "marginal"
    assert kv.VIBBudget(target_flops=0.5, unit_cost="shared").unit_cost == "shared"


@pytest.mark.parametrize("ratio", [32.0, 4.0, 1.5])
def test_auto_cost_power_caps_the_pressure_ratio(ratio):
    """`cost_power="auto"`: in proportion to the cost (power 1) while the
    costliest unit costs at most `max_pressure_ratio` times the cheapest
    (800 / 35 here), else the power at which the ratio is exactly that."""
    model = three_gates()
    budget = kv.VIBBudget(
        target_flops=0.5, unit_cost="marginal", max_pressure_ratio=ratio, verbose=0
    )
    assert budget.cost_power == "auto" and budget.power is None
    budget.set_model(model)
    budget.on_train_begin()
    spread = 800 / 35
    expected = 1.0 if spread <= ratio else np.log(ratio) / np.log(spread)
    assert budget.power == pytest.approx(expected)
    pressure = pressure_per_unit(model)
    assert pressure["conv"] / pressure["fc2"] == pytest.approx(min(spread, ratio))
    assert pressure["conv"] > pressure["fc1"] > pressure["fc2"]
    budget._steps = 10
    model.get_layer("conv").gate.log_sigma2.assign(np.full(8, 5.0, "float32"))
    budget.on_epoch_begin(1)  # the shares are measured again, not the power
    assert budget.power == pytest.approx(expected)


def test_after_the_budget_the_pruned_model_trains_without_noise():
    """Once the budget is reached the gates act as at inference (`noise`
    0) and the structure holds: without an optimizer's momentum (plain SGD)
    no unit closes or reopens; after training `noise` is 1 again."""
    model = mlp()
    budget = kv.VIBBudget(target_flops=0.3, check_every=4, growth=2.0, verbose=0)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            gates = kv.report.gates(model)
            noise = {float(keras.ops.convert_to_numpy(g.noise)) for _, g in gates}
            kept = np.concatenate([g.kept_mask() for _, g in gates])
            seen.append((budget.reached_epoch is not None, noise, kept))

    model.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = data()
    model.fit(x, y, batch_size=32, epochs=10, callbacks=[budget, Record()], verbose=0)
    assert budget.reached_epoch is not None and budget.reached_epoch < 8
    after = [(noise, kept) for reached, noise, kept in seen if reached]
    assert len(after) >= 2
    assert all(noise == {0.0} for noise, _ in after)
    assert not any(noise == {0.0} for reached, noise, _ in seen if not reached)
    for (_, kept), (_, later) in zip(after, after[1:]):
        np.testing.assert_array_equal(later, kept)  # nothing closes or reopens
    for _, gate in kv.report.gates(model):
        assert float(keras.ops.convert_to_numpy(gate.noise)) == 1.0


def test_filling_the_budget_skips_a_unit_too_costly_for_what_is_left():
    """Reopening goes down the closed units by `log alpha`; one that does
    not fit (an fc1 unit, 20 + 4 MACs) is passed over for the next that
    does (an fc2 unit, 10 + 3 MACs)."""
    model = mlp()
    model(data(n=2)[0])
    fc1, fc2 = model.get_layer("fc1").gate, model.get_layer("fc2").gate

    def close(gate, kept, log_alpha):
        log_sigma2 = np.full(gate.units, log_alpha, "float32")
        log_sigma2[:kept] = -9.0
        set_gates(gate, np.ones(gate.units), log_sigma2)

    before = kv.compression_report(model).flops
    budget = kv.VIBBudget(target_flops=before - 1, min_fraction=1.0, verbose=0)
    budget.set_model(model)
    budget.on_train_begin()
    close(fc1, 10, 0.5)  # the closed fc1 units: the first to reopen...
    close(fc2, 4, 2.0)
    start = kv.compression_report(model).flops
    budget.target = start + 20  # ...but each costs 24: only an fc2 unit fits
    budget.on_train_end()
    assert (fc1.num_kept(), fc2.num_kept()) == (10, 5)
    assert budget.adjusted == -1
    assert kv.compression_report(model).flops == start + 13


def test_an_unreached_budget_is_met_at_the_end_with_a_warning():
    model = mlp(kl_weight=0.0)  # no KL pressure at all: only the end can cut
    budget = kv.VIBBudget(target_flops=400, verbose=0)
    with pytest.warns(UserWarning, match=r"KL pressure reached [\d,]+ flops"):
        fit(model, budget, epochs=1)
    flops = kv.compression_report(model).flops
    assert 0.85 * 400 <= flops <= 400
    assert budget.adjusted > 0 and budget.reached_epoch is None


def test_round_to_keeps_multiples_within_the_budget():
    """Trained to a budget with `round_to=4`: every gate keeps a multiple of
    4, the model is within the band, and `slim_model` needs no rounding."""
    model = mlp()
    budget = kv.VIBBudget(
        target_flops=0.3, check_every=4, growth=1.5, round_to=4, verbose=0
    )
    fit(model, budget, epochs=8)
    kept = [gate.num_kept() for _, gate in kv.report.gates(model)]
    assert all(k % 4 == 0 and k > 0 for k in kept), kept
    flops = kv.compression_report(model).flops
    assert 0.85 * budget.target <= flops <= budget.target
    assert budget.value == flops
    slim = kv.slim_model(model)
    assert kv.compression_report(slim).flops == flops
    assert [slim.get_layer(n).units for n in ("fc1", "fc2")] == kept


def test_round_to_at_the_end_closes_and_fills_in_groups():
    """The end rounds each count, then closes groups of the highest mean
    log alpha while over the budget and reopens the lowest while they fit."""
    model = mlp()
    model(data(n=2)[0])
    fc1, fc2 = model.get_layer("fc1").gate, model.get_layer("fc2").gate
    log_alpha = np.concatenate([np.linspace(-9, -1, 18), np.linspace(4, 8, 14)])
    set_gates(fc1, np.ones(32), log_alpha.astype("float32"))  # 18 kept
    set_gates(fc2, np.ones(16), np.full(16, -9.0, "float32"))  # all 16 kept
    budget = kv.VIBBudget(target_flops=0.5, round_to=4, verbose=0)
    budget.set_model(model)
    budget.on_train_begin()
    # 20 x fc1 + fc1 x fc2 + fc2 x 3 MACs; 18 fc1 units round to 20 (over:
    # 20 x 20 + 20 x 16 + 48 = 768), groups close down to the budget.
    budget.target = 20 * 12 + 12 * 16 + 48 + 10  # 12 fc1 units fit, not 16
    with pytest.warns(UserWarning, match="closed the 6 open units"):
        budget.on_train_end()
    assert (fc1.num_kept(), fc2.num_kept()) == (12, 16)
    kept = fc1.kept_mask()
    assert kept[:12].all() and not kept[12:].any()  # lowest log alpha kept
    assert budget.adjusted == 18 - 12
    assert budget.value == kv.compression_report(model).flops <= budget.target


@pytest.mark.slow
def test_params_budget_on_an_add_gates_resnet():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    for i in range(2):
        h = L.Conv2D(16, 3, padding="same", activation="relu", name=f"a{i}")(x)
        h = L.Conv2D(16, 3, padding="same", name=f"b{i}")(h)
        h = L.BatchNormalization()(h)
        x = L.ReLU()(L.Add()([x, h]))
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3, name="out")(x))
    gated = kv.add_gates(model, kl_weight=1e-3)
    budget = kv.VIBBudget(target_params=0.4, check_every=4, growth=1.5, verbose=0)
    rng = np.random.default_rng(1)
    x_img = rng.normal(size=(128, 8, 8, 3)).astype("float32")
    y = (x_img[:, :, :, 0].mean(axis=(1, 2)) > 0).astype("int32")
    gated.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the KL term gets there
        gated.fit(x_img, y, batch_size=8, epochs=10, callbacks=[budget], verbose=0)
    assert budget.reached_epoch is not None
    slim = kv.slim_model(gated)
    assert budget.target == int(0.4 * model.count_params())
    assert 0.85 * budget.target <= slim.count_params() <= budget.target


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of `target_flops`, `target_params` and `target_latency`"),
        ({"target_flops": 0.1, "target_params": 0.1}, "exactly one"),
        ({"target_flops": 0}, "target_flops=0"),
        ({"target_flops": -0.5}, "target_flops=-0.5"),
        ({"target_params": 2.5}, "target_params=2.5"),
        ({"target_flops": float("nan")}, "target_flops=nan"),
        ({"target_flops": 0.1, "check_every": 0}, "check_every=0"),
        ({"target_flops": 0.1, "growth": 1.0}, "growth=1.0"),
        ({"target_flops": 0.1, "min_fraction": 0.0}, "min_fraction=0.0"),
        ({"target_flops": 0.1, "pruning_end": 0}, "pruning_end=0"),
        ({"target_flops": 0.1, "pruning_end": 1.5}, "pruning_end=1.5"),
        ({"target_flops": 0.1, "initial_kl": 0.0}, "initial_kl=0.0"),
        ({"target_flops": 0.1, "initial_kl": "1"}, "initial_kl='1'"),
        ({"target_flops": 0.1, "cost_aware": 1}, "cost_aware=1"),
        ({"target_flops": 0.1, "cost_power": 1.5}, "cost_power=1.5"),
        ({"target_flops": 0.1, "cost_power": -0.1}, "cost_power=-0.1"),
        ({"target_flops": 0.1, "cost_power": True}, "cost_power=True"),
        ({"target_flops": 0.1, "cost_power": "Auto"}, "cost_power='Auto'"),
        ({"target_flops": 0.1, "max_pressure_ratio": 1}, "max_pressure_ratio=1"),
        ({"target_flops": 0.1, "round_to": 0}, "round_to=0"),
        ({"target_flops": 0.1, "unit_cost": "average"}, "unit_cost='average'"),
        ({"target_flops": 0.1, "round_to": 2.5}, "round_to=2.5"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kv.VIBBudget(**kwargs)


def test_a_budget_at_or_over_the_model_is_refused():
    model = mlp()
    total = kv.compression_report(model).total_flops
    with pytest.raises(ValueError, match=f"target_flops={total}"):
        fit(model, kv.VIBBudget(target_flops=total, verbose=0), epochs=1)


def test_a_budget_under_what_the_model_can_reach_is_refused():
    # A branch no gate reaches: 20 x 8 + 8 x 3 multiply-accumulates stay,
    # whatever closes.
    inputs = keras.Input((20,))
    gated = kv.VIBDense(16, activation="relu", name="fc")(inputs)
    side = L.Dense(8, name="side")(inputs)
    out = L.Dense(3, name="out")(L.Concatenate()([gated, side]))
    model = keras.Model(inputs, out)
    budget = kv.VIBBudget(target_flops=150, verbose=0)
    with pytest.raises(ValueError, match=r"at least 184 flops.*target_flops=150"):
        budget.resolve(model)
    assert kv.VIBBudget(target_flops=200, verbose=0).resolve(model) == 200


def test_the_warning_points_at_the_caller():
    model = mlp(kl_weight=0.0)
    with pytest.warns(UserWarning, match="KL pressure reached") as record:
        fit(model, kv.VIBBudget(target_flops=400, verbose=0), epochs=1)
    ours = [w for w in record if "KL pressure" in str(w.message)]
    assert [pathlib.Path(w.filename).name for w in ours] == ["test_budget.py"]


def test_a_model_without_gates_is_refused():
    model = keras.Sequential([keras.Input((20,)), L.Dense(3)])
    with pytest.raises(ValueError, match="no VIB gate"):
        fit(model, kv.VIBBudget(target_flops=0.5, verbose=0), epochs=1)


def test_the_budget_never_writes_a_gate_variable():
    # The gates close, reopen and freeze themselves (VIBGate's methods);
    # the budget only asks them.
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(kv.budget))
    writes = [
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("assign", "assign_add", "assign_sub")
    ]
    assert writes == []
