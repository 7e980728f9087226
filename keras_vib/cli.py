"""The `keras-vib` command line: train, slim, export, report.

    keras-vib train --model lenet300 --dataset mnist --out runs/lenet300
    keras-vib slim runs/lenet300/gated.keras --out slim.keras
    keras-vib export runs/lenet300/gated.keras --quantization int8 \\
        --dataset mnist --out lenet300_int8.tflite
    keras-vib report runs/lenet300/gated.keras --json
"""

import argparse
import json
import math
import os
import pathlib
import sys
import time

# The recipes `train` uses by default, by (model, dataset). Each value can
# be overridden on the command line.
_GENERIC = dict(
    epochs=20,
    batch_size=100,
    learning_rate=1e-3,
    lr_schedule="constant",
    lr_step_epochs=30,
    lr_step_factor=0.5,
    kl_factor=1e-4,
    pretrain_epochs=0,
    warmup_epochs=2,
    augment=False,
    finetune_epochs=0,
    finetune_lr=1e-4,
)
_STEP = dict(_GENERIC, lr_schedule="step")
# Both MNIST recipes: one-pixel random shifts in the VIB and the fine-tuning
# epochs, then fine-tuning of the slim model.
_MNIST = dict(_STEP, augment=True)
RECIPES = {
    # KL ramped up over 20 epochs, then 80 more with the learning rate halved
    # every 25: the slow ramp keeps more useful input pixels than a fast one.
    # Then 60 epochs fine-tune the slim model from a learning rate of 3e-3
    # (without the shifts the slim net overfits its ~100 input pixels; with
    # them it underfits, and trains on).
    ("lenet300", "mnist"): dict(
        _MNIST,
        epochs=100,
        lr_step_epochs=25,
        kl_factor=1.4e-3,
        warmup_epochs=20,
        finetune_epochs=60,
        finetune_lr=3e-3,
    ),
    # Per-layer KL multipliers in models.LENET5_KL_MULTIPLIERS; 25 VIB epochs
    # settle the structure, then 30 epochs fine-tune the slim model from a
    # learning rate of 2e-3.
    ("lenet5", "mnist"): dict(
        _MNIST,
        epochs=25,
        lr_step_epochs=10,
        kl_factor=2.5e-5,
        warmup_epochs=5,
        finetune_epochs=30,
        finetune_lr=2e-3,
    ),
    # The paper's VGG schedule: 300 epochs, the learning rate halved every 30.
    ("vgg16", "cifar10"): dict(
        _STEP, epochs=300, batch_size=128, kl_factor=1e-5, warmup_epochs=5
    ),
    ("vgg16", "cifar100"): dict(
        _STEP, epochs=300, batch_size=128, kl_factor=2e-5, warmup_epochs=5
    ),
}
# Batches per graph call in `train`: the LeNets' steps are so short that
# Keras' fixed cost per call weighs on an epoch with 1.
STEPS_PER_EXECUTION = 20
# Settings of `train` that change its speed, not its results.
SPEED_ONLY = ("steps_per_execution",)
MODELS = ("lenet300", "lenet5", "vgg16")
BACKENDS = ("tensorflow", "jax", "torch")
DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
SCHEDULES = ("constant", "step", "cosine")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CLIError(message)


def _number(name, cast, positive):
    """An argparse type: `cast(text)`, finite, > 0 (`positive`) or >= 0."""
    kind = "integer" if cast is int else "number"
    if positive:
        wanted = f"a positive {kind}"
    else:
        wanted = f"{'an' if cast is int else 'a'} {kind} >= 0"

    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if (
            value is None
            or not math.isfinite(value)
            or not (value > 0 if positive else value >= 0)
        ):
            raise argparse.ArgumentTypeError(
                f"--{name} must be {wanted}, received {text!r}"
            )
        return value

    return parse


def _positive_int(name):
    return _number(name, int, positive=True)


def _non_negative_int(name):
    return _number(name, int, positive=False)


def _positive_float(name):
    return _number(name, float, positive=True)


def _non_negative_float(name):
    return _number(name, float, positive=False)


def _budget(name):
    """An argparse type: a fraction in (0, 1) or a whole count >= 1."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not (0 < value < 1 or (value >= 1 and value.is_integer())):
            raise argparse.ArgumentTypeError(
                f"--{name} must be a fraction in (0, 1) or a whole count >= 1, "
                f"received {text!r}"
            )
        return value if value < 1 else int(value)

    return parse


def _existing_file(text):
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such model file: {text!r}")
    return text


def _blocking_file(path):
    """The first existing file among the parents of `path` (which would
    stop a folder from being made there), or None."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _out_dir(text):
    """An argparse type: a folder to write into (made later, when the run
    has something to write)."""
    path = pathlib.Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"--out must be a folder, received {text!r} (an existing file)"
        )
    blocking = _blocking_file(path)
    if blocking is not None:
        raise argparse.ArgumentTypeError(
            f"--out {text!r} cannot be made: {str(blocking)!r} is a file"
        )
    return text


