"""The `keras-vib` command's arguments and entry point.

This module is outside the `keras_vib` package on purpose: importing the
package imports Keras, and so TensorFlow (seconds, and TensorFlow's native
log lines). Here the arguments are parsed first, with the standard library
only, so that `keras-vib --help` and a bad argument answer at once, and
TensorFlow's logging is quieted before TensorFlow loads (`--tf-logs` shows
it). The commands themselves are in `keras_vib.cli`, imported once the
arguments are parsed; it never imports this module (imports run one way:
this entry point on top).
"""

import argparse
import contextlib
import math
import os
import pathlib
import sys

# Batches per graph call in `train`: the LeNets' steps are so short that
# Keras' fixed cost per call weighs on an epoch with 1.
STEPS_PER_EXECUTION = 20
MODELS = ("lenet300", "lenet5", "vgg16", "vit")
BACKENDS = ("tensorflow", "jax", "torch")
DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
SCHEDULES = ("constant", "step", "cosine")


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2 (the errors
    found while a command runs are `keras_vib.cli.CLIError`)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


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
        if 1 <= value < 100:  # a percentage, surely: no model is that small
            unit = "multiply-accumulates" if "flops" in name else "parameters"
            raise argparse.ArgumentTypeError(
                f"--{name} {text} would be {int(value)} {unit}; for {text} % of "
                f"the model write --{name} {value / 100:g}"
            )
        return value if value < 1 else int(value)

    return parse


def _guard_margin(text):
    """An argparse type: points > 0, or 'off' (0: no guard)."""
    if text.strip().lower() == "off":
        return 0.0
    try:
        return _positive_float("max-error-increase")(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"--max-error-increase must be a positive number of points or 'off', "
            f"received {text!r}"
        ) from None


def _shape(text):
    """An argparse type: `"128"` or `"32,32,3"`, positive sizes."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(
            "--input-shape must be positive sizes separated by commas (one "
            f"example, no batch axis: 128 or 32,32,3), received {text!r}"
        )
    return shape


# The model files `slim`, `export` and `report` read (keras_vib.cli's too).
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def _existing_file(text):
    """An argparse type: a Keras model file that exists."""
    if pathlib.Path(text).suffix not in MODEL_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"expected a Keras model file ({', '.join(MODEL_SUFFIXES)}), "
            f"received {text!r}"
        )
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


def _export_out(text):
    """An argparse type: what `export` writes, a `.tflite` or `.onnx` file
    or a SavedModel folder that does not exist yet."""
    path = pathlib.Path(text)
    if path.suffix in (".tflite", ".onnx"):
        return _out_file(path.suffix)(text)
    if path.suffix in (".keras", ".h5", ".hdf5"):
        raise argparse.ArgumentTypeError(
            f"--out must be a .tflite or .onnx file, or a SavedModel folder, "
            f"received {text!r} (a Keras model file: `keras-vib slim` writes one)"
        )
    if path.exists():
        raise argparse.ArgumentTypeError(
            f"--out must be a .tflite or .onnx file, or a SavedModel folder that "
            f"does not exist yet, received {text!r} (it exists)"
        )
    blocking = _blocking_file(path)
    if blocking is not None:
        raise argparse.ArgumentTypeError(
            f"--out {text!r} cannot be made: {str(blocking)!r} is a file"
        )
    return text


# What `export --out` is for each format, and the format an --out implies.
FORMATS = {"litert": ".tflite", "onnx": ".onnx", "saved_model": "a folder"}


def export_format(args):
    """The format of `export`: `--format`, else what `--out` implies."""
    if args.format is not None:
        return args.format
    suffix = pathlib.Path(args.out).suffix
    return {".tflite": "litert", ".onnx": "onnx"}.get(suffix, "saved_model")


RECIPE = "(default: the recipe's)"


def _default(recipe, key):
    """The help's note on a recipe setting: its value when the recipe is
    known (`--model` and `--dataset` given before `--help`)."""
    if recipe is None:
        return RECIPE
    value = recipe["values"][key]
    if isinstance(value, bool) or (key == "max_error_increase" and not value):
        shown = "on" if value else "off"
    else:
        shown = value
    return f"(default: {shown}, the recipe of {recipe['name']})"


def _load_recipes():
    """`keras_vib.recipes` (plain data), read without importing keras_vib
    (and so Keras)."""
    import importlib.util

    spec = importlib.util.find_spec("keras_vib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "recipes.py"
    module_spec = importlib.util.spec_from_file_location("_keras_vib_recipes", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _recipe_for(argv):
    """The recipe named by `--model M --dataset D` in `argv` (for `train
    --help`), or None."""
    found = {}
    for i, arg in enumerate(argv):
        for flag in ("--model", "--dataset"):
            if arg == flag and i + 1 < len(argv):
                found[flag] = argv[i + 1]
            elif arg.startswith(flag + "="):
                found[flag] = arg.split("=", 1)[1]
    model, dataset = found.get("--model"), found.get("--dataset")
    if model not in MODELS or dataset not in DATASETS:
        return None
    recipes = _load_recipes()
    if recipes is None:
        return None
    values = recipes.RECIPES.get((model, dataset), recipes.GENERIC_RECIPE)
    tuned = (model, dataset) in recipes.RECIPES
    name = f"{model} on {dataset}" + (
        "" if tuned else " (no tuned recipe: the generic one)"
    )
    return {"name": name, "values": values}


def _version():
    """keras_vib's version, read without importing it (and Keras)."""
    from importlib import metadata, util

    try:
        return metadata.version("keras_vib")
    except metadata.PackageNotFoundError:  # run from a source tree
        import re

        spec = util.find_spec("keras_vib")
        text = pathlib.Path(spec.origin).read_text() if spec else ""
        found = re.search(r'__version__ = "([^"]+)"', text)
        return found[1] if found else "unknown"


