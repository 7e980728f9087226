"""A ViT on MNIST compressed to a FLOPs budget: keras_vib against magnitude
pruning of heads and MLP units, then the slim ViT in LiteRT.

    python benchmarks/vit_mnist.py [--seeds 0 1 2] [--budgets 0.25 0.1]
        [--epochs 8] [--finetune-epochs 4] [--out runs/vit_mnist] [--no-write]

The ViT is `keras_vib.models.vit` (patches of 7, 4 pre-norm blocks of width
64 and 4 heads, MLP of 128). At each FLOPs budget (a fraction of the
model's multiply-accumulates), two methods, each with `--epochs` training
epochs and then `--finetune-epochs` epochs of fine-tuning of the slim model:

- `keras_vib`: the gated ViT (heads and MLP units) trained with
  `VIBBudget(target_flops=b, check_every=20, growth=1.2)`, then
  `slim_model`.
- `magnitude`: the plain ViT trained as long; each head scored by the L1
  norm of its value and output weights, each MLP unit by that of its input
  and output weights; ranked within its layer over the layer's size (every
  layer loses the same share), the lowest removed globally, the fewest
  that meet the budget (then the best of the removed that still fit put
  back), once (a layer may lose every unit: the residual stream goes
  on); the slim model (keras_vib's `slim_model` of the plain weights with
  those units closed) fine-tuned. One training run per seed
  serves both budgets.

Every run is seeded and kept in `<out>/results.json` (an interrupted run
resumes). The table reports the final models (after fine-tuning): median
and range of the test error over the seeds. Then the slim ViT of the first
seed at the smallest budget is exported to LiteRT (float32): its outputs
against Keras's on 100 test images, and its latency (1 thread, median of
`--runs` invokes) against the original ViT's, beside the FLOP ratio.
"""

import argparse
import json
import os
import pathlib
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    ROOT,
    interleaved_ms,
    load_average,
    load_note,
    machine,
    positive_int,
    publish,
)

import keras_vib as kv  # noqa: E402
from keras_vib import datasets, export, models  # noqa: E402

SECTION = "## A ViT on MNIST: keras_vib against magnitude pruning"
METHODS = ("keras_vib", "magnitude")
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
LR, FINETUNE_LR = 1e-3, 5e-4


def data(seed, args):
    train = datasets.load("mnist", "train", 100, augment=True, seed=seed)
    test = datasets.load("mnist", "test", 1000)
    if args.steps_per_epoch:  # a smoke run
        train, test = train.take(args.steps_per_epoch), test.take(1)
    return train, test


def compiled(model, lr, steps):
    schedule = keras.optimizers.schedules.CosineDecay(lr, max(1, steps))
    model.compile(
        keras.optimizers.Adam(schedule),
        LOSS,
        metrics=["accuracy"],
        steps_per_execution=20,
    )
    return model


def finetune(slim, train, test, args, out_path):
    steps = int(train.cardinality()) * args.finetune_epochs
    compiled(slim, FINETUNE_LR, steps)
    if args.finetune_epochs:
        slim.fit(train, epochs=args.finetune_epochs, verbose=0, shuffle=False)
    _, accuracy = slim.evaluate(test, verbose=0)
    slim.save(out_path)
    report = kv.compression_report(slim)
    return {
        "error_pct": 100.0 * (1.0 - accuracy),
        "flops": report.flops,
        "params": slim.count_params(),
        "model": str(out_path),
    }


def heads_and_units(gated):
    """Per gate, the L1 score of each unit (the plain weights, gates open)."""
    found = []
    for name, layer in kv.gates.gated_layers(gated):
        if isinstance(layer, kv.VIBMultiHeadAttention):
            value = np.abs(np.asarray(layer.value_dense.kernel)).sum(axis=(0, 2))
            output = np.abs(np.asarray(layer.output_dense.kernel)).sum(axis=(1, 2))
            found.append((layer.gate, value + output))
        else:  # the gate after an MLP's first Dense: `blockI_mlp1_gate`
            block = name.removesuffix("_gate")
            first = np.abs(np.asarray(gated.get_layer(block).kernel)).sum(axis=0)
            second = block.replace("mlp1", "mlp2")
            out = np.abs(np.asarray(gated.get_layer(second).kernel)).sum(axis=1)
            found.append((layer, first + out))
    return found


