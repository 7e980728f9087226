"""The examples run end to end (one short epoch on the shared MNIST copy)."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The top-level keys of the report.json `keras-vib train` writes
# (tests/test_cli.py checks them there).
CLI_REPORT_KEYS = (
    "error_pct",
    "gated_error_pct",
    "r_w_pct",
    "r_n_pct",
    "flops",
    "structure",
    "epochs",
    "slim_params",
    "config",
    "backend",
    "report",
)


@pytest.mark.slow
def test_lenet300_mnist_example(tmp_path):
    assert os.environ.get("TFDS_DATA_DIR"), "set TFDS_DATA_DIR to a prepared MNIST"
    result = subprocess.run(
        [
            sys.executable,
            "examples/lenet300_mnist.py",
            "--epochs",
            "1",
            "--warmup-epochs",
            "0",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (
        "report.json",
        "history.csv",
        "gated.keras",  # the names `keras-vib train` writes
        "slim.keras",
        "kept_neurons.png",
        "log_alpha.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "report.json").read_text())
    # The layout of `keras-vib train`'s report.json.
    for key in CLI_REPORT_KEYS:
        assert key in report, key
    assert report["report"]["total_neurons"] == 1184
    assert 0 < report["r_w_pct"] <= 100
    assert report["error_pct"] < 10  # one epoch of LeNet-300-100 on MNIST
    # The slim model classifies the test set as the gated model does.
    assert abs(report["gated_error_pct"] - report["error_pct"]) < 0.05
    assert report["error_pct"] == round(report["error_pct"], 4)
    assert "structure" in result.stdout


@pytest.mark.slow
def test_deploy_tflite_example(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "examples/deploy_tflite.py",
            "--epochs",
            "1",
            "--train-examples",
            "2000",
            "--test-examples",
            "500",
            "--runs",
            "5",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("variant") :].splitlines()[1:5]
    names = [" ".join(row.split()[:2]) for row in table]
    assert names == [
        "unslimmed float32",
        "slim float32",
        "slim float16",
        "slim int8",
    ]
    sizes = [float(row.split()[2]) for row in table]
    assert sizes[3] < sizes[2] < sizes[1]  # int8 < float16 < float32
    assert len(list(tmp_path.glob("*.tflite"))) == 4


@pytest.mark.slow
def test_compress_pretrained_example():
    result = subprocess.run(
        [
            sys.executable,
            "examples/compress_pretrained.py",
            "--epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--steps-per-epoch",
            "30",
            "--runs",
            "5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("latency ms") :].splitlines()[1:3]
    assert [row.split()[0] for row in table] == ["original", "gated+slim"]
    params = [int(row.split()[1].replace(",", "")) for row in table]
    assert params[1] <= params[0]
    accuracy = [float(row.split()[3]) for row in table]
    assert min(accuracy) > 50  # 30 steps of training already learn MNIST


def test_ci_runs_the_readme_test_command_as_written():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The two commands of a fresh machine")[1]
    section = section.split("\n## ")[0]
    commands = re.findall(r"```bash\n(.*?)\n```", section, re.S)
    assert len(commands) == 2, commands
    assert commands[0].startswith("pip install -e . && keras-vib train")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci
