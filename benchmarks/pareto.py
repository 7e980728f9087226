"""Error against FLOPs on MNIST: keras_vib's budget against two structured
baselines, and the table and plot in BENCHMARKS.md.

    python benchmarks/pareto.py --write

For LeNet-300-100 (neurons and input pixels) and LeNet-5-Caffe (channels and
neurons), at each FLOPs budget (a fraction of the model's multiply-
accumulates), three methods, each with `--epochs` training epochs and then
`--finetune-epochs` epochs of fine-tuning of the slim model, so the same
number of epochs in total:

- `keras_vib`: the gated zoo model trained with `VIBBudget(target_flops=b)`
  (no KL weight given: the callback sets the KL scale), then `slim_model`.
- `L1 filters` (Li et al., ICLR 2017, "PF" in the VIBNet paper's Table 3):
  the plain net trained with an L2 weight penalty; the units with the
  smallest L1 norm of their weights (incoming for neurons and channels,
  outgoing for input pixels), each over its layer's mean, are removed,
  globally, the fewest that meet the budget.
- `net slimming` (Liu et al., ICCV 2017, "NS"): the net with a batch norm
  after every layer (and on the input pixels of LeNet-300-100) trained with
  an L1 penalty on the batch-norm scales; the units of smallest |scale| are
  removed globally, the fewest that meet the budget (the batch norms are
  folded into the kernels first, exactly).

The baselines remove units with keras_vib's own `slim_model`: their trained
weights go into the gated zoo model, whose gates are set open or closed by
their criterion. A baseline's training run is shared by its budgets (each
final model still had `--epochs` + `--finetune-epochs` epochs). Every run is
seeded (`keras.utils.set_random_seed`) and its result is kept in
`<out>/results.json`, so an interrupted benchmark resumes where it stopped.
`--seed-budgets` are run for every seed of `--seeds`, the other budgets for
the first seed only. The table reports the final model (after fine-tuning)
and, where several seeds ran, the median and the range.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import ROOT, load_average, load_note, machine, positive_int, publish  # noqa: E402

import keras_vib as kv  # noqa: E402
from keras_vib import datasets, models  # noqa: E402

SECTION = "## Error against FLOPs (MNIST): keras_vib's budget against PF and NS"
METHODS = ("keras_vib", "L1 filters", "net slimming")
NAMES = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5-Caffe"}
# Gated units of the zoo models, in order: (gate layer, baseline layer whose
# units they are, that layer's batch norm in the slimming net).
UNITS = {
    "lenet300": [
        ("input_gate", None, "bn_input"),
        ("fc1", "fc1", "bn_fc1"),
        ("fc2", "fc2", "bn_fc2"),
    ],
    "lenet5": [
        ("conv1", "conv1", "bn_conv1"),
        ("conv2", "conv2", "bn_conv2"),
        ("fc1", "fc1", "bn_fc1"),
    ],
}
FINETUNE_LR = {"lenet300": 3e-3, "lenet5": 2e-3}  # the recipes' (keras_vib.recipes)
L2_PENALTY = 1e-4  # the L1-filter baseline's weight penalty
L1_PENALTY = 1e-4  # network slimming's penalty on the batch-norm scales
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# -- the baselines' nets ------------------------------------------------------


def baseline_net(model, slimming):
    """The plain net (L2 on the kernels) or the slimming net (a batch norm
    after every layer, L1 on its scales), with the zoo's layer names."""
    L = keras.layers
    reg = None if slimming else keras.regularizers.L2(L2_PENALTY)

    def unit(layer, name):
        if not slimming:
            return [layer]
        bn = L.BatchNormalization(
            gamma_regularizer=keras.regularizers.L1(L1_PENALTY), name=f"bn_{name}"
        )
        return [layer, bn, L.ReLU()]

    act = None if slimming else "relu"
    layers = [keras.Input((28, 28, 1))]
    if model == "lenet300":
        layers.append(L.Flatten(name="flatten"))
        if slimming:
            layers.append(
                L.BatchNormalization(
                    gamma_regularizer=keras.regularizers.L1(L1_PENALTY),
                    name="bn_input",
                )
            )
        for name, units in (("fc1", 300), ("fc2", 100)):
            layers += unit(L.Dense(units, act, kernel_regularizer=reg, name=name), name)
    else:
        for name, filters in (("conv1", 20), ("conv2", 50)):
            conv = L.Conv2D(
                filters, 5, activation=act, kernel_regularizer=reg, name=name
            )
            layers += unit(conv, name) + [L.MaxPooling2D(2)]
        layers.append(L.Flatten())
        layers += unit(L.Dense(500, act, kernel_regularizer=reg, name="fc1"), "fc1")
    layers.append(L.Dense(10, kernel_regularizer=reg, name="classifier"))
    return keras.Sequential(layers)