def prune_to_budget(plain, budget):
    """The slim ViT of `plain` with the fewest lowest-ranked units removed
    that meet `budget` (a fraction of the FLOPs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the residual stream
        gated = kv.add_gates(plain)
    scored = heads_and_units(gated)
    ranked = []
    for g, s in scored:
        # Any unit may go, all of a layer's too: the residual stream goes on
        # (as keras_vib's gates may close every head of a block).
        rank = (np.argsort(np.argsort(s)) + 1.0) / len(s)
        ranked += [(rank[j], g, j) for j in range(len(s))]
    ranked.sort(key=lambda t: t[0])
    order = [(g, j) for _, g, j in ranked]
    target = int(budget * kv.compression_report(gated).total_flops)

    def flops_of(closed):
        shut = {}
        for g, j in closed:
            shut.setdefault(id(g), []).append(j)
        for g, _ in scored:
            mask = np.ones(g.units, bool)
            mask[shut.get(id(g), [])] = False
            g.set_kept(mask, margin=20.0)
        return kv.compression_report(gated).flops

    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if flops_of(order[:mid]) <= target else (mid + 1, hi)
    closed = order[:lo]
    for i in range(len(closed) - 1, -1, -1):  # put back the best that fit
        trial = closed[:i] + closed[i + 1 :]
        if flops_of(trial) <= target:
            closed = trial
    flops_of(closed)
    return kv.slim_model(gated), kv.compression_report(gated).structure


def run_vib(budget, seed, args, out):
    keras.utils.set_random_seed(seed)
    train, test = data(seed, args)
    gated = models.vit(vib=True)
    compiled(gated, LR, int(train.cardinality()) * args.epochs)
    # Checked every 20 steps (each call of 20), the KL scale moving by 20 %
    # a check: the ViT's KL pressure has further to go than the LeNets'.
    callback = kv.VIBBudget(target_flops=budget, check_every=20, growth=1.2, verbose=0)
    gated.fit(train, epochs=args.epochs, callbacks=[callback], verbose=0, shuffle=False)
    structure = kv.compression_report(gated).structure
    path = out / f"keras_vib_{budget:g}_{seed}.keras"
    result = finetune(kv.slim_model(gated), train, test, args, path)
    result.update(structure=structure, reached_epoch=callback.reached_epoch)
    return {budget: result}


def run_magnitude(budgets, seed, args, out):
    keras.utils.set_random_seed(seed)
    train, test = data(seed, args)
    plain = models.vit(vib=False)
    compiled(plain, LR, int(train.cardinality()) * args.epochs)
    plain.fit(train, epochs=args.epochs, verbose=0, shuffle=False)
    plain.save(out / f"plain_{seed}.keras")
    results = {}
    for budget in budgets:
        keras.utils.set_random_seed(seed)
        slim, structure = prune_to_budget(plain, budget)
        path = out / f"magnitude_{budget:g}_{seed}.keras"
        results[budget] = finetune(slim, train, test, args, path)
        results[budget]["structure"] = structure
    return results


def key(method, budget, seed, args):
    steps = f"x{args.steps_per_epoch}" if args.steps_per_epoch else ""
    return f"{method}|{budget:g}|{seed}|{args.epochs}+{args.finetune_epochs}{steps}"


def originals(results, args):
    """The test error of each seed's plain ViT (before pruning), kept."""
    for seed in args.seeds:
        k = key("original", 1.0, seed, args)
        path = pathlib.Path(args.out) / f"plain_{seed}.keras"
        if k in results or not path.exists():
            continue
        plain = keras.models.load_model(path)
        plain.compile(metrics=["accuracy"], loss=LOSS)
        _, test = data(seed, args)
        _, accuracy = plain.evaluate(test, verbose=0)
        report = kv.compression_report(plain)
        results[k] = {
            "error_pct": 100.0 * (1.0 - accuracy),
            "flops": report.flops,
            "structure": "4-128-4-128-4-128-4-128",
        }


def litert(results, args):
    """The slim ViT of the first seed at the smallest budget in LiteRT."""
    budget = min(args.budgets)
    found = results.get(key("keras_vib", budget, args.seeds[0], args))
    plain_path = pathlib.Path(args.out) / f"plain_{args.seeds[0]}.keras"
    if found is None or not plain_path.exists():
        return None
    slim = keras.models.load_model(found["model"])
    plain = keras.models.load_model(plain_path)
    test = datasets.load("mnist", "test", 100).take(1)
    images = next(iter(test))[0].numpy()
    slim_file = export.to_tflite(slim)
    outputs = export.run_tflite(slim_file, images)
    diff = float(np.max(np.abs(outputs - keras.ops.convert_to_numpy(slim(images)))))
    plain_file = export.to_tflite(plain)
    times = interleaved_ms({"plain": plain_file, "slim": slim_file}, args.runs, 3)
    plain_ms, slim_ms = times["plain"], times["slim"]
    total = kv.compression_report(plain).flops
    return {
        "budget": budget,
        "diff": diff,
        "plain_ms": plain_ms,
        "slim_ms": slim_ms,
        "flop_ratio": total / found["flops"],
    }


