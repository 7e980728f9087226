"""The `keras-vib` command line: train, slim, export, report.

    keras-vib train --model lenet300 --dataset mnist --out runs/lenet300
    keras-vib slim runs/lenet300/gated.keras --out slim.keras
    keras-vib export runs/lenet300/gated.keras --quantization int8 \\
        --dataset mnist --out lenet300_int8.tflite
    keras-vib report runs/lenet300/gated.keras --json

The commands' work, one floor below the entry point: the top-level module
`_keras_vib_cli` parses the arguments (before Keras loads) and calls `run`
with them; this module never imports it back.
"""

import contextlib
import json
import os
import pathlib
import sys
import time
from typing import NamedTuple

from keras_vib.recipes import GENERIC_RECIPE, RECIPES


class CLIError(Exception):
    """A user error found while running a command: printed as one line,
    exit status 2."""


# Settings of `train` that change its speed, not its results.
SPEED_ONLY = ("steps_per_execution",)


def _recipe(args):
    recipe = dict(RECIPES.get((args.model, args.dataset), GENERIC_RECIPE))
    for key in recipe:
        value = getattr(args, key, None)
        if value is not None:
            recipe[key] = value
    return recipe


# The budget arguments of `train` (one at most: VIBBudget's targets).
_BUDGETS = ("target_flops", "target_params", "target_latency")


def run_config(args):
    """Every setting of a `train` run (parsed `args`), as saved in report.json."""
    return {
        "model": args.model,
        "dataset": args.dataset,
        "seed": args.seed,
        "steps_per_epoch": args.steps_per_epoch,
        "steps_per_execution": args.steps_per_execution,
        "synthetic": args.synthetic,
        "data_dir": args.data_dir,
        "no_download": args.no_download,
        "width": args.width,
        **_recipe(args),
        **{
            key: getattr(args, key)
            for key in (*_BUDGETS, "latency_quantization", "round_to", "unit_cost")
            if getattr(args, key, None) is not None
        },
    }


def _pretrain(model, train_ds, epochs, verbose):
    """Plain training of a gated model: its gates' KL terms are switched off
    (`kl_scale` 0) for `epochs` epochs, then back on."""
    import keras_vib as kv

    gates = [gate for _, gate in kv.gates.gates(model)]
    for gate in gates:
        gate.set_kl_scale(0.0)
    try:
        model.fit(train_ds, epochs=epochs, verbose=verbose, shuffle=False)
    finally:
        for gate in gates:
            gate.set_kl_scale(1.0)


def _schedule(recipe, steps_per_epoch):
    import keras

    lr = recipe["learning_rate"]
    if recipe["lr_schedule"] == "step":
        step = recipe["lr_step_epochs"] * steps_per_epoch
        count = recipe["epochs"] // recipe["lr_step_epochs"]
        boundaries = [step * k for k in range(1, count + 1)]
        values = [lr * recipe["lr_step_factor"] ** k for k in range(count + 1)]
        if not boundaries:
            return lr
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if recipe["lr_schedule"] == "cosine":
        total = recipe["epochs"] * steps_per_epoch
        return keras.optimizers.schedules.CosineDecay(lr, total)
    return lr


def _load_dataset(name, split, batch_size, data_dir, **kwargs):
    """`datasets.load`, its not-found message in the command's words."""
    from keras_vib import datasets

    try:
        return datasets.load(name, split, batch_size, data_dir=data_dir, **kwargs)
    except datasets.DatasetNotFoundError as e:
        message = str(e).replace("the `data_dir=` argument", "--data-dir")
        if data_dir is not None:
            message = message.replace(
                f"data_dir={data_dir!r}", f"--data-dir {data_dir}"
            )
        raise CLIError(message) from None


# The training examples a guard (`max_error_increase`) holds out to watch.
HELD_OUT = "train[90%:]"
TRAINED_ON = "train[:90%]"


class _Data(NamedTuple):
    """The batches of a run: `train` trains, `validation` is watched during
    training (the held-out examples when guarded, else the test split),
    `test` gives the figures."""

    train: object
    validation: object
    test: object


