"""The keras-vib command line, end to end on the shared MNIST copy."""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

import _keras_vib_cli
from keras_vib import cli, recipes

OUTPUTS = (
    "gated.keras",
    "slim.keras",
    "slim_float32.tflite",
    "report.json",
    "history.csv",
    "kept_neurons.png",
    "log_alpha.png",
)


def run(capsys, *argv):
    code = _keras_vib_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`keras-vib train` for one epoch of LeNet-300-100 on MNIST."""
    out = tmp_path_factory.mktemp("lenet300")
    code = _keras_vib_cli.main(
        [
            "train",
            "--model",
            "lenet300",
            "--dataset",
            "mnist",
            "--epochs",
            "1",
            "--warmup-epochs",
            "0",
            "--finetune-epochs",
            "0",
            "--out",
            str(out),
            "--verbose",
            "0",
        ]
    )
    assert code == 0
    return out


def test_train_writes_every_output(trained):
    for name in OUTPUTS:
        assert (trained / name).stat().st_size > 0, name
    report = json.loads((trained / "report.json").read_text())
    from test_examples import CLI_REPORT_KEYS

    for key in CLI_REPORT_KEYS:  # the example writes the same layout
        assert key in report, key
    assert report["error_pct"] == round(report["error_pct"], 4)  # no float noise
    assert report["epochs"] == 1 and report["wall_seconds"] > 0
    assert report["error_pct"] < 10
    config = report["config"]
    assert config["model"] == "lenet300" and config["dataset"] == "mnist"
    assert config["kl_factor"] == recipes.RECIPES[("lenet300", "mnist")]["kl_factor"]
    assert config["augment"] is True  # the recipe's, not set on the command line
    assert config["finetune_epochs"] == 0  # set on the command line
    assert len(report["structure"].split("-")) == 3


def test_slim_export_report_on_saved_model(trained, tmp_path, capsys):
    import keras
    import numpy as np

    import keras_vib as kv
    from keras_vib import datasets

    gated = str(trained / "gated.keras")
    code, out, _ = run(capsys, "slim", gated, "--out", str(tmp_path / "s.keras"))
    assert code == 0
    x, _ = next(iter(datasets.load("mnist", "test", 200).as_numpy_iterator()))
    gated_model = keras.models.load_model(gated)
    slim = keras.models.load_model(tmp_path / "s.keras")
    np.testing.assert_allclose(
        slim.predict(x, verbose=0), gated_model.predict(x, verbose=0), atol=1e-4
    )
    assert slim.count_params() < gated_model.count_params()
    code, out, _ = run(
        capsys,
        "export",
        gated,
        "--quantization",
        "int8",
        "--dataset",
        "mnist",
        "--out",
        str(tmp_path / "m.tflite"),
    )
    assert code == 0
    logits = kv.export.run_tflite((tmp_path / "m.tflite").read_bytes(), x)
    agree = np.mean(logits.argmax(-1) == slim.predict(x, verbose=0).argmax(-1))
    assert agree >= 0.95  # int8 rounding moves a few borderline examples
    code, out, _ = run(capsys, "report", gated, "--json")
    assert code == 0
    saved = json.loads((trained / "report.json").read_text())
    assert json.loads(out)["structure"] == saved["structure"]


def test_report_of_a_slim_model_describes_it(trained, capsys):
    """A slim model has no gates left: its report gives its own size, and
    the ratios against `--reference`, not r_W 100 % of an empty structure."""
    slim, gated = str(trained / "slim.keras"), str(trained / "gated.keras")
    saved = json.loads((trained / "report.json").read_text())
    code, out, _ = run(capsys, "report", slim)
    assert code == 0
    assert "no gates" in out and "r_W" not in out and "r_N" not in out
    code, out, _ = run(capsys, "report", slim, "--json")
    data = json.loads(out)
    assert data["flops"] == saved["flops"] and data["r_w"] is None
    code, out, _ = run(capsys, "report", slim, "--reference", gated, "--json")
    data = json.loads(out)
    assert data["structure"] == saved["structure"]
    assert data["r_w_pct"] == pytest.approx(saved["r_w_pct"])


@pytest.mark.slow
def test_pretraining_switches_the_kl_off():
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_vib import models

    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    def pretrained(kl_weight):
        keras.utils.set_random_seed(0)
        model = models.lenet_300_100(kl_weight=kl_weight)
        model.compile(
            keras.optimizers.Adam(1e-2),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        cli._pretrain(model, data, 2, 0)
        return model

    # A huge KL weight changes nothing while the KL is off...
    light, heavy = pretrained(1e-4), pretrained(10.0)
    for a, b in zip(light.weights, heavy.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # ...and weighs again once pretraining is over.
    assert [g.numpy() for g in heavy.weights if g.path.endswith("kl_scale")] == [
        1.0
    ] * 3
    heavy.fit(data, epochs=1, verbose=0, shuffle=False)
    light.fit(data, epochs=1, verbose=0, shuffle=False)
    mu = [w for w in heavy.weights if w.path.endswith("mu")]
    mu_light = [w for w in light.weights if w.path.endswith("mu")]
    assert np.mean(np.abs(mu[0].numpy())) < np.mean(np.abs(mu_light[0].numpy()))


@pytest.mark.slow
def test_train_finetunes_the_slim_model(tmp_path):
    import keras
    import numpy as np

    import keras_vib as kv
    from keras_vib import datasets

    code = _keras_vib_cli.main(
        ["train", "--model", "lenet300", "--dataset", "mnist", "--epochs", "1",
         "--steps-per-epoch", "30", "--warmup-epochs", "0", "--kl-factor", "1e-2",
         "--finetune-epochs", "2", "--finetune-lr", "1e-3", "--out", str(tmp_path),
         "--verbose", "0"]
    )  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["finetune_epochs"] == 2
    assert report["config"]["finetune_lr"] == 1e-3
    history = (tmp_path / "finetune_history.csv").read_text().strip().splitlines()
    assert len(history) == 3  # header and two epochs
    gated = keras.saving.load_model(tmp_path / "gated.keras")
    tuned = keras.saving.load_model(tmp_path / "slim.keras")
    untuned = kv.slim_model(gated)
    # Same structure as the slim gated model, other weights.
    assert tuned.count_params() == untuned.count_params() == report["slim_params"]
    assert kv.compression_report(gated).structure == report["structure"]
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    assert not np.allclose(tuned.predict(x, verbose=0), untuned.predict(x, verbose=0))
    # The reported error is that of the fine-tuned model.
    tuned.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    _, accuracy = tuned.evaluate(datasets.load("mnist", "test", 1000), verbose=0)
    assert abs(100 * (1 - accuracy) - report["error_pct"]) < 0.005
    assert 0 <= report["gated_error_pct"] <= 100


@pytest.mark.slow
def test_steps_per_execution_changes_speed_not_results(tmp_path):
    import keras
    import numpy as np

    weights = {}
    for steps in (1, 7):  # 30 batches: 7 does not divide them
        out = tmp_path / str(steps)
        code = _keras_vib_cli.main(
            ["train", "--model", "lenet300", "--dataset", "mnist", "--epochs", "2",
             "--steps-per-epoch", "30", "--warmup-epochs", "1",
             "--finetune-epochs", "1", "--steps-per-execution", str(steps),
             "--out", str(out), "--verbose", "0"]
        )  # fmt: skip
        assert code == 0
        report = json.loads((out / "report.json").read_text())
        assert report["config"]["steps_per_execution"] == steps
        weights[steps] = [
            w.numpy()
            for name in ("gated.keras", "slim.keras")
            for w in keras.saving.load_model(out / name).weights
        ]
    assert len(weights[1]) == len(weights[7])
    for a, b in zip(weights[1], weights[7]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_vgg16_train_path_on_synthetic_cifar(tmp_path):
    code = _keras_vib_cli.main(
        [
            "train",
            "--model",
            "vgg16",
            "--dataset",
            "cifar10",
            "--synthetic",
            "64",
            "--width",
            "0.125",
            "--epochs",
            "2",
            "--augment",
            "--out",
            str(tmp_path),
            "--verbose",
            "0",
        ]
    )
    assert code == 0
    for name in OUTPUTS:
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["structure"].split("-")) == 15  # 13 convs + 2 dense


@pytest.mark.slow
def test_vit_train_path_on_synthetic_mnist_with_a_budget(tmp_path):
    """`keras-vib train --model vit --dataset mnist` (issue 25, item 6)."""
    code = _keras_vib_cli.main(
        [
            "train",
            "--model",
            "vit",
            "--dataset",
            "mnist",
            "--synthetic",
            "64",
            "--epochs",
            "2",
            "--finetune-epochs",
            "1",
            "--target-flops",
            "0.5",
            "--out",
            str(tmp_path),
            "--verbose",
            "0",
        ]
    )
    assert code == 0
    for name in OUTPUTS:
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "report.json").read_text())
    # Heads and MLP units of 4 blocks, at or under half of the FLOPs.
    assert len(report["structure"].split("-")) == 8
    assert report["flops"] <= 0.5 * report["report"]["total_flops"]


def test_missing_dataset_message(tmp_path, capsys):
    code, out, err = run(
        capsys,
        "train",
        "--model",
        "lenet300",
        "--dataset",
        "fashion_mnist",
        "--data-dir",
        str(tmp_path),
        "--no-download",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "fashion_mnist" in err and str(tmp_path) in err
    assert "TFDS_DATA_DIR" in err
    # In the command's words, not the Python argument's.
    assert f"--data-dir {tmp_path}" in err and "`data_dir=` argument" not in err
    assert not (tmp_path / "run").exists()  # no empty output folder left


@pytest.fixture
def files(tmp_path):
    """A text file, a corrupt .keras (text renamed), a .tflite and a .csv."""
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "corrupt.keras").write_text("not a zip")
    (tmp_path / "model.tflite").write_bytes(b"TFL3")
    (tmp_path / "history.csv").write_text("epoch,loss\n")
    return tmp_path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--out", "{d}/afile"], "--out must be a folder, received"),
        (["train", "--out", "{d}/afile/run"], "'{d}/afile' is a file"),
        (["slim", "{d}/corrupt.keras", "--out", "{d}/afile/x.keras"], "is a file"),
        (["slim", "{d}/corrupt.keras", "--out", "{d}"], "must end in .keras"),
        (["slim", "{d}/corrupt.keras", "--out", "{d}/x.h5"], "must end in .keras"),
        (
            ["export", "{d}/corrupt.keras", "--out", "{d}/x.keras"],
            "must be a .tflite or .onnx file, or a SavedModel folder",
        ),
        (["report", "{d}/corrupt.keras"], "a .keras file is a zip archive"),
        (
            ["slim", "{d}/model.tflite", "--out", "{d}/x.keras"],
            "expected a Keras model file (.keras, .h5, .hdf5), received "
            "'{d}/model.tflite'",
        ),
        (["report", "{d}/history.csv"], "expected a Keras model file"),
    ],
)
def test_bad_paths_one_line_nothing_written(files, capsys, argv, message):
    argv = [a.format(d=files) for a in argv]
    if argv[0] == "train":
        argv += ["--model", "lenet300", "--dataset", "mnist", "--synthetic", "8"]
    before = sorted(p.name for p in files.rglob("*"))
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message.format(d=files) in lines[0]
    assert sorted(p.name for p in files.rglob("*")) == before


def test_a_wrong_file_type_is_refused_before_tensorflow():
    out = _heavy_modules_after(
        "import os, tempfile, _keras_vib_cli\n"
        "model = os.path.join(tempfile.mkdtemp(), 'm.tflite')\n"
        "open(model, 'wb').close()\n"
        "print(_keras_vib_cli.main(['report', model]))"
    )
    assert out.strip().splitlines()[-2:] == ["2", "[]"]


def test_slim_and_export_make_missing_folders(trained, tmp_path, capsys):
    slim = tmp_path / "new" / "deeper" / "slim.keras"
    code, _, err = run(capsys, "slim", str(trained / "gated.keras"), "--out", str(slim))
    assert code == 0, err
    tflite = tmp_path / "other" / "slim.tflite"
    code, _, err = run(capsys, "export", str(slim), "--out", str(tflite))
    assert code == 0, err
    assert sorted(p.name for p in slim.parent.iterdir()) == ["slim.keras"]
    assert tflite.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "alexnet", "--dataset", "mnist"], "alexnet"),
        (["train", "--model", "lenet5", "--dataset", "svhn"], "svhn"),
        (["train", "--model", "lenet5", "--dataset", "mnist", "--epochs", "0"], "0"),
        (["train", "--model", "lenet5", "--dataset", "mnist", "--epochs", "-2"], "-2"),
        (["train", "--model", "lenet5", "--dataset", "mnist", "--lr", "x"], "'x'"),
        (["report", "no/such/model.keras"], "no/such/model.keras"),
        (["slim", "missing.keras", "--out", "x.keras"], "missing.keras"),
        (["export", "missing.keras", "--out", "x.tflite"], "missing.keras"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_arguments_one_line_no_traceback(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("keras-vib: error:") and message in lines[0]


def console(*argv, **kwargs):
    """The installed `keras-vib` console script, run with `argv`."""
    script = pathlib.Path(sys.executable).parent / "keras-vib"
    return subprocess.run(
        [str(script), *argv], capture_output=True, text=True, timeout=300, **kwargs
    )


def test_console_script_exits_with_one_line():
    result = console("train", "--model", "lenet5", "--dataset", "mnist", "-e", "1")
    assert result.returncode == 2
    assert result.stderr == "keras-vib: error: unrecognized arguments: -e 1\n"


def test_console_script_is_quiet(trained):
    """No TensorFlow log lines (CUDA probes, oneDNN, the converter's) on a
    command that loads TensorFlow, unless --tf-logs asks for them."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    tflite = trained / "quiet.tflite"
    result = console(
        "export", str(trained / "slim.keras"), "--out", str(tflite), env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == f"wrote {tflite}\n"
    result = console("--tf-logs", "report", str(trained / "slim.keras"), env=env)
    assert result.returncode == 0 and "cuda" in result.stderr.lower()


def _heavy_modules_after(code):
    """Runs `code` in a fresh Python; its stdout, whose last line lists which
    of Keras, TensorFlow and keras_vib it had imported by then."""
    code += (
        "\nimport sys\n"
        "names = ('keras', 'tensorflow', 'keras_vib')\n"
        "print(sorted(m for m in names if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_and_bad_arguments_do_not_load_keras():
    """`--help` and argument errors answer before Keras (and TensorFlow)
    are imported: at once."""
    out = _heavy_modules_after(
        "import _keras_vib_cli\n"
        "for argv in (['--help'], ['train', '--help'], ['slim', 'x.keras']):\n"
        "    try:\n"
        "        _keras_vib_cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass"
    )
    assert out.strip().splitlines()[-1] == "[]"
    assert "default: the recipe's" in out  # the train help


def test_version_and_a_bare_command_answer_without_keras():
    out = _heavy_modules_after(
        "import _keras_vib_cli\n"
        "for argv in (['--version'], []):\n"
        "    try:\n"
        "        print('status', _keras_vib_cli.main(argv))\n"
        "    except SystemExit as e:\n"
        "        print('exit', e.code)"
    )
    import keras_vib

    assert f"keras-vib {keras_vib.__version__}" in out and "exit 0" in out
    assert "status 2" in out
    assert out.strip().splitlines()[-1] == "[]"


def test_a_bare_command_says_what_to_type(capsys):
    code, out, err = run(capsys)
    assert code == 2 and out == ""
    assert err.startswith("usage: keras-vib")
    assert "name a command: train, slim, export or report" in err


def test_a_reader_that_goes_away_gets_no_traceback(trained, capsys, monkeypatch):
    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    code = _keras_vib_cli.main(["report", str(trained / "gated.keras"), "--json"])
    monkeypatch.undo()
    assert code == 0
    assert "Traceback" not in capsys.readouterr().err


def test_every_argument_is_described():
    import argparse

    parser = _keras_vib_cli.build_parser()
    (commands,) = [
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ]
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, (name, action.dest)


def test_train_help_shows_the_recipe_s_values_without_keras():
    out = _heavy_modules_after(
        "import _keras_vib_cli\n"
        "try:\n"
        "    _keras_vib_cli.main(['train', '--model', 'lenet300', '--dataset',\n"
        "                         'mnist', '--help'])\n"
        "except SystemExit:\n"
        "    pass"
    )
    assert out.strip().splitlines()[-1] == "[]"
    text = " ".join(out.split())
    epochs = recipes.RECIPES[("lenet300", "mnist")]["epochs"]
    assert (
        f"VIB training epochs (default: {epochs}, the recipe of lenet300 on mnist)"
        in text
    )
    assert "(default: 60, the recipe of lenet300 on mnist)" in text  # fine-tuning


def test_help_is_fast_and_the_entry_loads_no_keras():
    """`keras-vib --help` answers in under half a second. Timing a process
    can flake on a busy machine: the best of 3 runs counts, and the real
    guarantee is checked alongside: importing the entry module imports
    neither Keras nor TensorFlow (nor keras_vib)."""
    out = _heavy_modules_after("import _keras_vib_cli")
    assert out.strip().splitlines()[-1] == "[]"
    times = []
    for _ in range(3):
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "_keras_vib_cli", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        times.append(time.perf_counter() - start)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: keras-vib")
    assert min(times) < 0.5, times


def test_the_command_modules_agree_with_the_library():
    """The entry module's choices, kept there so that parsing needs no
    Keras, name the library's models, datasets and recipe settings."""
    from keras_vib import datasets, export, models

    assert set(_keras_vib_cli.MODELS) == set(models.MODELS)
    assert set(_keras_vib_cli.DATASETS) == set(datasets.DATASETS)
    assert tuple(_keras_vib_cli.FORMATS) == export.FORMATS
    train = _keras_vib_cli.build_parser().parse_args(
        ["train", "--model", "lenet5", "--dataset", "mnist"]
    )
    assert set(recipes.GENERIC_RECIPE) <= set(vars(train))
    for recipe in recipes.RECIPES.values():
        assert set(recipe) == set(recipes.GENERIC_RECIPE)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--target-flops", "0.1", "--target-params", "0.1"],
            "argument --target-params: not allowed with argument --target-flops",
        ),
        (["--target-flops", "0"], "--target-flops must be a fraction in (0, 1)"),
        (["--target-params", "2.5"], "received '2.5'"),
        (["--target-flops", "999999999"], "--target-flops: Expected `target_flops`"),
        (
            ["--target-flops", "0.1", "--kl-factor", "1e-3"],
            "--kl-factor has no effect with --target-flops",
        ),
        (
            ["--target-params", "0.1", "--warmup-epochs", "3"],
            "--warmup-epochs has no effect with --target-params",
        ),
        (["--unit-cost", "marginal"], "--unit-cost needs a budget"),
        (
            ["--latency-quantization", "int8"],
            "--latency-quantization needs --target-latency",
        ),
        (
            ["--target-latency", "1", "--latency-quantization", "int4"],
            "argument --latency-quantization: invalid choice: 'int4'",
        ),
        (["--target-latency", "0"], "--target-latency must be"),
        (
            ["--target-latency", "1.5", "--target-flops", "0.1"],
            "argument --target-flops: not allowed with argument --target-latency",
        ),
        (
            ["--target-latency", "1.5", "--kl-factor", "1e-3"],
            "--kl-factor has no effect with --target-latency",
        ),
        (
            ["--target-params", "0.1", "--unit-cost", "mean"],
            "argument --unit-cost: invalid choice: 'mean'",
        ),
        (
            ["--target-flops", "2"],
            "--target-flops 2 would be 2 multiply-accumulates; for 2 % of the "
            "model write --target-flops 0.02",
        ),
        (["--target-params", "40"], "write --target-params 0.4"),
    ],
)
def test_bad_budgets_are_refused_in_one_line(tmp_path, capsys, flags, message):
    code, _, err = run(
        capsys,
        "train",
        "--model",
        "lenet300",
        "--dataset",
        "mnist",
        "--synthetic",
        "32",
        "--out",
        str(tmp_path / "run"),
        "--verbose",
        "0",
        *flags,
    )
    assert code == 2
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.slow
def test_train_to_a_flops_budget(tmp_path):
    with pytest.warns(UserWarning, match="KL pressure reached"):
        code = _keras_vib_cli.main(
            [
                "train",
                "--model",
                "lenet300",
                "--dataset",
                "mnist",
                "--synthetic",
                "256",
                "--epochs",
                "1",
                "--finetune-epochs",
                "0",
                "--target-flops",
                "0.05",
                "--out",
                str(tmp_path),
                "--verbose",
                "0",
            ]
        )
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    budget = report["budget"]
    assert budget["kind"] == "flops" and budget["requested"] == 0.05
    assert budget["target"] == int(0.05 * budget["original"])
    assert 0.85 * budget["target"] <= budget["reached"] <= budget["target"]
    assert report["flops"] == budget["reached"]
    assert report["config"]["target_flops"] == 0.05
    assert budget["cost_power"] == 1.0  # "auto": lenet300's units cost alike