def folded_weights(net, model, slimming):
    """`{layer: (kernel, bias)}` of the zoo's kernel layers, with the
    slimming net's batch norms folded in (exact at inference)."""

    def affine(bn):
        gamma, beta, mean, var = (np.asarray(w) for w in bn.get_weights())
        a = gamma / np.sqrt(var + bn.epsilon)
        return a, beta - mean * a

    out = {}
    for _, name, bn_name in UNITS[model]:
        if name is None:
            continue
        kernel, bias = (np.asarray(w) for w in net.get_layer(name).get_weights())
        if slimming:
            if name == "fc1" and model == "lenet300":  # the input's batch norm
                a_in, c_in = affine(net.get_layer("bn_input"))
                bias = bias + c_in @ kernel
                kernel = a_in[:, None] * kernel
            a, c = affine(net.get_layer(bn_name))
            kernel, bias = kernel * a, bias * a + c
        out[name] = (kernel, bias)
    out["classifier"] = tuple(
        np.asarray(w) for w in net.get_layer("classifier").get_weights()
    )
    return out


def scores(net, model, slimming):
    """Per gate, the pruning score of each unit (low: removed first).

    Network slimming: |batch-norm scale|, compared across layers (a global
    threshold). L1 filters: a unit's rank by L1 norm within its layer over
    the layer's size, so that the global order removes the same share of
    every layer (Li et al. choose a ratio per layer; a uniform one needs no
    sensitivity runs).
    """
    result = []
    for gate, name, bn_name in UNITS[model]:
        if slimming:
            s = np.abs(np.asarray(net.get_layer(bn_name).gamma))
        else:
            if name is None:  # input pixels: outgoing weights of fc1
                norms = np.abs(np.asarray(net.get_layer("fc1").kernel)).sum(axis=1)
            else:
                k = np.abs(np.asarray(net.get_layer(name).kernel))
                norms = k.reshape(-1, k.shape[-1]).sum(axis=0)
            s = (np.argsort(np.argsort(norms)) + 1.0) / len(norms)
        result.append((gate, s))
    return result


def gates_of(gated):
    found = {}
    for layer in gated.layers:
        if isinstance(layer, kv.VIBGate):
            found[layer.name] = layer
        elif hasattr(layer, "gate") and isinstance(layer.gate, kv.VIBGate):
            found[layer.name] = layer.gate
    return found


def set_open(gates, closed):
    """Opens every unit but `closed` (`{gate: indices}`), exactly."""
    for name, gate in gates.items():
        log_sigma2 = np.full(gate.units, -20.0, "float32")
        log_sigma2[closed.get(name, [])] = 20.0
        gate.mu.assign(np.ones(gate.units, "float32"))
        gate.log_sigma2.assign(log_sigma2)