def _has_budget(args):
    """Whether the run has a budget (--target-flops, -params or -latency)."""
    return any(getattr(args, name, None) is not None for name in _BUDGETS)


def guarded(args, recipe):
    """Whether a `train` run has a guard on its held-out error (the
    recipe's or the command line's `max_error_increase`, and no budget)."""
    return recipe["max_error_increase"] > 0 and not _has_budget(args)


def _data(args, recipe):
    from keras_vib import datasets

    batch = recipe["batch_size"]
    guard = guarded(args, recipe)
    if args.synthetic:
        train = datasets.synthetic(
            args.dataset, "train", args.synthetic, batch, seed=args.seed,
            augment=recipe["augment"],
        )  # fmt: skip
        test = datasets.synthetic(args.dataset, "test", args.synthetic, 1000)
        held_out = None
        if guard:  # other random examples of the training distribution
            held_out = datasets.synthetic(
                args.dataset, "train", max(1, args.synthetic // 10), 1000,
                seed=args.seed + 1, shuffle=False,
            )  # fmt: skip
        return _Data(train, held_out or test, test)
    common = dict(data_dir=args.data_dir, download=not args.no_download)
    train = _load_dataset(
        args.dataset,
        TRAINED_ON if guard else "train",
        batch,
        augment=recipe["augment"],
        seed=args.seed,
        **common,
    )
    test = _load_dataset(args.dataset, "test", 1000, **common)
    if not guard:
        return _Data(train, test, test)
    held_out = _load_dataset(args.dataset, HELD_OUT, 1000, **common)
    return _Data(train, held_out, test)


def _gated_model(args, recipe, info, steps):
    """The zoo model with gates, compiled with the recipe's optimizer."""
    import keras

    from keras_vib import models

    extra = {}
    if args.width is not None:
        if args.model != "vgg16":
            raise CLIError(f"--width applies to vgg16 only, not {args.model}")
        extra["width"] = args.width
    model = models.get_model(
        args.model,
        vib=True,
        kl_weight=recipe["kl_factor"],
        num_classes=info["num_classes"],
        input_shape=info["input_shape"],
        **extra,
    )
    model.compile(
        keras.optimizers.Adam(_schedule(recipe, steps)),
        _loss(),
        metrics=["accuracy"],
        steps_per_execution=args.steps_per_execution,
    )
    return model


def _loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _latency_quantization(args):
    found = getattr(args, "latency_quantization", None)
    return None if found in (None, "float32") else found


def _budget(args, model):
    """The `VIBBudget` of `--target-flops`, `--target-params` or
    `--target-latency`, checked
    against `model`, or None."""
    import keras_vib as kv

    if not _has_budget(args):
        return None
    # (--kl-factor or --warmup-epochs beside a budget: refused on parsing.)
    given = {name: getattr(args, name, None) for name in _BUDGETS}
    flag = "--" + next(n for n, v in given.items() if v is not None).replace("_", "-")
    budget = kv.VIBBudget(
        **given,
        verbose=1 if args.verbose else 0,
        round_to=getattr(args, "round_to", None),
        unit_cost=getattr(args, "unit_cost", None) or "auto",
        latency_quantization=_latency_quantization(args),
    )
    try:
        budget.resolve(model)
    except ValueError as e:
        raise CLIError(f"{flag}: {e}") from None
    return budget


def _fit_vib(model, budget, guard, data, recipe, args, out):
    """The VIB epochs (after the plain ones the recipe may start with)."""
    import keras

    import keras_vib as kv

    pretrain = min(recipe["pretrain_epochs"], recipe["epochs"])
    vib_epochs = recipe["epochs"] - pretrain
    if budget is None and 0 < vib_epochs < recipe["warmup_epochs"]:
        share = vib_epochs / recipe["warmup_epochs"]
        _note(
            f"the {vib_epochs} VIB epochs end inside the {recipe['warmup_epochs']}-"
            f"epoch KL warm-up: the KL weight reaches {100 * share:.0f}% of its "
            "value, so little is pruned (shorten it with --warmup-epochs)"
        )
    if pretrain:
        _pretrain(model, data.train, pretrain, args.verbose)
    monitor = kv.VIBMonitor(plot_dir=out, verbose=1 if args.verbose else 0)
    callbacks = [
        monitor,
        keras.callbacks.CSVLogger(out / "history.csv"),
        kv.VIBProgbarLogger(),  # the monitor's counts as whole numbers
    ]
    if budget is not None:  # the budget steers the KL scale itself
        callbacks.insert(0, budget)
    else:
        if guard is not None:  # after the warm-up: it overrides its KL scale
            callbacks.insert(0, guard)
        if recipe["warmup_epochs"]:
            callbacks.insert(0, kv.VIBWarmup(recipe["warmup_epochs"]))
    if vib_epochs:
        model.fit(
            data.train,
            epochs=vib_epochs,
            validation_data=data.validation,
            callbacks=callbacks,
            verbose=args.verbose,
            shuffle=False,  # the dataset shuffles itself
        )


def _finetune(slim, structure, data, recipe, args, out, steps):
    """Prune, then fine-tune: the slim model (stock layers, closed units
    gone) trains on the cross-entropy alone, without gate noise."""
    import keras

    if args.verbose:
        print(
            f"Fine-tuning the slim model ({structure}, {slim.count_params():,} "
            f"parameters) for {recipe['finetune_epochs']} epochs",
            flush=True,
        )
    total = recipe["finetune_epochs"] * steps
    slim.compile(
        keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(recipe["finetune_lr"], total)
        ),
        _loss(),
        metrics=["accuracy"],
        steps_per_execution=args.steps_per_execution,
    )
    slim.fit(
        data.train,
        epochs=recipe["finetune_epochs"],
        validation_data=data.validation,
        callbacks=[keras.callbacks.CSVLogger(out / "finetune_history.csv")],
        verbose=args.verbose,
        shuffle=False,
    )


