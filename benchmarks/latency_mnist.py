"""A ViT on MNIST to a latency budget, against a FLOPs budget whose slim
models measure that latency in LiteRT.

    python benchmarks/latency_mnist.py [--seeds 0 1 2] [--flops-budget 0.1]
        [--epochs 8] [--finetune-epochs 4] [--out runs/vit_mnist] [--no-write]

The recipe of `benchmarks/vit_mnist.py` (and its runs: the FLOPs-budget
runs it keeps in `<out>/results.json` are read back, and trained where
missing): `keras_vib.models.vit` with gates on heads and MLP units,
`--epochs` epochs with a budget then `--finetune-epochs` of fine-tuning of
the slim model.

1. The slim ViTs of the FLOPs budget (`VIBBudget(target_flops=b)`) are
   converted to LiteRT and timed (float32, XNNPACK, 1 thread, median of
   `--runs` invokes of one image, each model 3 times, interleaved); the
   target is the median of their times (or `--target-ms`).
2. The same recipe with `VIBBudget(target_latency=target)`: units priced by
   the time they save (`keras_vib.latency.LatencyModel`, measured on this
   machine), the slim model timed when training ends.
3. Every slim model is timed again, interleaved: the table gives each
   method's test error (final models, median and range over the seeds),
   time and FLOPs.
"""

import argparse
import json
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import vit_mnist  # noqa: E402
from _common import (
    interleaved_ms,
    load_average,
    load_note,
    machine,
    publish,
)

import keras_vib as kv  # noqa: E402
from keras_vib import export, models  # noqa: E402

SECTION = "## A ViT on MNIST to a latency budget (`benchmarks/latency_mnist.py`)"


def timed(paths, runs, rounds=3):
    """The median LiteRT time (ms) of each saved model, interleaved."""
    files = {p: export.to_tflite(keras.models.load_model(p)) for p in paths}
    return interleaved_ms(files, runs, rounds)


def run_latency(target, seed, args, out):
    keras.utils.set_random_seed(seed)
    train, test = vit_mnist.data(seed, args)
    gated = models.vit(vib=True)
    vit_mnist.compiled(gated, vit_mnist.LR, int(train.cardinality()) * args.epochs)
    callback = kv.VIBBudget(
        target_latency=target, check_every=20, growth=1.2, verbose=0
    )
    gated.fit(train, epochs=args.epochs, callbacks=[callback], verbose=0, shuffle=False)
    structure = kv.compression_report(gated).structure
    path = out / f"latency_{target:.4f}_{seed}.keras"
    result = vit_mnist.finetune(kv.slim_model(gated), train, test, args, path)
    result.update(
        structure=structure,
        measured_ms=callback.measured,
        predicted_ms=callback.predicted,
        reached_epoch=callback.reached_epoch,
    )
    return result


def latency_key(target, seed, args):
    """The key of a run (or with `seed="target"`, of the target measured
    for the FLOPs budget `target`)."""
    steps = f"x{args.steps_per_epoch}" if args.steps_per_epoch else ""
    return f"latency|{target:.4f}|{seed}|{args.epochs}+{args.finetune_epochs}{steps}"


