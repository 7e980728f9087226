"""What `VIBBudget` adds to an epoch, before and after its cost model.

    python benchmarks/budget_overhead.py --before 12949ec

For LeNet-5-Caffe (`keras_vib.models.lenet5_caffe`, 28x28x1) and a
keras.applications model (MobileNetV2, alpha 0.35, 32x32x3, gated by
`add_gates`), on synthetic data of those shapes, each trained for
`--epochs` epochs of `--steps` batches with `VIBMonitor` and a `VIBBudget`
(a FLOPs budget of `--target` of the model, the callback's defaults
otherwise: a check every 50 steps): the time spent inside the budget's
callback hooks is measured (every hook wrapped in a timer), beside the wall
time of each epoch. The budget's overhead on an epoch is then
`hooks / (epoch - hooks)`: how much longer the epoch is than the same epoch
with `VIBMonitor` alone (the train step itself is the same: the budget only
sets variables). Reported: the median over epochs, and the time of
`on_train_begin` + `on_train_end` once per `fit`.

`--before REV` also times the whole package as commit `REV` had it
(extracted with `git archive` into a temporary folder that goes first on
`PYTHONPATH`), model by model: the older package first, then today's, each
run in a process of its own on the same gated model and data.

It writes the table, with the command and the machine, into the section
"VIBBudget's time per epoch" of `BENCHMARKS.md` (`--no-write`: nowhere).
A smoke run: `--steps 60 --epochs 2 --models lenet5 --no-write`.
"""

import argparse
import json
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_vib as kv  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import ROOT, load_average, load_note, machine, positive_int, publish  # noqa: E402, I001

SECTION = "## VIBBudget's time per epoch (`benchmarks/budget_overhead.py`)"
HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_end",
)
MODELS = {
    "lenet5": ("LeNet-5-Caffe", (28, 28, 1)),
    "mobilenetv2": ("MobileNetV2 (alpha 0.35, 32x32x3)", (32, 32, 3)),
}


def build(name):
    """The gated model `name`, with fixed initial weights."""
    keras.utils.set_random_seed(0)
    if name == "lenet5":
        return kv.models.lenet5_caffe(vib=True)
    base = keras.applications.MobileNetV2(
        input_shape=MODELS[name][1], alpha=0.35, weights=None, classes=10
    )
    return kv.add_gates(base, kl_weight=1e-5)