def _check_together(args):
    """Arguments that exclude each other, refused before TensorFlow loads."""
    if args.command == "train":
        if args.out is None:
            args.out = f"runs/{args.model}_{args.dataset}_seed{args.seed}"
        out = pathlib.Path(args.out)
        if out.is_dir() and any(out.iterdir()) and not args.overwrite:
            raise UsageError(
                f"--out {args.out!r} holds an earlier run: pass --overwrite to "
                "replace it, or name another folder"
            )
    if args.command == "export":
        fmt = args.format = export_format(args)
        wanted = FORMATS[fmt]
        suffix = pathlib.Path(args.out).suffix
        if (suffix or "a folder") != wanted and not (
            fmt == "saved_model" and suffix not in (".tflite", ".onnx")
        ):
            raise UsageError(
                f"--format {fmt} writes {wanted}: --out {args.out!r} does not name one"
            )
        if fmt != "litert" and args.quantization != "float32":
            raise UsageError(
                f"--quantization {args.quantization} is for litert; --format "
                f"{fmt} exports float32"
            )
    if args.command == "export" and args.quantization == "int8" and not args.dataset:
        raise UsageError(
            "--quantization int8 needs --dataset: the data its activations "
            "are calibrated on"
        )
    budget = tuple(
        getattr(args, name, None)
        for name in ("target_flops", "target_params", "target_latency")
    )
    if budget[2] is None and getattr(args, "latency_quantization", None):
        raise UsageError("--latency-quantization needs --target-latency")
    if budget == (None, None, None):
        if getattr(args, "unit_cost", None) is not None:
            raise UsageError(
                "--unit-cost needs a budget (--target-flops, --target-params or "
                "--target-latency)"
            )
        return
    flag = ("--target-flops", "--target-params", "--target-latency")[
        [b is not None for b in budget].index(True)
    ]
    sets = {"max_error_increase": "the size"}
    for name in ("kl_factor", "warmup_epochs", "max_error_increase"):
        if getattr(args, name, None) is not None:
            option = "--" + name.replace("_", "-")
            raise UsageError(
                f"{option} has no effect with {flag}: the budget sets "
                f"{sets.get(name, 'the KL scale')} itself (drop one of the two)"
            )