def _out_file(*suffixes):
    """An argparse type: a file to write, ending in one of `suffixes`;
    its missing folders are made when it is written."""

    def parse(text):
        path = pathlib.Path(text)
        if suffixes and path.suffix not in suffixes:
            raise argparse.ArgumentTypeError(
                f"--out must end in {' or '.join(suffixes)}, received {text!r}"
            )
        if path.is_dir():
            raise argparse.ArgumentTypeError(
                f"--out must be a file name, received {text!r} (a folder)"
            )
        blocking = _blocking_file(path)
        if blocking is not None:
            raise argparse.ArgumentTypeError(
                f"--out {text!r} cannot be written: {str(blocking)!r} is a file"
            )
        return text

    return parse


def build_parser():
    parser = _Parser(
        prog="keras-vib",
        description="Compress Keras models with the Variational Information "
        "Bottleneck (VIBNet).",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a gated model, slim and export it")
    train.add_argument("--model", choices=MODELS, required=True)
    train.add_argument("--dataset", choices=DATASETS, required=True)
    train.add_argument("--epochs", type=_positive_int("epochs"))
    train.add_argument("--batch-size", type=_positive_int("batch-size"))
    train.add_argument("--learning-rate", "--lr", type=_positive_float("lr"))
    train.add_argument("--lr-schedule", choices=SCHEDULES)
    train.add_argument("--lr-step-epochs", type=_positive_int("lr-step-epochs"))
    train.add_argument("--lr-step-factor", type=_positive_float("lr-step-factor"))
    train.add_argument(
        "--kl-factor",
        type=_non_negative_float("kl-factor"),
        help="base weight of the KL terms (times per-layer multipliers on "
        "lenet5 and vgg16)",
    )
    train.add_argument(
        "--pretrain-epochs",
        type=_non_negative_int("pretrain-epochs"),
        help="epochs of plain training (KL off) before the VIB epochs",
    )
    train.add_argument(
        "--warmup-epochs",
        type=_non_negative_int("warmup-epochs"),
        help="epochs over which the KL weight grows from 0 to its value",
    )
    train.add_argument(
        "--finetune-epochs",
        type=_non_negative_int("finetune-epochs"),
        help="epochs of plain training of the slim model after the VIB epochs",
    )
    train.add_argument(
        "--finetune-lr",
        type=_positive_float("finetune-lr"),
        help="initial learning rate of the fine-tuning (cosine decay to 0)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random shifts of the training images (CIFAR: pad 4, crop, flip; "
        "MNIST-like: pad 1, crop)",
    )
    train.add_argument(
        "--out",
        type=_out_dir,
        default=None,
        help="output folder, made if missing (default: runs/MODEL_DATASET_seedN)",
    )
    train.add_argument("--data-dir", default=None, help="tensorflow-datasets folder")
    train.add_argument(
        "--no-download",
        action="store_true",
        help="fail at once if the dataset is not prepared in the data dir",
    )
    train.add_argument(
        "--steps-per-epoch",
        type=_positive_int("steps-per-epoch"),
        help="cap the training batches per epoch (quick runs)",
    )
    train.add_argument(
        "--steps-per-execution",
        type=_positive_int("steps-per-execution"),
        default=STEPS_PER_EXECUTION,
        help="training batches run in one graph call (Keras `compile` "
        "argument): faster for small models, the same results; the progress "
        f"bar moves once per call (default {STEPS_PER_EXECUTION})",
    )
    train.add_argument(
        "--synthetic",
        type=_positive_int("synthetic"),
        metavar="N",
        help="use N random examples of the dataset's shape (smoke tests)",
    )
    train.add_argument(
        "--width",
        type=_positive_float("width"),
        help="vgg16 only: scale its channel counts (quick runs)",
    )
    budget = train.add_mutually_exclusive_group()
    budget.add_argument(
        "--target-flops",
        type=_budget("target-flops"),
        metavar="F",
        help="prune to this budget of multiply-accumulates: a fraction of the "
        "model's (0.05) or a count (90000); the KL pressure is steered to it "
        "(keras_vib.VIBBudget) instead of warmed up",
    )
    budget.add_argument(
        "--target-params",
        type=_budget("target-params"),
        metavar="F",
        help="the same budget in parameters of the slim model",
    )
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    train.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend to train on (default: $KERAS_BACKEND, else "
        "tensorflow); the .tflite is converted on tensorflow in a subprocess",
    )

    slim = sub.add_parser("slim", help="remove the closed units of a saved model")
    slim.add_argument("model", type=_existing_file)
    slim.add_argument("--out", type=_out_file(".keras"), required=True)

    export = sub.add_parser("export", help="write a .tflite file from a saved model")
    export.add_argument("model", type=_existing_file)
    export.add_argument("--out", type=_out_file(".tflite"), required=True)
    export.add_argument(
        "--quantization", choices=("float32", "float16", "dynamic", "int8"),
        default="float32",
    )  # fmt: skip
    export.add_argument("--dataset", choices=DATASETS, help="calibration data for int8")
    export.add_argument("--data-dir", default=None)

    report = sub.add_parser("report", help="print r_W, r_N, FLOPs and structure")
    report.add_argument("model", type=_existing_file)
    report.add_argument(
        "--reference",
        type=_existing_file,
        help="the gated (or original) model a slim model came from: ratios "
        "and structure against it",
    )
    report.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _recipe(args):
    recipe = dict(RECIPES.get((args.model, args.dataset), _GENERIC))
    for key in recipe:
        value = getattr(args, key, None)
        if value is not None:
            recipe[key] = value
    return recipe


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
            for key in ("target_flops", "target_params")
            if getattr(args, key, None) is not None
        },
    }


