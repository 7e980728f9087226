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