def build_parser(recipe=None):
    parser = _Parser(
        prog="keras-vib",
        description="Compress Keras models with the Variational Information "
        "Bottleneck (VIBNet).",
    )
    parser.add_argument(
        "--version", action="version", version=f"keras-vib {_version()}"
    )
    parser.add_argument(
        "--tf-logs",
        action="store_true",
        help="show TensorFlow's own log lines (hidden unless TF_CPP_MIN_LOG_LEVEL "
        "is set)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _train_parser(sub, recipe)
    _slim_parser(sub)
    _export_parser(sub)
    _report_parser(sub)
    return parser


def _train_parser(sub, recipe=None):
    train = sub.add_parser(
        "train",
        help="train a gated model, slim and export it",
        description="Train a gated zoo model on a dataset, prune it, remove "
        "the pruned units, fine-tune, and write the models, a .tflite file, "
        'report.json and plots. A default marked "the recipe\'s" comes from '
        "the recipe of --model and --dataset (keras_vib.recipes.RECIPES; README, "
        "'Command line, model zoo, datasets').",
    )
    train.add_argument(
        "--model",
        choices=MODELS,
        required=True,
        help="the zoo model to train (keras_vib.models)",
    )
    train.add_argument(
        "--dataset",
        choices=DATASETS,
        required=True,
        help="the tensorflow-datasets dataset to train on",
    )
    recipe_text = (
        "the recipe of --model and --dataset (keras_vib.recipes.RECIPES; give "
        "them before --help to see its values)"
    )
    _recipe_arguments(train.add_argument_group("recipe", recipe_text), recipe)
    budget = "a budget instead of --kl-factor and --warmup-epochs"
    _budget_arguments(train.add_argument_group("budget", budget))
    _run_arguments(train.add_argument_group("run"))
    _quick_arguments(train.add_argument_group("quick runs"))


def _recipe_arguments(group, recipe=None):
    """The recipe's settings: schedule, KL, fine-tuning, augmentation."""
    group.add_argument(
        "--epochs",
        type=_positive_int("epochs"),
        help=f"VIB training epochs {_default(recipe, 'epochs')}",
    )
    group.add_argument(
        "--batch-size",
        type=_positive_int("batch-size"),
        help=f"examples per batch {_default(recipe, 'batch_size')}",
    )
    group.add_argument(
        "--learning-rate",
        "--lr",
        type=_positive_float("lr"),
        help=f"Adam's learning rate {_default(recipe, 'learning_rate')}",
    )
    group.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        help=f"learning-rate schedule {_default(recipe, 'lr_schedule')}",
    )
    group.add_argument(
        "--lr-step-epochs",
        type=_positive_int("lr-step-epochs"),
        help="epochs between two steps of the step schedule "
        + _default(recipe, "lr_step_epochs"),
    )
    group.add_argument(
        "--lr-step-factor",
        type=_positive_float("lr-step-factor"),
        help=f"learning-rate factor per step {_default(recipe, 'lr_step_factor')}",
    )
    group.add_argument(
        "--kl-factor",
        type=_non_negative_float("kl-factor"),
        help="base weight of the KL terms (times per-layer multipliers on "
        "lenet5 and vgg16) " + _default(recipe, "kl_factor"),
    )
    group.add_argument(
        "--pretrain-epochs",
        type=_non_negative_int("pretrain-epochs"),
        help="epochs of plain training (KL off) before the VIB epochs "
        + _default(recipe, "pretrain_epochs"),
    )
    group.add_argument(
        "--warmup-epochs",
        type=_non_negative_int("warmup-epochs"),
        help="epochs over which the KL weight grows from 0 to its value "
        + _default(recipe, "warmup_epochs"),
    )
    group.add_argument(
        "--finetune-epochs",
        type=_non_negative_int("finetune-epochs"),
        help="epochs of plain training of the slim model after the VIB epochs "
        + _default(recipe, "finetune_epochs"),
    )
    group.add_argument(
        "--finetune-lr",
        type=_positive_float("finetune-lr"),
        help="initial learning rate of the fine-tuning (cosine decay to 0) "
        + _default(recipe, "finetune_lr"),
    )
    group.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random shifts of the training images (CIFAR: pad 4, crop, flip; "
        "MNIST-like: pad 1, crop) " + _default(recipe, "augment"),
    )
    group.add_argument(
        "--max-error-increase",
        type=_guard_margin,
        metavar="POINTS",
        help="ease, then stop, pruning when the error on the last 10%% of the "
        "training split (held out) rises this many percentage points over its "
        "best (keras_vib.VIBGuard); 'off': no guard, all the training split "
        "trains " + _default(recipe, "max_error_increase"),
    )