def table(results, lite, args, wall, load_before, total_flops):
    lines = [
        SECTION,
        "",
        f"`python benchmarks/vit_mnist.py --seeds {' '.join(map(str, args.seeds))} "
        f"--budgets {' '.join(f'{b:g}' for b in args.budgets)} "
        f"--epochs {args.epochs} --finetune-epochs {args.finetune_epochs}`",
        "",
        f"- Machine: {machine()}.",
        load_note(load_before, wall)[:-1]
        + " (this invocation's: finished runs are read back from "
        "`results.json`; a keras_vib run of 8 + 4 epochs took 3 to 5 min "
        "here, beside other work on the machine).",
        f"- `keras_vib.models.vit()`: {total_flops:,} FLOPs (multiply-"
        f"accumulates); {args.epochs} training epochs then "
        f"{args.finetune_epochs} of fine-tuning of the slim model for both "
        "methods (Adam, cosine from 1e-3 and 5e-4, batches of 100, MNIST "
        "with one-pixel shifts). Test error of the final model; `original`: "
        f"the plain ViT after its {args.epochs} epochs, before magnitude "
        "pruning.",
        "",
        "| FLOPs budget | method | seeds | error % (median) | error % range | "
        "FLOPs (median) | % of the original | structure (first seed) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for budget in [1.0] + list(args.budgets):
        rows = []
        for method in METHODS if budget < 1 else ("original",):
            found = [
                results[k]
                for s in args.seeds
                if (k := key(method, budget, s, args)) in results
            ]
            if not found:
                continue
            errors = [r["error_pct"] for r in found]
            flops = statistics.median(r["flops"] for r in found)
            rows.append((method, found, errors, flops))
        best = min((statistics.median(e) for _, _, e, _ in rows), default=None)
        for method, found, errors, flops in rows:
            median = statistics.median(errors)
            mark = "**" if median == best and len(rows) > 1 else ""
            spread = f"{min(errors):.2f}-{max(errors):.2f}" if len(errors) > 1 else "-"
            lines.append(
                f"| {100 * budget:g} % | {method} | {len(found)} | "
                f"{mark}{median:.2f}{mark} | {spread} | {flops:,.0f} | "
                f"{100 * flops / total_flops:.1f} | {found[0]['structure']} |"
            )
    lines += [
        "",
        "Structure: kept heads and MLP units per block, in order "
        "(attention-MLP of block 0, then block 1...).",
    ]
    if lite:
        lines += [
            "",
            f"LiteRT (float32, 1 thread, median of {args.runs} invokes of one "
            f"image, interleaved 3 times): the keras_vib slim ViT at "
            f"{100 * lite['budget']:g} % (seed {args.seeds[0]}) runs in "
            f"{lite['slim_ms']:.3f} ms against {lite['plain_ms']:.3f} ms for "
            f"the original ViT: {lite['plain_ms'] / lite['slim_ms']:.2f}x "
            f"faster for {lite['flop_ratio']:.2f}x fewer FLOPs; its outputs "
            f"differ from Keras's by at most {lite['diff']:.1e} (logits, "
            "100 test images).",
        ]
    return "\n".join(lines) + "\n"


def recipe_arguments(parser):
    """The seeds, the recipe, the runs folder and the output: the
    arguments this script shares with `latency_mnist.py`."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=positive_int, default=8)
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=positive_int, default=None)
    parser.add_argument("--runs", type=positive_int, default=200)
    parser.add_argument("--out", default=str(ROOT / "runs" / "vit_mnist"))
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.1])
    recipe_arguments(parser)
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    load_before = load_average()
    start = time.perf_counter()
    for seed in args.seeds:
        for method in METHODS:
            budgets = [
                b for b in args.budgets if key(method, b, seed, args) not in results
            ]
            if not budgets:
                continue
            t = time.perf_counter()
            if method == "keras_vib":
                done = {}
                for b in budgets:
                    done.update(run_vib(b, seed, args, out))
            else:
                done = run_magnitude(budgets, seed, args, out)
            for b, r in done.items():
                results[key(method, b, seed, args)] = r
                print(
                    f"seed {seed} {method} {100 * b:g} %: error {r['error_pct']:.2f} %,"
                    f" FLOPs {r['flops']:,}, {r['structure']} "
                    f"({time.perf_counter() - t:.0f} s)",
                    flush=True,
                )
            store.write_text(json.dumps(results, indent=1))
    total_flops = kv.compression_report(models.vit(vib=False)).flops
    originals(results, args)
    store.write_text(json.dumps(results, indent=1))
    lite = litert(results, args)
    wall = time.perf_counter() - start
    text = table(results, lite, args, wall, load_before, total_flops)
    publish(text, args.benchmarks_md, SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()
