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
        "--finetune-epochs",
        "1",
    )
    text = md.read_text()
    assert "## Other section\n\nkept" in text
    assert "| LeNet-300-100 | paper (VIBNet) | 1.6 | 3.59 | 16.98 |" in text
    assert "| LeNet-300-100 | keras_vib, median of 2 |" in text
    assert text.count("keras-vib train --model lenet300") == 2
    assert "--steps-per-epoch 20" in text
    assert "wrote" in out
    # Running again replaces the section instead of appending a second one;
    # with --reuse a run with the same settings is read, not trained again.
    args = ["--models", "lenet300", "--out", str(tmp_path / "runs")]
    args += ["--benchmarks-md", str(md), "--reuse", "--", "--steps-per-epoch", "20"]
    args += ["--finetune-epochs", "1"]
    out = run_script(
        "benchmarks/paper_tables.py", "--seeds", "0", "--note", "one at a time",
        *args, "--epochs", "1",
    )  # fmt: skip
    assert "reusing" in out and "$ keras-vib train" not in out
    assert "Note: one at a time" in md.read_text()
    assert md.read_text().count("## Paper tables (MNIST)") == 1
    assert "| LeNet-300-100 | keras_vib, median of 1 |" in md.read_text()
    # Other settings (2 epochs): trained again.
    out = run_script(
        "benchmarks/paper_tables.py", "--seeds", "1", *args, "--epochs", "2"
    )
    assert "reusing" not in out and "$ keras-vib train" in out
    # A variant (--title) goes into a section of its own, replaced when run
    # again, and leaves the main table alone.
    variant = ["--seeds", "1", "--title", "two epochs", *args, "--epochs", "2"]
    run_script("benchmarks/paper_tables.py", *variant)
    out = run_script("benchmarks/paper_tables.py", *variant)
    assert "reusing" in out
    text = md.read_text()
    assert text.count("\n## Recipe variant (MNIST): two epochs\n") == 1
    assert text.count("\n## Paper tables (MNIST)\n") == 1
    assert "changed by the arguments after `--` in the command" in text
    assert (
        "--title 'two epochs' -- --steps-per-epoch 20 --finetune-epochs 1 --epochs 2`"
        in text
    )
    assert "## Other section\n\nkept" in text
    # Another --steps-per-execution gives the same weights: reused too.
    out = run_script(
        "benchmarks/paper_tables.py", *variant, "--steps-per-execution", "3"
    )
    assert "reusing" in out and "$ keras-vib train" not in out


def _number(text):
    return float(text.replace(",", "").rstrip("x"))


def _table_rows(text, first_cell):
    """The cells of the markdown table rows whose first cell starts so."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell}")
    ]


def test_vs_tfmot_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    section = "## VIBNet vs tfmot magnitude pruning (`benchmarks/vs_tfmot.py`)"
    md.write_text(f"# Benchmarks\n\n{section}\n\nstale\n\n## Other section\n\nkept\n")
    out = run_script(
        "benchmarks/vs_tfmot.py",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "3",
        "--train-examples",
        "300",
        "--test-examples",
        "200",
        "--tfmot-sparsity",
        "0.8",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--rounds",
        "2",
        "--verbose",
        "0",
        "--benchmarks-md",
        str(md),
    )
    text = md.read_text()
    assert text.count(section) == 1 and "stale" not in text
    assert "## Other section\n\nkept" in text
    assert "Command: `python benchmarks/vs_tfmot.py --epochs 2" in text
    rows = {}
    for prefix in ("plain", "tfmot", "same tfmot", "keras_vib"):
        (cells,) = _table_rows(text, prefix)
        assert len(cells) == 11
        rows[prefix] = [_number(c) for c in cells[1:9]]
        rows[prefix] += [_number(c) for c in cells[9].split(" / ")]
        rows[prefix].append(_number(cells[10]))
    for values in rows.values():
        error, kept, r_w, macs, nonzero_macs, size, gz, rel_gz = values[:8]
        assert 0 <= error <= 100 and 0 < r_w <= 100
        assert 0 < nonzero_macs <= macs <= rows["plain"][3]
        assert 0 < gz <= size and rel_gz > 0
        median_ms, best_ms, paired = values[8:]
        assert 0 < best_ms <= median_ms and paired > 0
    assert rows["plain"][1] == 430_500
    assert rows["plain"][7] == 1.0 and rows["plain"][10] == 1.0
    # tfmot prunes every kernel to the sparsity asked (a few steps of VIB
    # prune nothing to match), the dense kernels still run every MAC, and
    # the sparse encoding shrinks the raw file.
    assert abs(rows["tfmot"][2] - 20.0) < 0.5
    assert rows["tfmot"][3] == rows["plain"][3]
    assert rows["tfmot"][4] < 0.25 * rows["plain"][4]
    assert rows["same tfmot"][5] < 0.5 * rows["tfmot"][5]
    assert "0.8000 (set by --tfmot-sparsity, NOT matched to keras_vib)" in text
    assert rows["keras_vib"][3] == rows["keras_vib"][4]
    assert re.search(r"claim .* (does NOT hold|holds) in this run", text)
    assert "wrote" in out and "machine:" in out


def test_overhead_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    out = run_script(
        "benchmarks/overhead.py",
        "--epochs",
        "2",
        "--train-examples",
        "300",
        "--test-examples",
        "200",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--keras-runs",
        "3",
        "--keras-batch",
        "50",
        "--benchmarks-md",
        str(md),
    )
    text = md.read_text()
    assert "## Gate overhead and slim speed-up" in text
    assert "Command: `python benchmarks/overhead.py --epochs 2" in text
    for net in ("LeNet-300-100", "LeNet-5-Caffe"):
        train_row, infer_row = _table_rows(text, net)
        assert len(train_row) == 9 and len(infer_row) == 11
        gated_s, plain_s, ratio = (_number(c) for c in train_row[1:4])
        assert gated_s > 0 and plain_s > 0 and 0 < ratio < float("inf")
        assert 0 < _number(train_row[5].split(" (")[0]) < float("inf")
        # The gates' Gaussian draws: seconds, and 1 + draws / plain epoch.
        draw_s, draw_ratio = train_row[7].rstrip("x)").split(" (")
        assert _number(draw_s) > 0 and _number(draw_ratio) >= 1
        assert train_row[-1].startswith(("PASS", "MISS"))
        plain_macs, slim_macs = (_number(c) for c in infer_row[3].split(" / "))
        assert 0 < slim_macs <= plain_macs
        mac_ratio = _number(infer_row[4])
        assert abs(mac_ratio - plain_macs / slim_macs) <= 0.01 * mac_ratio
        speedup = _number(infer_row[8])
        assert 0 < speedup < float("inf")
        assert infer_row[9].startswith(("PASS", "MISS"))
        assert "floor" in infer_row[10]
    assert "wrote" in out