def _budget_arguments(group):
    """--target-flops, --target-params or --target-latency (VIBBudget)."""
    budget = group.add_mutually_exclusive_group()
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
    budget.add_argument(
        "--target-latency",
        type=_positive_float("target-latency"),
        metavar="MS",
        help="a budget in milliseconds of the slim model in LiteRT on this "
        "machine (one thread; tensorflow backend): each layer is timed once "
        "(cached), the slim model timed at the end",
    )
    group.add_argument(
        "--latency-quantization",
        choices=("float32", "float16", "dynamic", "int8"),
        help="with --target-latency, the LiteRT model that is timed (default float32)",
    )
    group.add_argument(
        "--unit-cost",
        choices=("shared", "marginal"),
        help="with a budget, what a unit costs (keras_vib.VIBBudget's "
        "unit_cost): shared (each layer's cost split among the units of the "
        "gates that size it) or marginal (what closing one more unit saves) "
        "(default: shared for --target-params, marginal for --target-flops)",
    )
    group.add_argument(
        "--round-to",
        type=_positive_int("round-to"),
        metavar="K",
        help="keep a multiple of K units in every gated layer (4, 8 or 16: "
        "channel counts a runtime's kernels run whole): within the budget "
        "when there is one, else rounded to the nearest multiple after the "
        "VIB epochs (default: as trained)",
    )


def _run_arguments(group):
    """Seed, data, output, progress output and backend."""
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed: a run is repeated exactly (default 0)",
    )
    group.add_argument(
        "--data-dir",
        default=None,
        help="tensorflow-datasets folder (default: $TFDS_DATA_DIR, else "
        "~/tensorflow_datasets)",
    )
    group.add_argument(
        "--no-download",
        action="store_true",
        help="fail at once if the dataset is not prepared in the data dir",
    )
    group.add_argument(
        "--out",
        type=_out_dir,
        default=None,
        help="output folder, made if missing (default: runs/MODEL_DATASET_seedN); "
        "written whole when the run ends, so an interrupted run leaves it as "
        "it was",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in a --out folder that holds one (else refused)",
    )
    group.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras's progress output: 0 silent, 1 progress bar, 2 a line per epoch "
        "(default 1)",
    )
    group.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend to train on (default: $KERAS_BACKEND, else "
        "tensorflow); the .tflite is converted on tensorflow in a subprocess",
    )


def _quick_arguments(group):
    """Shorter runs: fewer batches, synthetic data, a narrower vgg16."""
    group.add_argument(
        "--steps-per-epoch",
        type=_positive_int("steps-per-epoch"),
        help="cap the training batches per epoch (quick runs)",
    )
    group.add_argument(
        "--steps-per-execution",
        type=_positive_int("steps-per-execution"),
        default=STEPS_PER_EXECUTION,
        help="training batches run in one graph call (Keras `compile` "
        "argument): faster for small models, the same results; the progress "
        f"bar moves once per call (default {STEPS_PER_EXECUTION})",
    )
    group.add_argument(
        "--synthetic",
        type=_positive_int("synthetic"),
        metavar="N",
        help="use N random examples of the dataset's shape (smoke tests)",
    )
    group.add_argument(
        "--width",
        type=_positive_float("width"),
        help="vgg16 only: scale its channel counts (quick runs)",
    )