def table(rows, target, plain_ms, args, wall, load_before, total_flops):
    lines = [
        SECTION,
        "",
        f"`python benchmarks/latency_mnist.py --seeds "
        f"{' '.join(map(str, args.seeds))} --flops-budget {args.flops_budget:g} "
        f"--epochs {args.epochs} --finetune-epochs {args.finetune_epochs}`",
        "",
        f"- Machine: {machine()}.",
        load_note(load_before, wall)[:-1]
        + " (finished runs are read back from `results.json`: the FLOPs-"
        "budget runs are `benchmarks/vit_mnist.py`'s).",
        f"- `keras_vib.models.vit()` ({total_flops:,} FLOPs; the plain ViT "
        f"{1000 * plain_ms:.1f} µs in LiteRT), {args.epochs} epochs with a budget "
        f"then {args.finetune_epochs} of fine-tuning of the slim model (Adam, "
        "batches of 100, MNIST with one-pixel shifts). LiteRT float32, "
        f"XNNPACK, 1 thread, median of {args.runs} invokes of one image, "
        "each model timed 3 times interleaved with the others, after "
        "training. The latency target: "
        + (
            f"{1000 * target:.1f} µs, given."
            if args.target_ms
            else "the median time of the slim models of the FLOPs budget "
            f"({100 * args.flops_budget:g} % of the FLOPs), {1000 * target:.1f} µs."
        ),
        "",
        "| budget | seeds | error % (median) | error % range | µs (median) | "
        "µs range | off the target | FLOPs (median) | structure (first seed) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, found in rows:
        if not found:
            continue
        error = [r["error_pct"] for r in found]
        ms = [1000 * r["ms"] for r in found]
        off = 100 * (statistics.median(ms) / (1000 * target) - 1)
        lines.append(
            f"| {name} | {len(found)} | {statistics.median(error):.2f} | "
            f"{min(error):.2f}-{max(error):.2f} | {statistics.median(ms):.1f} | "
            f"{min(ms):.1f}-{max(ms):.1f} | {off:+.1f} % | "
            f"{statistics.median(r['flops'] for r in found):,.0f} | "
            f"{found[0]['structure']} |"
        )
    ends = [
        r["measured_ms"] for name, found in rows if "latency" in name for r in found
    ]
    lines += [
        "",
        "Structure: kept heads and MLP units per block, in order. "
        "`µs`: the slim models timed again after all training; the "
        "latency-budget runs measured "
        + ", ".join(f"{1000 * m:.1f}" for m in ends)
        + " µs when their training ended.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flops-budget", type=float, default=0.1)
    parser.add_argument("--target-ms", type=float, default=None)
    vit_mnist.recipe_arguments(parser)
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    load_before = load_average()
    start = time.perf_counter()
    budget = args.flops_budget
    for seed in args.seeds:  # the FLOPs-budget runs (vit_mnist.py's)
        k = vit_mnist.key("keras_vib", budget, seed, args)
        if k not in results:
            t = time.perf_counter()
            results[k] = vit_mnist.run_vib(budget, seed, args, out)[budget]
            store.write_text(json.dumps(results, indent=1))
            print(f"seed {seed} FLOPs budget: error {results[k]['error_pct']:.2f} % "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    flops_runs = [
        results[vit_mnist.key("keras_vib", budget, s, args)] for s in args.seeds
    ]
    plain = out / "plain_vit.keras"
    if not plain.exists():
        models.vit(vib=False).save(plain)  # random weights: time only
    target = args.target_ms
    kept = latency_key(budget, "target", args)  # measured once, then kept
    if target is None and kept not in results:
        times = timed([r["model"] for r in flops_runs], args.runs)
        results[kept] = statistics.median(times.values())
        store.write_text(json.dumps(results, indent=1))
    if target is None:
        target = results[kept]
        print(f"target: {target:.4f} ms (the FLOPs-budget slim models)", flush=True)
    for seed in args.seeds:
        k = latency_key(target, seed, args)
        if k not in results:
            t = time.perf_counter()
            results[k] = run_latency(target, seed, args, out)
            store.write_text(json.dumps(results, indent=1))
            r = results[k]
            print(f"seed {seed} latency budget: error {r['error_pct']:.2f} %, "
                  f"{r['measured_ms']:.4f} ms at the end, {r['structure']} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    latency_runs = [results[latency_key(target, s, args)] for s in args.seeds]
    everything = [str(plain)] + [r["model"] for r in flops_runs + latency_runs]
    times = timed(everything, args.runs)
    for r in flops_runs + latency_runs:
        r["ms"] = times[r["model"]]
    rows = [
        (f"FLOPs {100 * budget:g} %", flops_runs),
        (f"latency {1000 * target:.1f} µs", latency_runs),
    ]
    total_flops = kv.compression_report(models.vit(vib=False)).flops
    wall = time.perf_counter() - start
    text = table(rows, target, times[str(plain)], args, wall, load_before, total_flops)
    publish(text, args.benchmarks_md, SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()
