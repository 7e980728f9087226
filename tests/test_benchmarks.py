"""The benchmark scripts run (on a tiny setting) so that they cannot rot.

Nothing here asserts anything about time: speed targets are read off the
benchmarks' own output (see BENCHMARKS.md).
"""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_script(*args):
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_slim_speed_benchmark_runs():
    out = run_script("benchmarks/slim_speed.py", "--width", "0.0625", "--repeats", "1")
    diff = float(re.search(r"relative difference slim vs gated: (\S+)", out)[1])
    assert diff < 1e-4
    assert re.search(r"median time over 1: [0-9.]+ s", out)


def test_paper_tables_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Other section\n\nkept\n")
    out = run_script(
        "benchmarks/paper_tables.py",
        "--seeds",
        "0",
        "1",
        "--models",
        "lenet300",
        "--out",
        str(tmp_path / "runs"),
        "--benchmarks-md",
        str(md),
        "--",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "20",
    )
    text = md.read_text()
    assert "## Other section\n\nkept" in text
    assert "| LeNet-300-100 | paper (VIBNet) | 1.6 | 3.59 | 16.98 |" in text
    assert "| LeNet-300-100 | keras_vib, median of 2 |" in text
    assert text.count("keras-vib train --model lenet300") == 2
    assert "--steps-per-epoch 20" in text
    assert "wrote" in out
    # Running again replaces the section instead of appending a second one.
    run_script(
        "benchmarks/paper_tables.py",
        "--seeds",
        "0",
        "--models",
        "lenet300",
        "--out",
        str(tmp_path / "runs"),
        "--benchmarks-md",
        str(md),
        "--",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "20",
    )
    assert md.read_text().count("## Paper tables (MNIST)") == 1