def prune_to_budget(net, model, slimming, budget):
    """The slim model of `net` with the fewest lowest-score units removed
    that meet `budget` (a fraction of the FLOPs)."""
    gated = models.get_model(model, vib=True)
    for name, (kernel, bias) in folded_weights(net, model, slimming).items():
        layer = gated.get_layer(name)
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    gates = gates_of(gated)
    # Every unit but the best of each layer (a layer without units would
    # cut the net), lowest score first.
    order = sorted(
        (
            (s, gate, j)
            for gate, values in scores(net, model, slimming)
            for j, s in enumerate(values)
            if j != int(np.argmax(values))
        ),
        key=lambda t: t[0],
    )
    set_open(gates, {})
    target = int(budget * kv.compression_report(gated).total_flops)

    def flops_of(units):
        closed = {}
        for _, gate, j in units:
            closed.setdefault(gate, []).append(j)
        set_open(gates, closed)
        return kv.compression_report(gated).flops

    def flops(k):
        return flops_of(order[:k])

    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if flops(mid) <= target else (mid + 1, hi)
    # Units are coarse (a conv1 channel of LeNet-5 is 0.6 % of its FLOPs):
    # reopen the best of the closed ones that still fit, so that the
    # baseline fills its budget as keras_vib's does (at least 85 % of it).
    closed = order[:lo]
    for i in range(len(closed) - 1, max(-1, len(closed) - 201), -1):
        trial = closed[:i] + closed[i + 1 :]
        if flops_of(trial) <= target:
            closed = trial
    flops_of(closed)
    return kv.slim_model(gated), kv.compression_report(gated).structure


# -- training -----------------------------------------------------------------


def data(seed, args, batch_size=100):
    train = datasets.load("mnist", "train", batch_size, augment=True, seed=seed)
    test = datasets.load("mnist", "test", 1000)
    if args.steps_per_epoch:  # a smoke run
        train, test = train.take(args.steps_per_epoch), test.take(1)
    return train, test


def finetune(slim, structure, train, test, args, model):
    steps = int(train.cardinality())
    total = max(1, args.finetune_epochs * steps)
    schedule = keras.optimizers.schedules.CosineDecay(FINETUNE_LR[model], total)
    slim.compile(
        keras.optimizers.Adam(schedule),
        LOSS,
        metrics=["accuracy"],
        steps_per_execution=20,
    )
    if args.finetune_epochs:
        slim.fit(train, epochs=args.finetune_epochs, verbose=0, shuffle=False)
    _, accuracy = slim.evaluate(test, verbose=0)
    report = kv.compression_report(slim)
    return {
        "error_pct": 100.0 * (1.0 - accuracy),
        "flops": report.flops,
        "params": slim.count_params(),
        "structure": str(structure),
    }


def run_vib(model, budget, seed, args):
    keras.utils.set_random_seed(seed)
    train, test = data(seed, args)
    gated = models.get_model(model, vib=True)
    gated.compile(
        keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"], steps_per_execution=20
    )
    power = args.cost_power if args.cost_power == "auto" else float(args.cost_power)
    callback = kv.VIBBudget(
        target_flops=budget, cost_power=power, unit_cost=args.unit_cost, verbose=0
    )
    gated.fit(train, epochs=args.epochs, callbacks=[callback], verbose=0, shuffle=False)
    structure = kv.compression_report(gated).structure
    result = finetune(kv.slim_model(gated), structure, train, test, args, model)
    result.update(
        target=callback.target,
        reached_epoch=callback.reached_epoch,
        adjusted=callback.adjusted,
        power=callback.power,
    )
    return [result]


def run_baseline(model, budgets, seed, args, slimming):
    keras.utils.set_random_seed(seed)
    train, test = data(seed, args)
    net = baseline_net(model, slimming)
    net.compile(keras.optimizers.Adam(1e-3), LOSS, steps_per_execution=20)
    net.fit(train, epochs=args.epochs, verbose=0, shuffle=False)
    results = []
    for budget in budgets:
        keras.utils.set_random_seed(seed)
        slim, structure = prune_to_budget(net, model, slimming, budget)
        results.append(finetune(slim, structure, train, test, args, model))
    return results