def _save_models(model, slim, out, quiet_native):
    """gated.keras, slim.keras and slim_float32.tflite in `out` (the
    converter's native log lines inside `quiet_native()`)."""
    import keras

    import keras_vib as kv

    model.save(out / "gated.keras")
    slim.save(out / "slim.keras")
    if keras.backend.backend() == "tensorflow":
        with quiet_native():
            kv.export.to_tflite(slim, path=out / "slim_float32.tflite")
    else:  # Keras's LiteRT export needs TensorFlow: convert the saved model
        _export_on_tensorflow(out / "slim.keras", out / "slim_float32.tflite")


def _result(args, recipe, report, errors, slim, controls, wall):
    """What report.json holds. Errors and ratios in %, rounded: 4 decimals
    hold every figure a test set of up to a million examples can tell,
    without float32 noise."""
    import keras

    error, gated_error = errors
    result = {
        "error_pct": round(error, 4),
        "gated_error_pct": round(gated_error, 4),
        "r_w_pct": round(100.0 * report.r_w, 4),
        "r_n_pct": round(100.0 * report.r_n, 4),
        "flops": report.flops,
        "structure": report.structure,
        "epochs": recipe["epochs"],
        "wall_seconds": wall,
        "slim_params": slim.count_params(),
        "config": run_config(args),
        "backend": keras.backend.backend(),
        "report": report.to_dict(),
    }
    budget, guard = controls
    if guard is not None:
        result["guard"] = {
            "max_error_increase": guard.max_error_increase,
            "watched": f"{HELD_OUT} (held out)" if not args.synthetic else "held out",
            "best_error_pct": round(guard.best_error, 4),
            "best_epoch": guard.best_epoch,
            "rise_epochs": guard.rises,
            "kl_factor": guard.kl_factor,
            "stopped_epoch": guard.stopped_epoch,
            "reopened_units": guard.reopened,
        }
    if budget is not None:
        result["budget"] = {
            "kind": budget.kind,
            "requested": budget.budget,
            "target": budget.target,
            "reached": budget.value,
            "original": budget.reference,
            "reached_epoch": budget.reached_epoch,
            "adjusted_units": budget.adjusted,
            "cost_power": budget.power,
            "unit_cost": budget.unit_cost,
            "measured_ms": budget.measured,
        }
    return result


