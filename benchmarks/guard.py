"""What `keras-vib train` gives on data without a tuned recipe: the generic
recipe with its guard on the held-out error, without it, and the plain net.

    python benchmarks/guard.py --write

A (model, dataset) pair without a tuned recipe trains with the generic one
(`keras_vib.recipes.GENERIC_RECIPE`: 20 epochs, a KL factor tuned on no
data) and, by default, `VIBGuard`: pruning stops when the error on the last
10 % of the training split rises `max_error_increase` points over its best.
For each model and seed, three runs:

- `guard (default)`: `keras-vib train` with the generic recipe as it comes,
  guard on (the defaults of an untuned pair);
- `no guard`: the same with `--max-error-increase off`;
- `plain net`: the zoo model without gates, trained as many epochs as the
  generic recipe's VIB and fine-tuning epochs together, with its batch size
  and learning rate, on the whole training split.

Where the pair has a tuned recipe (the zoo's MNIST pairs), the generic
recipe's values are passed as flags, so that the runs are those of a pair
without one. Errors are on the test split, of the final model; the table
gives the median and the range over seeds. Each result is kept in
`<out>/results.json`, so an interrupted benchmark resumes where it stopped.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import ROOT, load_average, load_note, machine, publish  # noqa: E402

SECTION = "## Without a tuned recipe: the generic recipe and its guard"
RUNS = ("guard (default)", "no guard", "plain net")
NAMES = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5-Caffe", "vit": "ViT"}


def _recipes():
    sys.path.insert(0, str(ROOT))
    from keras_vib.recipes import GENERIC_RECIPE, RECIPES

    return GENERIC_RECIPE, RECIPES


def _flags(recipe):
    """The command-line flags that give `recipe`'s values."""
    flags = []
    for key, value in recipe.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return flags


def _cli_run(model, dataset, seed, guard, out, args):
    """A `keras-vib train` run (generic recipe) -> its report.json."""
    generic, recipes = _recipes()
    command = [sys.executable, "-m", "_keras_vib_cli", "train"]
    command += ["--model", model, "--dataset", dataset, "--seed", str(seed)]
    if (model, dataset) in recipes:  # make the pair one without a recipe
        command += _flags(generic)
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    if not guard:
        command += ["--max-error-increase", "off"]
    if args.synthetic:
        command += ["--synthetic", str(args.synthetic)]
    if args.steps_per_epoch:
        command += ["--steps-per-epoch", str(args.steps_per_epoch)]
    command += ["--out", str(out), "--overwrite", "--verbose", "2"]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    report = json.loads((out / "report.json").read_text())
    guard_info = report.get("guard") or {}
    return {
        "error_pct": report["error_pct"],
        "structure": report["structure"],
        "params": report["slim_params"],
        "rises": guard_info.get("rise_epochs"),
        "stopped_epoch": guard_info.get("stopped_epoch"),
    }