@pytest.mark.slow
def test_a_seeded_run_is_repeated_exactly_in_a_new_process(tmp_path):
    """Two processes, the same seed: the same report and the same weights
    (shuffling, the one-pixel shifts, the gates' noise, the budget's steering
    and the fine-tuning included), on two cores and on one (TensorFlow's
    default oneDNN kernels: their results do not depend on the core count)."""
    import shutil

    import keras
    import numpy as np

    script = pathlib.Path(sys.executable).parent / "keras-vib"
    argv = ["train", "--model", "lenet300", "--dataset", "mnist", "--epochs", "2",
            "--steps-per-epoch", "40", "--finetune-epochs", "1",
            "--target-flops", "0.3", "--seed", "7", "--verbose", "0"]  # fmt: skip
    cores = [[], []]
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        first, second = sorted(os.sched_getaffinity(0))[:2]
        cores = [["taskset", "-c", f"{first},{second}"], ["taskset", "-c", f"{first}"]]
    env = {k: v for k, v in os.environ.items() if "ONEDNN" not in k}
    reports, weights = [], []
    for run_dir, pinned in zip(("a", "b"), cores):
        out = tmp_path / run_dir
        result = subprocess.run(
            [*pinned, str(script), *argv, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads((out / "report.json").read_text())
        reports.append({k: v for k, v in report.items() if k != "wall_seconds"})
        weights.append(
            [w.numpy() for w in keras.saving.load_model(out / "slim.keras").weights]
        )
    assert reports[0] == reports[1]
    assert reports[0]["budget"]["reached"] <= reports[0]["budget"]["target"]
    assert len(weights[0]) == len(weights[1])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_train_on_the_jax_backend(tmp_path):
    """`--backend jax` trains on JAX; the .tflite is converted on TensorFlow
    and computes what the slim model computes."""
    pytest.importorskip("jax")
    import keras
    import numpy as np

    from keras_vib import export

    script = pathlib.Path(sys.executable).parent / "keras-vib"
    result = subprocess.run(
        [str(script), "train", "--backend", "jax", "--model", "lenet300",
         "--dataset", "mnist", "--synthetic", "256", "--epochs", "1",
         "--finetune-epochs", "1", "--out", str(tmp_path), "--verbose", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["backend"] == "jax"
    slim = keras.saving.load_model(tmp_path / "slim.keras")  # on TensorFlow here
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    tflite = (tmp_path / "slim_float32.tflite").read_bytes()
    np.testing.assert_allclose(
        export.run_tflite(tflite, x), slim.predict(x, verbose=0), atol=1e-4
    )


def test_an_unknown_backend_is_refused(capsys):
    code, _, err = run(capsys, "train", "--model", "lenet5", "--dataset", "mnist",
                       "--backend", "theano")  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert "invalid choice: 'theano'" in err and "'jax'" in err


def test_a_backend_other_than_the_imported_one_is_refused(capsys):
    import keras

    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    code, _, err = run(capsys, "train", "--model", "lenet5", "--dataset", "mnist",
                       "--backend", other)  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert f"--backend {other}: Keras is already imported" in err


@pytest.mark.parametrize("warmup", [None, "2"])
def test_a_run_shorter_than_the_warmup_says_so(tmp_path, capsys, warmup):
    argv = ["train", "--model", "lenet300", "--dataset", "mnist", "--synthetic",
            "64", "--epochs", "2", "--finetune-epochs", "1", "--out",
            str(tmp_path), "--verbose", "1"]  # fmt: skip
    if warmup:
        argv += ["--warmup-epochs", warmup]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    note = "keras-vib: note: the 2 VIB epochs end inside the 20-epoch KL warm-up"
    assert (note in err) == (warmup is None), err
    assert "Fine-tuning the slim model" in out


def test_report_of_a_model_of_any_length_takes_an_input_shape(tmp_path, capsys):
    import keras

    import keras_vib as kv

    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(50, 8)(inputs)
    x = keras.layers.Conv1D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    path = tmp_path / "text.keras"
    kv.add_gates(keras.Model(inputs, keras.layers.Dense(2)(x))).save(path)
    code, out, _ = run(capsys, "report", str(path), "--json")
    assert code == 0 and json.loads(out)["flops"] is None
    code, out, _ = run(capsys, "report", str(path), "--json", "--input-shape", "12")
    assert code == 0
    assert json.loads(out)["total_flops"] == 10 * 3 * 8 * 16 + 16 * 2
    code, _, err = run(capsys, "report", str(path), "--input-shape", "12,3")
    assert code == 2 and err.count("\n") == 1 and "--input-shape" in err
    code, _, err = run(capsys, "report", str(path), "--input-shape", "x")
    assert code == 2 and "--input-shape must be positive sizes" in err
    # Trained once, the model holds the size of its data: the reference.
    import numpy as np

    trained = keras.models.load_model(path)
    trained.compile("adam", "sparse_categorical_crossentropy")
    tokens = np.random.default_rng(0).integers(0, 50, (8, 20))
    trained.fit(tokens, np.zeros(8, "int32"), epochs=1, verbose=0)
    trained.save(path)
    code, out, _ = run(capsys, "report", str(path))
    assert code == 0 and "at input size (20,)" in out
    code, out, _ = run(capsys, "report", str(path), "--json")
    assert json.loads(out)["total_flops"] == 18 * 3 * 8 * 16 + 16 * 2


def test_a_budget_s_warning_is_one_line(tmp_path, capsys):
    # Two short epochs cannot reach 5 %: the end closes units, and says so.
    argv = ["train", "--model", "lenet300", "--dataset", "mnist", "--synthetic",
            "64", "--epochs", "2", "--finetune-epochs", "1", "--out",
            str(tmp_path), "--verbose", "1", "--target-flops", "0.05"]  # fmt: skip
    with pytest.warns(UserWarning, match="VIBBudget: the KL pressure") as record:
        code, out, err = run(capsys, *argv)
    assert code == 0, err
    (warned,) = [w for w in record if "VIBBudget" in str(w.message)]
    assert pathlib.Path(warned.filename).name == "_keras_vib_cli.py"  # not Keras's
    import warnings

    with cli._one_line_warnings():  # how the command prints it
        text = warnings.formatwarning(
            warned.message, warned.category, warned.filename, warned.lineno
        )
    assert text.startswith("keras-vib: warning: VIBBudget: the KL pressure")
    assert text.count("\n") == 1 and text.endswith("\n")
    # The last VIB line is the model after the budget's closures.
    report = json.loads((tmp_path / "report.json").read_text())
    vib = [line for line in out.splitlines() if line.startswith("VIB:")]
    assert vib[-1].endswith(f"structure {report['structure']} (end of training)")


def _short_train(out, *more):
    return ["train", "--model", "lenet300", "--dataset", "mnist", "--synthetic",
            "32", "--epochs", "1", "--finetune-epochs", "0", "--out", str(out),
            "--verbose", "0", *more]  # fmt: skip


def test_a_folder_holding_a_run_is_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "finetune_history.csv").write_text("an earlier run\n")
    code, _, err = run(capsys, *_short_train(out))
    assert code == 2 and err.count("\n") == 1 and "--overwrite" in err
    assert (out / "finetune_history.csv").read_text() == "an earlier run\n"
    code, _, err = run(capsys, *_short_train(out, "--overwrite"))
    assert code == 0, err
    # The folder is the new run's, whole: nothing of the earlier one stays.
    assert not (out / "finetune_history.csv").exists()
    assert (out / "report.json").exists() and (out / "slim.keras").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_interrupted_run_leaves_its_folder_as_it_was(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text("{}")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_fit_vib", interrupted)
    code, out_text, err = run(capsys, *_short_train(out, "--overwrite"))
    assert code == 130
    assert err == f"keras-vib: interrupted: {out} left as it was\n"
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    assert (out / "report.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no partial folder


@pytest.mark.slow
def test_ctrl_c_ends_a_run_in_one_line(tmp_path):
    import signal

    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text("{}")
    script = pathlib.Path(sys.executable).parent / "keras-vib"
    argv = _short_train(out, "--overwrite")
    argv[argv.index("32")] = "4096"  # long enough to be interrupted
    argv[argv.index("--epochs") + 1] = "50"
    process = subprocess.Popen(
        [str(script), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not any(p.name.startswith(".run.partial") for p in tmp_path.iterdir()):
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.2)
    time.sleep(2)  # training
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err == f"keras-vib: interrupted: {out} left as it was\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "report.json").read_text() == "{}"


def test_the_gated_model_of_a_run_points_at_its_fine_tuned_slim_model(tmp_path, capsys):
    out = tmp_path / "run"
    argv = _short_train(out)
    argv[argv.index("--finetune-epochs") + 1] = "1"
    assert run(capsys, *argv)[0] == 0
    slim_path = tmp_path / "s.keras"
    code, _, err = run(
        capsys, "slim", str(out / "gated.keras"), "--out", str(slim_path)
    )
    assert code == 0
    assert err == (
        f"keras-vib: note: {out / 'slim.keras'} beside it is this run's slim model "
        f"fine-tuned for 1 more epochs: ship that one (keras-vib export "
        f"{out / 'slim.keras'} ...)\n"
    )
    code, _, err = run(capsys, "export", str(out / "slim.keras"), "--out",
                       str(tmp_path / "m.tflite"))  # fmt: skip
    assert code == 0 and err == ""  # the slim model itself: nothing to say


def test_int8_without_data_is_refused_before_tensorflow():
    out = _heavy_modules_after(
        "import os, tempfile, _keras_vib_cli\n"
        "folder = tempfile.mkdtemp()\n"
        "model = os.path.join(folder, 'm.keras')\n"
        "open(model, 'w').close()\n"
        "print(_keras_vib_cli.main(['export', model, '--out',\n"
        "    os.path.join(folder, 'm.tflite'), '--quantization', 'int8']))"
    )
    assert out.strip().splitlines()[-1] == "[]"
    assert out.strip().splitlines()[-2] == "2"


def _untuned(out, *more):
    """A short run of a pair without a tuned recipe (lenet5 on Fashion-MNIST),
    on synthetic data."""
    return ["train", "--model", "lenet5", "--dataset", "fashion_mnist",
            "--synthetic", "64", "--epochs", "2", "--finetune-epochs", "1",
            "--out", str(out), "--verbose", "0", *more]  # fmt: skip


def test_a_pair_without_a_tuned_recipe_is_guarded_and_says_so(tmp_path, capsys):
    assert ("lenet5", "fashion_mnist") not in recipes.RECIPES
    code, out, err = run(capsys, *_untuned(tmp_path / "guarded"))
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith(
        "keras-vib: no tuned recipe for lenet5 on fashion_mnist: the generic one "
        "(2 epochs, KL factor 0.0001), pruning eases, then stops, when the error "
        "on held-out examples rises 1 point over its best (--max-error-increase;"
    ), first
    report = json.loads((tmp_path / "guarded" / "report.json").read_text())
    guard = report["guard"]
    assert guard["max_error_increase"] == 1.0
    assert 0 <= guard["best_error_pct"] <= 100 and guard["best_epoch"] in (0, 1)
    assert report["config"]["max_error_increase"] == 1.0

    code, out, err = run(
        capsys, *_untuned(tmp_path / "free", "--max-error-increase", "off")
    )
    assert code == 0, err
    assert "no guard (--max-error-increase off)" in out.splitlines()[0]
    report = json.loads((tmp_path / "free" / "report.json").read_text())
    assert "guard" not in report and report["config"]["max_error_increase"] == 0.0


def test_a_tuned_recipe_has_no_guard_unless_asked(tmp_path, capsys):
    code, out, err = run(capsys, *_short_train(tmp_path / "tuned"))
    assert code == 0, err
    assert "keras-vib:" not in out
    assert "guard" not in json.loads((tmp_path / "tuned" / "report.json").read_text())
    code, out, err = run(
        capsys, *_short_train(tmp_path / "asked", "--max-error-increase", "0.5")
    )
    assert code == 0, err
    assert out.startswith(
        "keras-vib: lenet300 on mnist has a tuned recipe, pruning eases, then "
        "stops, when the error on held-out examples rises 0.5 points over its best"
    ), out
    report = json.loads((tmp_path / "asked" / "report.json").read_text())
    assert report["guard"]["max_error_increase"] == 0.5


def test_the_guard_watches_the_last_tenth_of_the_training_split():
    """Guarded, the run trains on 90 % of MNIST's training split and watches
    the other 10 %; the test split gives the figures only."""
    args = _keras_vib_cli.build_parser().parse_args(
        ["train", "--model", "lenet300", "--dataset", "mnist"]
    )
    args.out = None

    def sizes(margin):
        recipe = dict(recipes.RECIPES[("lenet300", "mnist")], max_error_increase=margin)
        data = cli._data(args, recipe)  # batches of 100, 1000 and 1000
        return [int(ds.cardinality()) for ds in data]

    assert sizes(1.0) == [540, 6, 10]
    assert sizes(0.0) == [600, 10, 10]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-error-increase", "0"], "a positive number of points or 'off'"),
        (["--max-error-increase", "-1"], "received '-1'"),
        (["--max-error-increase", "lots"], "received 'lots'"),
        (
            ["--max-error-increase", "1", "--target-flops", "0.1"],
            "--max-error-increase has no effect with --target-flops: the budget "
            "sets the size itself",
        ),
    ],
)
def test_bad_guards_are_refused_in_one_line(capsys, flags, message):
    argv = ["train", "--model", "lenet5", "--dataset", "fashion_mnist", *flags]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_slim_rounds_the_kept_counts_on_request(trained, tmp_path, capsys):
    import keras

    out = tmp_path / "rounded.keras"
    code, printed, err = run(
        capsys, "slim", str(trained / "gated.keras"), "--out", str(out),
        "--round-to", "8",
    )  # fmt: skip
    assert code == 0, err
    assert printed.startswith(f"wrote {out}")
    slim = keras.models.load_model(out)
    widths = [la.units for la in slim.layers if isinstance(la, keras.layers.Dense)]
    assert all(w % 8 == 0 for w in widths[:-1]) and widths[-1] == 10, widths
    code, _, err = run(
        capsys, "slim", str(trained / "gated.keras"), "--out", str(out),
        "--round-to", "0",
    )  # fmt: skip
    assert code == 2 and "--round-to must be a positive integer" in err


@pytest.mark.parametrize("budget", [[], ["--target-flops", "0.5"]])
def test_train_rounds_the_kept_counts_on_request(tmp_path, capsys, budget):
    """--round-to: within the budget where there is one (VIBBudget), else
    rounded after the VIB epochs; the gated model, its report and the slim
    model agree."""
    pressure = budget or ["--kl-factor", "1e-2", "--warmup-epochs", "0"]
    code, _, err = run(
        capsys, "train", "--model", "lenet300", "--dataset", "mnist",
        "--synthetic", "256", "--epochs", "2", "--finetune-epochs", "0",
        *pressure, "--round-to", "4", "--out", str(tmp_path), "--verbose", "0",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["round_to"] == 4
    kept = [int(n) for n in report["structure"].split("-")]
    assert all(n % 4 == 0 for n in kept), kept
    assert report["slim_params"] == report["report"]["kept_params"]
    if budget:
        assert report["flops"] <= 0.5 * report["report"]["total_flops"]


def test_export_rounds_a_gated_model_on_request(trained, tmp_path, capsys):
    import keras
    import numpy as np

    import keras_vib as kv
    from keras_vib.deploy.litert import run_tflite

    out = tmp_path / "rounded.tflite"
    gated = str(trained / "gated.keras")
    code, _, err = run(capsys, "export", gated, "--out", str(out), "--round-to", "8")
    assert code == 0, err
    slim = kv.slim_model(keras.models.load_model(gated), round_to=8)
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    expected = keras.ops.convert_to_numpy(slim(x))
    np.testing.assert_allclose(run_tflite(out.read_bytes(), x), expected, atol=1e-5)
    code, _, err = run(
        capsys, "export", str(trained / "slim.keras"), "--out",
        str(tmp_path / "again.tflite"), "--round-to", "8",
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "has no gates" in err, err
    assert not (tmp_path / "again.tflite").exists()


def _latency_range(capsys, tmp_path, more):
    """The slim LeNet-5's LiteRT time with every gated unit closed and with
    none closed, in ms, as the CLI's one-line refusals of a target outside
    them state: they differ from machine to machine."""
    shown = []
    for target, pattern in [
        (1e-6, r"at least ([0-9.]+) ms"),
        (1e6, r"model's ([0-9.]+) ms"),
    ]:
        code, _, err = run(
            capsys, "train", "--model", "lenet5", "--dataset", "mnist",
            "--synthetic", "64", "--epochs", "1", "--target-latency", str(target),
            "--out", str(tmp_path / "refused"), "--verbose", "0", *more,
        )  # fmt: skip
        assert code == 2 and err.count("\n") == 1, err
        shown.append(float(re.search(pattern, err).group(1)))
    assert not (tmp_path / "refused").exists()
    return shown


@pytest.mark.parametrize(
    "quantization", [None, pytest.param("int8", marks=pytest.mark.slow)]
)
def test_train_to_a_latency_budget(tmp_path, capsys, quantization):
    """--target-latency: the slim model is timed in LiteRT when training
    ends, and report.json says so. The target lies half-way between the
    model's time with every gated unit closed and its time untouched."""
    more = ["--latency-quantization", quantization] if quantization else []
    floor, original = _latency_range(capsys, tmp_path, more)
    assert 0 < floor < original
    target = round((floor + original) / 2, 4)
    code, _, err = run(
        capsys, "train", "--model", "lenet5", "--dataset", "mnist",
        "--synthetic", "64", "--epochs", "1", "--finetune-epochs", "0",
        "--target-latency", str(target), "--out", str(tmp_path), "--verbose", "0",
        *more,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["target_latency"] == target
    assert report["config"].get("latency_quantization") == quantization
    budget = report["budget"]
    assert budget["kind"] == "latency" and budget["unit_cost"] == "marginal"
    assert budget["measured_ms"] > 0 and budget["reached"] == budget["measured_ms"]
    assert budget["original"] > target