def train(args, quiet_native):
    """`keras-vib train`: data, gated model, VIB epochs, slim, fine-tune,
    save, export, report."""
    import keras

    from keras_vib import datasets

    recipe = _recipe(args)
    final = pathlib.Path(
        args.out or f"runs/{args.model}_{args.dataset}_seed{args.seed}"
    )
    keras.utils.set_random_seed(args.seed)
    info = datasets.info(args.dataset)
    data = _data(args, recipe)
    if args.steps_per_epoch:
        data = _Data(data.train.take(args.steps_per_epoch), *data[1:])
    steps = int(data.train.cardinality())
    if steps <= 0:
        steps = -(-info["train_examples"] // recipe["batch_size"])
    model = _gated_model(args, recipe, info, steps)
    controls = (_budget(args, model), _guard(args, recipe))
    _announce(args, recipe)
    with _run_folder(final) as out:  # all checked: now write
        return _train_run(
            args, recipe, data, steps, model, controls, out, final, quiet_native
        )


def _guard(args, recipe):
    """The run's `VIBGuard`, or None."""
    import keras_vib as kv

    if not guarded(args, recipe):
        return None
    verbose = 1 if args.verbose else 0
    return kv.VIBGuard(recipe["max_error_increase"], verbose=verbose)


def _announce(args, recipe):
    """One line at the start of a run on how its size is chosen, when no
    tuned recipe chooses it or the guard is on."""
    tuned = (args.model, args.dataset) in RECIPES
    budget = _has_budget(args)
    if tuned and not guarded(args, recipe):
        return
    start = (
        f"{args.model} on {args.dataset} has a tuned recipe"
        if tuned
        else f"no tuned recipe for {args.model} on {args.dataset}: the generic "
        f"one ({recipe['epochs']} epochs, KL factor {recipe['kl_factor']:g})"
    )
    if budget:
        how = "pruned to the budget"
    elif guarded(args, recipe):
        watched = "held-out examples" + (
            "" if args.synthetic else " (the last 10% of the training split)"
        )
        how = (
            f"pruning eases, then stops, when the error on {watched} rises "
            f"{_points(recipe['max_error_increase'])} over its best "
            "(--max-error-increase; --target-flops, --target-params or "
            "--target-latency for a "
            "budget instead)"
        )
    else:
        how = (
            "no guard (--max-error-increase off): a KL factor too strong for "
            "these data can prune the net to collapse"
        )
    print(f"keras-vib: {start}, {how}", flush=True)


def _points(value):
    return f"{value:g} point" + ("" if value == 1 else "s")


def _train_run(args, recipe, data, steps, model, controls, out, final, quiet_native):
    """The run itself, written into `out` (renamed `final` at the end)."""
    import keras_vib as kv

    start = time.perf_counter()
    _fit_vib(model, *controls, data, recipe, args, out)
    round_to = getattr(args, "round_to", None)
    if round_to and controls[0] is None:  # (a budget has rounded within itself)
        masks = kv.slim.rounded_masks(model, round_to)
        for _, gate in kv.gates.gates(model):
            gate.set_kept(masks[id(gate)])
    _, gated_accuracy = model.evaluate(data.test, verbose=0)
    report = kv.compression_report(model)
    slim = kv.slim_model(model)
    accuracy = gated_accuracy
    if recipe["finetune_epochs"]:
        _finetune(slim, report.structure, data, recipe, args, out, steps)
        _, accuracy = slim.evaluate(data.test, verbose=0)
    wall = time.perf_counter() - start
    _save_models(model, slim, out, quiet_native)
    errors = (100.0 * (1.0 - accuracy), 100.0 * (1.0 - gated_accuracy))
    result = _result(args, recipe, report, errors, slim, controls, wall)
    (out / "report.json").write_text(json.dumps(result, indent=2))
    print(report)
    if recipe["finetune_epochs"]:
        print(f"test error before fine-tuning: {result['gated_error_pct']:.2f}%")
    print(f"test error (final model): {result['error_pct']:.2f}%")
    print(f"wrote {final}")
    return 0


@contextlib.contextmanager
def _run_folder(final):
    """A fresh folder beside `final` to write a run into; it becomes
    `final` (replacing what was there) when the block ends, and is removed
    if it raises (or is interrupted): `final` is never half-written."""
    import shutil

    final.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}"
    work = final.parent / f".{final.name}.partial-{tag}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    old = final.parent / f".{final.name}.old-{tag}"
    if final.exists():
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _note(message):
    """A one-line notice on stderr: the run goes on."""
    print(f"keras-vib: note: {message}", file=sys.stderr, flush=True)