class Timed:
    """Wraps a callback's hooks: `seconds[hook]` adds up their time."""

    def __init__(self, callback):
        self.seconds = dict.fromkeys(HOOKS, 0.0)
        for hook in HOOKS:
            original = getattr(callback, hook)

            def timed(*args, _original=original, _hook=hook, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds[_hook] += time.perf_counter() - start

            setattr(callback, hook, timed)


def run(name, args, data):
    model = build(name)
    model.compile("adam", "sparse_categorical_crossentropy")
    budget = kv.VIBBudget(target_flops=args.target, verbose=0)
    timed = Timed(budget)
    # An epoch is timed from a mark before the budget's on_epoch_begin to
    # one after its on_epoch_end: the callbacks run in the list's order.
    marks = []

    class Begin(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            marks.append((time.perf_counter(), dict(timed.seconds)))

    class End(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            marks.append((time.perf_counter(), dict(timed.seconds)))

    x, y = data
    callbacks = [Begin(), kv.VIBMonitor(verbose=0), budget, End()]
    model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        callbacks=callbacks,
        verbose=0,
    )
    rows = []
    for begin, end in zip(marks[0::2], marks[1::2]):
        epoch = end[0] - begin[0]
        per_epoch = sum(end[1][h] - begin[1][h] for h in HOOKS[2:])
        rows.append((epoch, per_epoch))
    per_fit = timed.seconds["on_train_begin"] + timed.seconds["on_train_end"]
    return rows, per_fit, int(budget.value), int(budget.target)


def synthetic(name, args):
    shape = MODELS[name][1]
    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = rng.integers(0, 10, n)
    return x, y


def summarize(rows):
    overheads = [hooks / (epoch - hooks) for epoch, hooks in rows]
    return (
        statistics.median(overheads),
        min(overheads),
        max(overheads),
        statistics.median(h for _, h in rows),
        statistics.median(e - h for e, h in rows),
    )


def table(results, args, command, machine_line, notes):
    lines = [
        SECTION,
        "",
        "Target (issue 24): today's `VIBBudget` adds at most 5 % to an epoch "
        "of plain `VIBMonitor` training on a keras.applications model.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_line}.",
        "",
        "keras_vib as committed (today) and, with `--before`, as commit "
        "REV had it (each model in a process of its own). "
        f"Synthetic data, {args.epochs} epochs of {args.steps} batches of "
        f"{args.batch_size}, Adam, `VIBMonitor` and `VIBBudget(target_flops="
        f"{args.target})` (a check every 50 steps). Overhead: the time inside "
        "the budget's hooks over the rest of the epoch (median, min-max over "
        "the epochs); per fit: `on_train_begin` + `on_train_end`.",
        "",
        "| model | VIBBudget | overhead per epoch | budget s / epoch | "
        "rest of the epoch, s | per fit, s | final FLOPs / budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, label), (rows, per_fit, value, target) in results.items():
        med, lo, hi, hooks, rest = summarize(rows)
        lines.append(
            f"| {MODELS[name][0]} | {label} | {100 * med:.1f} % "
            f"({100 * lo:.1f}-{100 * hi:.1f}) | {hooks:.2f} | {rest:.1f} | "
            f"{per_fit:.1f} | {value:,} / {target:,} |"
        )
    verdicts = [
        f"- {MODELS[name][0]}, today: median {100 * summarize(r[0])[0]:.1f} % "
        f"per epoch: {'PASS' if summarize(r[0])[0] <= 0.05 else 'MISS'} "
        "against the 5 % target."
        for (name, label), r in results.items()
        if label == "today"
    ]
    lines += [""] + verdicts + notes + [""]
    return "\n".join(lines)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS)
    )
    parser.add_argument("--before", help="also time the VIBBudget of this commit")
    parser.add_argument("--epochs", type=positive_int, default=3)
    parser.add_argument("--steps", type=positive_int, default=200)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--target", type=float, default=0.3)
    parser.add_argument("--benchmarks-md", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def child(args):
    """Runs one model with the keras_vib this process imports; prints JSON."""
    name = args.models[0]
    rows, per_fit, value, target = run(name, args, synthetic(name, args))
    print("RESULT " + json.dumps([rows, per_fit, value, target]), flush=True)


def in_process(name, args, tree=None):
    """`child` in a process of its own (importing keras_vib from `tree`)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(tree)] + [p for p in [env.get("PYTHONPATH")] if p]
        )
    argv = [sys.executable, __file__, "--child", "--models", name]
    for key in ("epochs", "steps", "batch_size", "target"):
        argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    out = subprocess.run(
        argv,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def extract(rev, folder):
    """The package `keras_vib` of commit `rev`, extracted into `folder`."""
    archive = subprocess.run(
        ["git", "archive", rev, "keras_vib"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def main():
    args = parse_args()
    if args.child:
        return child(args)
    command = "python benchmarks/budget_overhead.py " + shlex.join(sys.argv[1:])
    load_before, start = load_average(), time.time()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = [("today", None)]
        if args.before:
            trees.insert(0, (f"commit {args.before}", extract(args.before, tmp)))
        for name in args.models:
            for label, tree in trees:
                print(f"{name}: keras_vib of {label}", flush=True)
                results[(name, label)] = in_process(name, args, tree)
    notes = [load_note(load_before, time.time() - start)]
    text = table(results, args, command.strip(), machine(), notes)
    publish(text, args.benchmarks_md, SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()