def _plain_run(model_name, dataset, seed, args):
    """The zoo model without gates, generic recipe's epochs, batch, lr."""
    import keras

    from keras_vib import datasets, models

    generic, _ = _recipes()
    keras.utils.set_random_seed(seed)
    info = datasets.info(dataset)
    batch = generic["batch_size"]
    if args.synthetic:
        train = datasets.synthetic(dataset, "train", args.synthetic, batch, seed=seed)
        test = datasets.synthetic(dataset, "test", args.synthetic, 1000)
    else:
        train = datasets.load(dataset, "train", batch, seed=seed)
        test = datasets.load(dataset, "test", 1000)
    if args.steps_per_epoch:
        train = train.take(args.steps_per_epoch)
    model = models.get_model(
        model_name,
        vib=False,
        num_classes=info["num_classes"],
        input_shape=info["input_shape"],
    )
    model.compile(
        keras.optimizers.Adam(generic["learning_rate"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=20,
    )
    epochs = (args.epochs or generic["epochs"]) + generic["finetune_epochs"]
    model.fit(train, epochs=epochs, verbose=2)
    _, accuracy = model.evaluate(test, verbose=0)
    return {
        "error_pct": round(100.0 * (1.0 - accuracy), 4),
        "structure": "(all)",
        "params": model.count_params(),
        "rises": None,
        "stopped_epoch": None,
    }


def _rises(result):
    """`"2, 5 (stop)"`: the epochs (from 1) of a run's rises."""
    rises = [str(e + 1) for e in result.get("rises") or []]
    if result.get("stopped_epoch") is not None:
        rises[-1] += " (stop)"
    return ", ".join(rises) or "none"


def _spread(values):
    values = sorted(values)
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.2f}"
    return f"{median:.2f} [{values[0]:.2f}, {values[-1]:.2f}]"


def table(results, models, dataset, seeds, args):
    generic, recipes = _recipes()
    lines = [
        SECTION,
        "",
        f"`python benchmarks/guard.py --models {' '.join(models)} --dataset "
        f"{dataset} --seeds {' '.join(map(str, seeds))}`"
        + (f" `--epochs {args.epochs}`" if args.epochs else "")
        + (f" `--synthetic {args.synthetic}`" if args.synthetic else ""),
        "",
        f"What a user gets from `keras-vib train --model M --dataset {dataset}` "
        "when the pair has no tuned recipe: the generic recipe "
        f"({args.epochs or generic['epochs']} VIB epochs, KL factor "
        f"{generic['kl_factor']:g}, then {generic['finetune_epochs']} epochs "
        "of fine-tuning) with its guard (at each rise of the error on the "
        "last 10 % of the training split by more than "
        f"{generic['max_error_increase']:g} point over its best, the units "
        "closed since reopen and the KL pressure is divided by 4; the third "
        "rise stops pruning), the same without the guard, and the plain net "
        "trained as many epochs. Test "
        "error of the final model in %, median [range] over seeds; kept "
        "parameters of the slim model against the plain net's.",
        "",
        "| model | run | test error % | kept parameters % | structure (seed "
        f"{seeds[0]}) | guard's rises at epoch, per seed |",
        "|---|---|---|---|---|---|",
    ]
    for model in models:
        plain = [results.get(f"{model}/plain net/{s}") for s in seeds]
        full = next((p["params"] for p in plain if p), None)
        for run in RUNS:
            found = [results.get(f"{model}/{run}/{s}") for s in seeds]
            found = [r for r in found if r]
            if not found:
                continue
            errors = _spread([r["error_pct"] for r in found])
            kept = _spread([100.0 * r["params"] / full for r in found]) if full else "-"
            stopped = "; ".join(_rises(r) for r in found) if run == RUNS[0] else ""
            tuned = (
                " (generic recipe given as flags)"
                if (
                    model,
                    dataset,
                )
                in recipes
                and run != "plain net"
                else ""
            )
            lines.append(
                f"| {NAMES.get(model, model)} | {run}{tuned} | {errors} | {kept} | "
                f"{found[0]['structure']} | {stopped} |"
            )
    lines += ["", f"- Machine: {machine()}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet5", "lenet300"])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="instead of the recipe's 20")
    parser.add_argument("--synthetic", type=int, help="N random examples (smoke)")
    parser.add_argument("--steps-per-epoch", type=int, help="cap (smoke runs)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "guard_runs"))
    parser.add_argument("--write", action="store_true", help="into BENCHMARKS.md")
    parser.add_argument("--benchmarks", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    load_before, start = load_average(), time.perf_counter()
    for seed in args.seeds:
        for model in args.models:
            for run in RUNS:
                key = f"{model}/{run}/{seed}"
                if key in results:
                    continue
                if run == "plain net":
                    result = _plain_run(model, args.dataset, seed, args)
                else:
                    folder = out / f"{model}_{run.split()[0]}_seed{seed}"
                    guard = run == RUNS[0]
                    result = _cli_run(model, args.dataset, seed, guard, folder, args)
                results[key] = result
                store.write_text(json.dumps(results, indent=2))
    text = table(results, args.models, args.dataset, args.seeds, args)
    text += load_note(load_before, time.perf_counter() - start) + "\n"
    publish(text, args.benchmarks, SECTION, args.write)


if __name__ == "__main__":
    main()