def _export_on_tensorflow(model_path, tflite_path, args=None):
    """`keras-vib export` in a subprocess on the TensorFlow backend (a slim
    model is stock Keras: it loads on any backend)."""
    import subprocess

    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    command = [sys.executable, "-m", "_keras_vib_cli", "export", str(model_path),
               "--out", str(tflite_path)]  # fmt: skip
    if args is not None:
        command += ["--quantization", args.quantization]
        for flag in ("dataset", "data_dir", "round_to"):
            if getattr(args, flag, None):
                command += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no message"]
        raise CLIError(f"the .tflite conversion on tensorflow failed: {lines[-1]}")


def _select_backend(args, console):
    """Runs the command on `--backend`: Keras picks its backend when it is
    first imported (by keras_vib itself), so the console script starts
    again with `KERAS_BACKEND` set; a call of `main` from Python cannot."""
    import keras

    wanted = getattr(args, "backend", None)
    if wanted is None or keras.backend.backend() == wanted:
        return
    if not console:
        raise CLIError(
            f"--backend {wanted}: Keras is already imported on the "
            f"{keras.backend.backend()} backend in this process (run "
            "keras-vib as a command, or set KERAS_BACKEND before Python)"
        )
    env = dict(os.environ, KERAS_BACKEND=wanted)
    sys.stdout.flush()
    os.execve(
        sys.executable, [sys.executable, "-m", "_keras_vib_cli", *sys.argv[1:]], env
    )


MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def _load(path):
    import zipfile

    import keras

    import keras_vib  # noqa: F401  (registers the keras_vib layers)

    suffix = pathlib.Path(path).suffix
    if suffix not in MODEL_SUFFIXES:
        raise CLIError(
            f"expected a Keras model file ({', '.join(MODEL_SUFFIXES)}), "
            f"received model={path!r}"
        )
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise CLIError(
            f"model={path!r} is not a Keras model: a .keras file is a zip "
            "archive, this one is not (corrupt, or another format renamed)"
        )
    try:
        return keras.models.load_model(path)
    except Exception as e:  # a corrupt or foreign file
        raise CLIError(f"cannot load model {path!r}: {e}".splitlines()[0]) from e