# -- bookkeeping --------------------------------------------------------------


def key(model, method, budget, seed, args):
    steps = f"x{args.steps_per_epoch}" if args.steps_per_epoch else ""
    epochs = f"{args.epochs}+{args.finetune_epochs}{steps}"
    power = ""
    if method == "keras_vib":  # (rows without a unit cost: "marginal")
        power = f"|power{args.cost_power}"
        if args.unit_cost == "shared":  # (auto: marginal for FLOPs)
            power += f"|{args.unit_cost}"
    return f"{model}|{method}|{budget:g}|{seed}|{epochs}{power}"


def plan(args):
    """`(model, method, seed, budgets)` of every training run to do."""
    runs = []
    for model in args.models:
        for seed in args.seeds:
            budgets = args.budgets if seed == args.seeds[0] else args.seed_budgets
            for method in METHODS:
                if method == "keras_vib":
                    runs += [(model, method, seed, [b]) for b in budgets]
                else:
                    runs.append((model, method, seed, list(budgets)))
    return runs


def table(results, args):
    lines = []
    for model in args.models:
        lines += [
            f"**{NAMES[model]}** (original {results_total(results, model):,} FLOPs)",
            "",
            "| FLOPs budget | method | seeds | error % (median) | error % range | "
            "FLOPs (median) | % of the original | structure (seed "
            f"{args.seeds[0]}) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for budget in args.budgets:
            best = None
            rows = []
            for method in METHODS:
                found = [
                    results[key(model, method, budget, s, args)]
                    for s in args.seeds
                    if key(model, method, budget, s, args) in results
                ]
                if not found:
                    continue
                errors = [r["error_pct"] for r in found]
                median = statistics.median(errors)
                best = median if best is None else min(best, median)
                flops = statistics.median(r["flops"] for r in found)
                total = results_total(results, model)
                rows.append(
                    (
                        method,
                        len(found),
                        median,
                        min(errors),
                        max(errors),
                        flops,
                        100 * flops / total,
                        found[0]["structure"],
                    )
                )
            for method, n, median, lo, hi, flops, pct, structure in rows:
                mark = "**" if median == best else ""
                spread = f"{lo:.2f}-{hi:.2f}" if n > 1 else "-"
                lines.append(
                    f"| {100 * budget:g} % | {method} | {n} | {mark}{median:.2f}{mark} "
                    f"| {spread} | {flops:,.0f} | {pct:.2f} | {structure} |"
                )
        lines.append("")
    return "\n".join(lines)


def results_total(results, model):
    totals = [
        r["total_flops"]
        for k, r in results.items()
        if k.startswith(model + "|") and "total_flops" in r
    ]
    return totals[0] if totals else 0


def plot(results, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.models), figsize=(6 * len(args.models), 4.2))
    axes = np.atleast_1d(axes)
    for ax, model in zip(axes, args.models):
        for method, marker in zip(METHODS, "osD"):
            xs, ys, lows, highs = [], [], [], []
            for budget in sorted(args.budgets):
                found = [
                    results[k]
                    for s in args.seeds
                    if (k := key(model, method, budget, s, args)) in results
                ]
                if not found:
                    continue
                errors = [r["error_pct"] for r in found]
                xs.append(statistics.median(r["flops"] for r in found))
                ys.append(statistics.median(errors))
                lows.append(ys[-1] - min(errors))
                highs.append(max(errors) - ys[-1])
            if xs:
                ax.errorbar(
                    xs, ys, yerr=[lows, highs], marker=marker, capsize=3, label=method
                )
        ax.set_xscale("log")
        ax.set_xlabel("FLOPs (multiply-accumulates) of the final model, log scale")
        ax.set_ylabel("test error % (final model; median, range over seeds)")
        ax.set_title(f"{NAMES[model]} on MNIST")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cost_power(text):
    """`--cost-power`: "auto" or a number in [0, 1], as in the key (`0.5`)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"auto or a number in [0, 1]; got {text!r}")
    return f"{value:g}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(NAMES), choices=list(NAMES))
    parser.add_argument(
        "--budgets", nargs="+", type=float, default=[0.1, 0.05, 0.03, 0.02]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--seed-budgets",
        nargs="+",
        type=float,
        default=[0.05, 0.02],
        help="the budgets run for every seed (the others: the first)",
    )
    parser.add_argument("--epochs", type=positive_int, default=12)
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument(
        "--cost-power",
        type=cost_power,
        default="auto",
        help="keras_vib's VIBBudget(cost_power=...): auto (VIBBudget's default) "
        "or a number in [0, 1]",
    )
    parser.add_argument(
        "--unit-cost",
        choices=("auto", "shared", "marginal"),
        default="auto",
        help="keras_vib's VIBBudget(unit_cost=...): auto (VIBBudget's default: "
        "marginal for FLOPs), shared or marginal",
    )
    parser.add_argument(
        "--steps-per-epoch",
        type=positive_int,
        help="batches per epoch (a smoke run; the test set is cut to 1,000)",
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "pareto_runs"),
        help="where results.json keeps every run (kept in the repository)",
    )
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "pareto.png"))
    parser.add_argument(
        "--write", action="store_true", help="write the section into BENCHMARKS.md"
    )
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    for b in args.budgets + args.seed_budgets:
        if not 0 < b < 1:
            parser.error(f"a budget is a fraction in (0, 1); got {b}")
    args.seed_budgets = [b for b in args.seed_budgets if b in args.budgets]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    load_before, start = load_average(), time.perf_counter()
    runs = plan(args)
    for i, (model, method, seed, budgets) in enumerate(runs, 1):
        todo = [b for b in budgets if key(model, method, b, seed, args) not in results]
        if not todo:
            continue
        t0 = time.perf_counter()
        if method == "keras_vib":
            found = run_vib(model, todo[0], seed, args)
        else:
            found = run_baseline(model, todo, seed, args, method == "net slimming")
        wall = time.perf_counter() - t0
        total = kv.compression_report(models.get_model(model, vib=True)).total_flops
        for budget, result in zip(todo, found):
            result.update(total_flops=total, wall_s=wall / len(todo))
            results[key(model, method, budget, seed, args)] = result
            print(
                f"[{i}/{len(runs)}] {model} {method} budget {budget:g} seed {seed}: "
                f"{result['error_pct']:.2f}% error, {result['flops']:,} FLOPs "
                f"({result['structure']}), {wall:.0f} s",
                flush=True,
            )
        tmp = store.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, store)
    plot(results, args, args.plot)
    wall = time.perf_counter() - start
    command = "python benchmarks/pareto.py " + " ".join(argv or sys.argv[1:])
    text = "\n".join(
        [
            SECTION,
            "",
            f"Command: `{command.strip()}` (plot: `benchmarks/pareto.png`).",
            f"Machine: {machine()}.",
            "",
            f"![error against FLOPs](benchmarks/{pathlib.Path(args.plot).name})",
            "",
            table(results, args),
            f"- Each model: {args.epochs} training epochs, then {args.finetune_epochs} "
            "epochs of fine-tuning of the slim model (Adam, cosine from the recipe's "
            "fine-tuning rate), batches of 100 MNIST images shifted by at most one "
            "pixel; training at Adam 1e-3. keras_vib: the zoo model with its default "
            "KL weights and `VIBBudget(target_flops=b)` defaults. L1 filters: L2 "
            f"penalty {L2_PENALTY:g} on the kernels. Net slimming: L1 penalty "
            f"{L1_PENALTY:g} on the batch-norm scales. Bold: the lowest median error "
            "at that budget. The final model after fine-tuning, never the best epoch.",
            load_note(load_before, wall),
        ]
    )
    publish(text, args.benchmarks_md, SECTION, write=args.write)


if __name__ == "__main__":
    main()