def _pretrain(model, train_ds, epochs, verbose):
    """Plain training of a gated model: its gates' KL terms are switched off
    (`kl_scale` 0) for `epochs` epochs, then back on."""
    import keras_vib as kv

    gates = [gate for _, gate in kv.report.gates(model)]
    for gate in gates:
        gate.kl_scale.assign(0.0)
    try:
        model.fit(train_ds, epochs=epochs, verbose=verbose, shuffle=False)
    finally:
        for gate in gates:
            gate.kl_scale.assign(1.0)


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


def _data(args, recipe):
    from keras_vib import datasets

    batch = recipe["batch_size"]
    if args.synthetic:
        train = datasets.synthetic(
            args.dataset, "train", args.synthetic, batch, seed=args.seed,
            augment=recipe["augment"],
        )  # fmt: skip
        test = datasets.synthetic(args.dataset, "test", args.synthetic, 1000)
        return train, test
    common = dict(data_dir=args.data_dir, download=not args.no_download)
    train = _load_dataset(
        args.dataset,
        "train",
        batch,
        augment=recipe["augment"],
        seed=args.seed,
        **common,
    )
    test = _load_dataset(args.dataset, "test", 1000, **common)
    return train, test


def train(args):
    import keras

    import keras_vib as kv
    from keras_vib import datasets, models

    recipe = _recipe(args)
    out = pathlib.Path(args.out or f"runs/{args.model}_{args.dataset}_seed{args.seed}")
    keras.utils.set_random_seed(args.seed)
    info = datasets.info(args.dataset)
    train_ds, test_ds = _data(args, recipe)
    if args.steps_per_epoch:
        train_ds = train_ds.take(args.steps_per_epoch)
    steps = int(train_ds.cardinality())
    if steps <= 0:
        steps = -(-info["train_examples"] // recipe["batch_size"])

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
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        keras.optimizers.Adam(_schedule(recipe, steps)),
        loss,
        metrics=["accuracy"],
        steps_per_execution=args.steps_per_execution,
    )
    budget = None
    if args.target_flops is not None or args.target_params is not None:
        budget = kv.VIBBudget(
            target_flops=args.target_flops,
            target_params=args.target_params,
            verbose=1 if args.verbose else 0,
        )
        flag = "--target-flops" if args.target_flops is not None else "--target-params"
        for name in ("kl_factor", "warmup_epochs"):
            if getattr(args, name, None) is not None:
                option = "--" + name.replace("_", "-")
                raise CLIError(
                    f"{option} has no effect with {flag}: the budget sets the "
                    "KL scale itself (drop one of the two)"
                )
        try:
            budget.resolve(model)
        except ValueError as e:
            raise CLIError(f"{flag}: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
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
        _pretrain(model, train_ds, pretrain, args.verbose)
    monitor = kv.VIBMonitor(
        # The budget steers the KL scale itself: no warm-up then.
        kl_warmup_epochs=0 if budget else recipe["warmup_epochs"],
        plot_dir=out,
        verbose=1 if args.verbose else 0,
    )
    callbacks = [monitor, keras.callbacks.CSVLogger(out / "history.csv")]
    if pretrain < recipe["epochs"]:
        model.fit(
            train_ds,
            epochs=recipe["epochs"] - pretrain,
            validation_data=test_ds,
            callbacks=([budget] if budget else []) + callbacks,
            verbose=args.verbose,
            shuffle=False,  # the dataset shuffles itself
        )
    _, gated_accuracy = model.evaluate(test_ds, verbose=0)
    report = kv.compression_report(model)
    slim = kv.slim_model(model)
    accuracy = gated_accuracy
    if recipe["finetune_epochs"]:
        # Prune, then fine-tune: the slim model (stock layers, closed units
        # gone) trains on the cross-entropy alone, without gate noise.
        if args.verbose:
            print(
                f"Fine-tuning the slim model ({report.structure}, "
                f"{slim.count_params():,} parameters) for "
                f"{recipe['finetune_epochs']} epochs",
                flush=True,
            )
        total = recipe["finetune_epochs"] * steps
        slim.compile(
            keras.optimizers.Adam(
                keras.optimizers.schedules.CosineDecay(recipe["finetune_lr"], total)
            ),
            loss,
            metrics=["accuracy"],
            steps_per_execution=args.steps_per_execution,
        )
        slim.fit(
            train_ds,
            epochs=recipe["finetune_epochs"],
            validation_data=test_ds,
            callbacks=[keras.callbacks.CSVLogger(out / "finetune_history.csv")],
            verbose=args.verbose,
            shuffle=False,
        )
        _, accuracy = slim.evaluate(test_ds, verbose=0)
    wall = time.perf_counter() - start
    model.save(out / "gated.keras")
    slim.save(out / "slim.keras")
    if keras.backend.backend() == "tensorflow":
        kv.export.to_tflite(slim, path=out / "slim_float32.tflite")
    else:  # Keras's LiteRT export needs TensorFlow: convert the saved model
        _export_on_tensorflow(out / "slim.keras", out / "slim_float32.tflite")
    config = run_config(args)
    # Errors and ratios in %, rounded: 4 decimals hold every figure a
    # test set of up to a million examples can tell, without float32 noise.
    result = {
        "error_pct": round(100.0 * (1.0 - accuracy), 4),
        "gated_error_pct": round(100.0 * (1.0 - gated_accuracy), 4),
        "r_w_pct": round(100.0 * report.r_w, 4),
        "r_n_pct": round(100.0 * report.r_n, 4),
        "flops": report.flops,
        "structure": report.structure,
        "epochs": recipe["epochs"],
        "wall_seconds": wall,
        "slim_params": slim.count_params(),
        "config": config,
        "backend": keras.backend.backend(),
        "report": report.to_dict(),
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
        }
    (out / "report.json").write_text(json.dumps(result, indent=2))
    print(report)
    if recipe["finetune_epochs"]:
        print(f"test error before fine-tuning: {result['gated_error_pct']:.2f}%")
    print(f"test error (final model): {result['error_pct']:.2f}%")
    print(f"wrote {out}")
    return 0


def _note(message):
    """A one-line notice on stderr: the run goes on."""
    print(f"keras-vib: note: {message}", file=sys.stderr, flush=True)


def _export_on_tensorflow(model_path, tflite_path):
    """`keras-vib export` in a subprocess on the TensorFlow backend (a slim
    model is stock Keras: it loads on any backend)."""
    import subprocess

    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    command = [sys.executable, "-m", "keras_vib.cli", "export", str(model_path),
               "--out", str(tflite_path)]  # fmt: skip
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
        sys.executable, [sys.executable, "-m", "keras_vib.cli", *sys.argv[1:]], env
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


def slim_command(args):
    import keras_vib as kv

    slim = kv.slim_model(_load(args.model))
    _save_keras(slim, args.out)
    print(f"wrote {args.out} ({slim.count_params():,} parameters)")
    return 0


def export_command(args):
    import numpy as np

    import keras_vib as kv

    model = _load(args.model)
    quantization = None if args.quantization == "float32" else args.quantization
    data = None
    if quantization == "int8":
        if not args.dataset:
            raise CLIError("--quantization int8 needs --dataset for calibration")
        batches = _load_dataset(args.dataset, "train", 100, args.data_dir).take(5)
        data = np.concatenate([x for x, _ in batches.as_numpy_iterator()])
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    kv.export.to_tflite(model, quantization, representative_data=data, path=args.out)
    print(f"wrote {args.out}")
    return 0


def report_command(args):
    import keras_vib as kv

    reference = _load(args.reference) if args.reference else None
    report = kv.compression_report(_load(args.model), reference=reference)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0


COMMANDS = {
    "train": train,
    "slim": slim_command,
    "export": export_command,
    "report": report_command,
}


def main(argv=None):
    """Entry point of the `keras-vib` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        args = build_parser().parse_args(argv)
        _select_backend(args, console=argv is None)
        return COMMANDS[args.command](args)
    except CLIError as e:
        print(f"keras-vib: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # bad input found by the library
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"keras-vib: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