def _slim_parser(sub):
    slim = sub.add_parser("slim", help="remove the closed units of a saved model")
    slim.add_argument(
        "model", type=_existing_file, help="a gated model saved as .keras"
    )
    slim.add_argument(
        "--out",
        type=_out_file(".keras"),
        required=True,
        help="the slim model's .keras file (its folders are made)",
    )
    slim.add_argument(
        "--round-to",
        type=_positive_int("round-to"),
        metavar="K",
        help="keep a multiple of K units in every gated layer (4, 8 or 16: "
        "channel counts a runtime's kernels run whole), reopening or closing "
        "the units nearest to the threshold (default: as trained)",
    )


def _export_parser(sub):
    export = sub.add_parser(
        "export",
        help="write a .tflite, .onnx or SavedModel of a saved model (slimmed "
        "first if gated)",
    )
    export.add_argument(
        "model",
        type=_existing_file,
        help="a .keras model: a run's fine-tuned slim.keras is the one to ship",
    )
    export.add_argument(
        "--out",
        type=_export_out,
        required=True,
        help="the .tflite or .onnx file, or the SavedModel folder, to write "
        "(its folders are made)",
    )
    export.add_argument(
        "--round-to",
        type=_positive_int("round-to"),
        metavar="K",
        help="a gated model only: slim it keeping a multiple of K units in "
        "every gated layer, as `keras-vib slim --round-to` (default: as "
        "trained)",
    )
    export.add_argument(
        "--format",
        choices=tuple(FORMATS),
        help="litert (a .tflite), onnx (for ONNX Runtime; pip install "
        "keras_vib[onnx]) or saved_model (a folder, for TF Serving) (default: "
        "what --out names)",
    )
    export.add_argument(
        "--quantization", choices=("float32", "float16", "dynamic", "int8"),
        default="float32", help="weights' (and, int8, activations') number "
        "format, litert only (default float32)",
    )  # fmt: skip
    export.add_argument(
        "--dataset",
        choices=DATASETS,
        help="the data int8 calibrates its activations on (needed with int8)",
    )
    export.add_argument(
        "--data-dir",
        default=None,
        help="tensorflow-datasets folder for --dataset (default: "
        "$TFDS_DATA_DIR, else ~/tensorflow_datasets)",
    )


def _report_parser(sub):
    report = sub.add_parser("report", help="print r_W, r_N, FLOPs and structure")
    report.add_argument(
        "model", type=_existing_file, help="a .keras model, gated or slim"
    )
    report.add_argument(
        "--reference",
        type=_existing_file,
        help="the gated (or original) model a slim model came from: ratios "
        "and structure against it",
    )
    report.add_argument("--json", action="store_true", help="print JSON")
    report.add_argument(
        "--input-shape",
        type=_shape,
        action="append",
        metavar="SIZES",
        help="for a model whose inputs have sizes left open: the reference "
        "size its FLOPs are counted at, one example without the batch axis "
        "(128, or 32,32,3); once per input",
    )


def main(argv=None):
    """Entry point of the `keras-vib` console script (`argv`: the arguments
    without the program name; None: `sys.argv[1:]`). Returns the exit
    status: 0, or 2 after a one-line error on stderr."""
    given = sys.argv[1:] if argv is None else argv
    parser = build_parser(_recipe_for(given) if "train" in given else None)
    if not given:
        parser.print_usage(sys.stderr)
        print(
            "keras-vib: error: name a command: train, slim, export or report "
            "(keras-vib --help says what each does)",
            file=sys.stderr,
        )
        return 2
    try:
        args = parser.parse_args(argv)
        _check_together(args)
    except UsageError as e:
        print(f"keras-vib: error: {e}", file=sys.stderr)
        return 2
    # TensorFlow's C++ runtime reads this when it loads (with keras_vib,
    # below); the lines it logs before its logging starts (CUDA probes on a
    # CPU machine, oneDNN notices) ignore it: importing keras_vib sends them
    # to the void unless the level is 0, as --tf-logs asks.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.tf_logs else "3")
    try:
        from keras_vib import _native, cli

        quiet = contextlib.nullcontext if args.tf_logs else _native.quiet_stderr
        status = cli.run(args, console=argv is None, quiet_native=quiet)
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:  # while Keras loads (a run's own: in `run`)
        print("keras-vib: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`keras-vib report ... --json | head`): what
        # is left to print goes nowhere, without a traceback.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