def _save_keras(model, path):
    """`model.save(path)`, its missing folders made, and atomically: a
    failed save leaves nothing at `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial.keras")
    try:
        model.save(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _fine_tuned_beside(path):
    """A note when `path` is the gated model of a `train` run whose folder
    holds the fine-tuned slim model: that one is what to ship."""
    path = pathlib.Path(path)
    slim, report = path.with_name("slim.keras"), path.with_name("report.json")
    if path.name != "gated.keras" or not (slim.exists() and report.exists()):
        return
    try:
        result = json.loads(report.read_text())
        epochs = int(result["config"]["finetune_epochs"])
    except (ValueError, KeyError, TypeError):
        return
    if epochs:
        _note(
            f"{slim} beside it is this run's slim model fine-tuned for {epochs} "
            f"more epochs: ship that one (keras-vib export {slim} ...)"
        )


def slim_command(args, quiet_native):
    import keras_vib as kv

    _fine_tuned_beside(args.model)
    slim = kv.slim_model(_load(args.model), round_to=getattr(args, "round_to", None))
    _save_keras(slim, args.out)
    print(f"wrote {args.out} ({slim.count_params():,} parameters)")
    return 0


def export_command(args, quiet_native):
    import keras
    import numpy as np

    import keras_vib as kv

    _fine_tuned_beside(args.model)
    fmt = getattr(args, "format", None) or "litert"  # (resolved on parsing)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "litert" and keras.backend.backend() != "tensorflow":
        # Keras's LiteRT export needs TensorFlow: this command, there.
        _export_on_tensorflow(args.model, args.out, args)
        print(f"wrote {args.out}")
        return 0
    model = _load(args.model)
    round_to = getattr(args, "round_to", None)
    if round_to is not None:
        if not kv.gates.has_gates(model):
            raise CLIError(
                f"--round-to {round_to}: {args.model} has no gates (a slim "
                "model's counts are fixed: export the gated model)"
            )
        model = kv.slim_model(model, round_to=round_to)
    if fmt != "litert":
        export = kv.export.to_onnx if fmt == "onnx" else kv.export.to_saved_model
        with quiet_native():
            try:
                export(model, args.out)
            except ImportError as error:  # onnx, onnxruntime or tf2onnx
                raise CLIError(
                    f"--format onnx needs the ONNX packages ({error}): pip "
                    "install keras_vib[onnx]"
                ) from None
        print(f"wrote {args.out}")
        return 0
    quantization = None if args.quantization == "float32" else args.quantization
    data = None
    if quantization == "int8":  # (--dataset checked on parsing)
        batches = _load_dataset(args.dataset, "train", 100, args.data_dir).take(5)
        data = np.concatenate([x for x, _ in batches.as_numpy_iterator()])
    with quiet_native():
        kv.export.to_tflite(
            model, quantization, representative_data=data, path=args.out
        )
    print(f"wrote {args.out}")
    return 0


def report_command(args, quiet_native):
    import keras_vib as kv

    reference = _load(args.reference) if args.reference else None
    shapes = args.input_shape
    if shapes is not None and len(shapes) == 1:
        shapes = shapes[0]
    try:
        report = kv.compression_report(
            _load(args.model), reference=reference, input_shape=shapes
        )
    except ValueError as error:
        if "input_shape" not in str(error):
            raise
        message = str(error).replace("`input_shape`", "--input-shape")
        raise CLIError(message.replace("input_shape=", "--input-shape ")) from None
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0


# Each command takes the parsed arguments and `quiet_native` (see `run`).
COMMANDS = {
    "train": train,
    "slim": slim_command,
    "export": export_command,
    "report": report_command,
}


@contextlib.contextmanager
def _one_line_warnings():
    """Warnings printed as one line each (`keras-vib: warning: ...`), not
    Python's two lines pointing into a library's source."""
    import warnings

    def one_line(message, category, filename, lineno, line=None):
        return "keras-vib: warning: " + " ".join(str(message).split()) + "\n"

    original = warnings.formatwarning
    warnings.formatwarning = one_line  # (a `catch_warnings` record still works)
    try:
        yield
    finally:
        warnings.formatwarning = original


def run(args, console=False, quiet_native=contextlib.nullcontext):
    """Runs a parsed command.

    Args:
        args: the `argparse.Namespace` of the command line (parsed by
            `_keras_vib_cli.build_parser`).
        console: whether the process is the `keras-vib` command itself (so
            that `--backend` may start it again on another backend).
        quiet_native: a context manager factory under which the TFLite
            conversion runs, to hide the converter's native log lines (the
            entry point's `quiet_native_stderr`); the default hides nothing.

    Returns:
        The exit status: 0, or 2 after a one-line error on stderr.
    """
    try:
        _select_backend(args, console)
        with _one_line_warnings():
            return COMMANDS[args.command](args, quiet_native)
    except CLIError as e:
        print(f"keras-vib: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = f": {args.out} left as it was" if args.command == "train" else ""
        print(f"keras-vib: interrupted{where}", file=sys.stderr)
        return 130
    except ValueError as e:  # bad input found by the library
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"keras-vib: error: {message}", file=sys.stderr)
        return 2
