"""The benchmark scripts run (on a tiny setting) so that they cannot rot.

Nothing here asserts anything about time: speed targets are read off the
benchmarks' own output (see BENCHMARKS.md).
"""

import pathlib
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_script(*args, returncode=0):
    """Runs a benchmark script; its stdout, or stderr when it should fail."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == returncode, result.stderr[-3000:]
    return result.stdout if returncode == 0 else result.stderr


@pytest.mark.slow
def test_slim_speed_benchmark_runs():
    out = run_script("benchmarks/slim_speed.py", "--width", "0.0625", "--repeats", "1")
    diff = float(re.search(r"relative difference slim vs gated: (\S+)", out)[1])
    assert diff < 1e-4
    assert re.search(r"median time over 1: [0-9.]+ s", out)


@pytest.mark.slow
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


@pytest.mark.slow
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


def _fake_run(folder, model_name):
    """A `keras-vib train --out` folder as the CLI leaves it, minus training."""
    import json

    import keras_vib as kv
    from keras_vib import models

    folder.mkdir()
    slim = kv.slim_model(models.get_model(model_name, vib=True))
    slim.save(folder / "slim.keras")
    report = {"config": {"model": model_name}, "structure": "784-300-100"}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


@pytest.mark.slow
def test_overhead_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    run = _fake_run(tmp_path / "run", "lenet300")
    out = run_script(
        "benchmarks/overhead.py",
        "--trained",
        str(run),
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
    assert "Command: `python benchmarks/overhead.py --trained " in text
    for net in ("LeNet-300-100", "LeNet-5-Caffe"):
        train_row, infer_row = _table_rows(text, net)
        assert len(train_row) == 11 and len(infer_row) == 12
        gated_s, plain_s, ratio = (_number(c) for c in train_row[1:4])
        assert gated_s > 0 and plain_s > 0 and 0 < ratio < float("inf")
        assert 0 < _number(train_row[5].split(" (")[0]) < float("inf")
        assert 0 < _number(train_row[6]) < float("inf")  # gates without noise
        # The Gaussian and the uniform draws: seconds, 1 + draws / plain epoch.
        for cell in train_row[8:10]:
            draw_s, draw_ratio = cell.rstrip("x)").split(" (")
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
        ref_plain, ref_slim = (
            _number(c) for c in infer_row[11].split(" (")[0].split(" / ")
        )
        assert ref_plain > 0 and ref_slim > 0
        assert f"- {net}: the gate work without the noise costs " in text
    assert "wrote" in out
    # The trained run: its slim model (here unpruned, so MAC ratio 1) timed too.
    (row,) = _table_rows(text, f"`{run}` (LeNet-300-100)")
    assert len(row) == 10 and row[1] == "784-300-100"
    assert 0 <= _number(row[2]) <= 100
    assert _number(row[4]) == 1.0
    assert row[7].startswith(("PASS", "MISS"))


@pytest.mark.slow
def test_overhead_benchmark_refuses_a_folder_without_a_run(tmp_path):
    args = ["benchmarks/overhead.py", "--trained", str(tmp_path)]
    stderr = run_script(*args, returncode=2)
    assert "--trained" in stderr and str(tmp_path) in stderr
    assert "slim.keras, report.json missing" in stderr
    # A folder with both files whose report is not a keras-vib train report.
    (tmp_path / "slim.keras").write_text("")
    (tmp_path / "report.json").write_text('{"error_pct": 1.0}')
    stderr = run_script(*args, returncode=2)
    assert "with config.model" in stderr and "KeyError" in stderr


def test_overhead_noiseless_gates_keep_all_but_the_noise(monkeypatch):
    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import overhead

    args = SimpleNamespace(kl_weight=None)
    gated = overhead.build("lenet300", True, args)
    noiseless = overhead.build_noiseless("lenet300", args)
    noiseless.set_weights(gated.get_weights())
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype="float32")
    # Training-mode outputs: random for the gated model, fixed for the
    # ablation, which computes what the gated model computes at inference
    # (every gate still open at initialisation).
    assert not np.allclose(gated(x, training=True), gated(x, training=True))
    first = np.asarray(noiseless(x, training=True))
    np.testing.assert_allclose(first, noiseless(x, training=True))
    np.testing.assert_allclose(first, gated(x, training=False), rtol=1e-5, atol=1e-6)
    # The KL terms are kept: one per gate, the same values.
    assert len(noiseless.losses) == len(gated.losses) == 3
    np.testing.assert_allclose(
        sorted(float(v) for v in noiseless.losses),
        sorted(float(v) for v in gated.losses),
        rtol=1e-6,
    )


def test_write_section_replaces_in_place_or_appends(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from _common import write_section

    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## A\n\na\n\n## B\n\nold b\n\n## C\n\nc\n")
    write_section(md, "## B", "## B\n\nnew b\n")
    assert md.read_text() == "# Benchmarks\n\n## A\n\na\n\n## B\n\nnew b\n\n## C\n\nc\n"
    write_section(md, "## C", "## C\n\nnew c\n")
    write_section(md, "## D", "## D\n\nd\n")
    assert md.read_text() == (
        "# Benchmarks\n\n## A\n\na\n\n## B\n\nnew b\n\n## C\n\nnew c\n\n## D\n\nd\n"
    )
    # A heading that only starts like the section's is another section.
    write_section(md, "## A extra", "## A extra\n\nx\n")
    write_section(md, "## A", "## A\n\nnew a\n")
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\n## A\n\nnew a\n\n## B\n")
    assert text.endswith("## D\n\nd\n\n## A extra\n\nx\n")


@pytest.mark.slow
def test_coverage_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    out = run_script(
        "benchmarks/coverage.py",
        "--families",
        "MobileNetV3Small",
        "--benchmarks-md",
        str(md),
    )
    row = re.search(
        r"\| MobileNetV3Small \| 32 \| (\d+) \| .* \| equal \| (\S+) \|", out
    )
    assert row and int(row[1]) > 10 and float(row[2]) < 1e-4
    assert "## Coverage of keras.applications" in md.read_text()


@pytest.mark.slow
def test_pareto_baselines_fold_exactly_and_meet_the_budget(monkeypatch):
    """The baselines' nets go into the gated zoo model unchanged (batch
    norms folded exactly), and their removal lands at or under the budget."""
    import keras
    import numpy as np

    import keras_vib as kv

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import pareto

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 28, 28, 1)).astype("float32")
    for model in ("lenet300", "lenet5"):
        for slimming in (False, True):
            net = pareto.baseline_net(model, slimming)
            for layer in net.layers:  # batch norms that do something
                if isinstance(layer, keras.layers.BatchNormalization):
                    n = layer.gamma.shape[0]
                    layer.set_weights(
                        [rng.uniform(0.5, 2, n), rng.normal(size=n),
                         rng.normal(size=n), rng.uniform(0.5, 2, n)]
                    )  # fmt: skip
            gated = kv.models.get_model(model, vib=True)
            for name, (k, b) in pareto.folded_weights(net, model, slimming).items():
                gated.get_layer(name).kernel.assign(k)
                gated.get_layer(name).bias.assign(b)
            pareto.set_open(pareto.gates_of(gated), {})
            np.testing.assert_allclose(
                gated.predict(x, verbose=0), net.predict(x, verbose=0), atol=1e-4
            )
            slim, structure = pareto.prune_to_budget(net, model, slimming, 0.05)
            total = kv.compression_report(gated).total_flops
            flops = kv.compression_report(slim).flops
            assert 0.85 * 0.05 * total <= flops <= 0.05 * total
            assert all(int(n) > 0 for n in structure.split("-"))  # no layer cut


@pytest.mark.slow
def test_pareto_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    out = run_script(
        "benchmarks/pareto.py", "--models", "lenet300", "--budgets", "0.1", "0.05",
        "--seeds", "0", "1", "--seed-budgets", "0.05", "--epochs", "1",
        "--finetune-epochs", "1", "--steps-per-epoch", "3",
        "--out", str(tmp_path / "runs"), "--plot", str(tmp_path / "p.png"),
        "--benchmarks-md", str(md), "--write",
    )  # fmt: skip
    assert (tmp_path / "p.png").stat().st_size > 10_000
    text = md.read_text()
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ % \|", line)]
    assert len(rows) == 6  # two budgets, three methods
    for method in ("keras_vib", "L1 filters", "net slimming"):
        found = [r for r in rows if f"| {method} |" in r]
        assert [r.split("|")[3].strip() for r in found] == ["1", "2"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")]
        budget, pct = float(cells[1].split()[0]), float(cells[7])
        assert pct <= budget
    assert "[7/7]" in out  # 2 + 1 keras_vib runs, a baseline run per seed each
    again = run_script(
        "benchmarks/pareto.py", "--models", "lenet300", "--budgets", "0.1", "0.05",
        "--seeds", "0", "1", "--seed-budgets", "0.05", "--epochs", "1",
        "--finetune-epochs", "1", "--steps-per-epoch", "3",
        "--out", str(tmp_path / "runs"), "--plot", str(tmp_path / "p.png"),
        "--benchmarks-md", str(md),
    )  # fmt: skip
    assert "[1/" not in again  # every result was kept: nothing trained again


@pytest.mark.slow
def test_backends_benchmark_runs(tmp_path):
    pytest.importorskip("jax")
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    run_script(
        "benchmarks/backends.py", "--backends", "tensorflow", "jax", "--epochs", "1",
        "--examples", "200", "--slim-repeats", "1", "--benchmarks-md", str(md),
        "--write",
    )  # fmt: skip
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| LeNet")]
    assert len(rows) == 4  # two nets, two backends
    slim_rows = [line for line in text.splitlines() if line.startswith("| jax |")]
    assert len(slim_rows) == 1
    assert float(slim_rows[0].split("|")[-2]) < 1e-4  # slim == gated on JAX


@pytest.mark.slow
def test_budget_overhead_benchmark_runs(tmp_path):
    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    args = ["--steps", "55", "--epochs", "1", "--models", "lenet5"]
    run_script(
        "benchmarks/budget_overhead.py",
        *args,
        "--before",
        head,
        "--benchmarks-md",
        str(md),
    )
    text = md.read_text()
    assert "## Other\n\nkept" in text
    rows = re.findall(
        r"\| LeNet-5-Caffe \| (.+?) \| ([0-9.]+) % .*\| ([0-9,]+) / ([0-9,]+) \|", text
    )
    assert [r[0] for r in rows] == [f"commit {head}", "today"]
    # The same package twice: the same training, the same final FLOPs.
    assert rows[0][2:] == rows[1][2:]
    assert int(rows[1][2].replace(",", "")) <= int(rows[1][3].replace(",", ""))
    assert "AVX-512" in text


@pytest.mark.slow
def test_hub_coverage_benchmark_runs(tmp_path):
    pytest.importorskip("keras_hub")
    md = tmp_path / "BENCHMARKS.md"
    out = run_script(
        "benchmarks/coverage.py", "--hub", "--backbones", "BERT", "Gemma",
        "--benchmarks-md", str(md),
    )  # fmt: skip
    row = re.search(r"\| BERT \| (\d+) \| FFN units, heads \| ([0-9.]+) % \|", out)
    assert row and int(row[1]) == 4 and float(row[2]) < 85
    row = re.search(r"\| Gemma \| 4 \| FFN units, key/value groups \| ([0-9.]+) %", out)
    assert row and float(row[1]) < 85
    assert re.search(r"\| BERT \|.*\| yes \|", out)  # the slim model reloads
    assert re.search(r"\| Gemma \|.*\| yes \|", out)
    assert "## Coverage of keras-hub backbones" in md.read_text()


@pytest.mark.slow
def test_vit_mnist_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    args = (
        "benchmarks/vit_mnist.py", "--seeds", "0", "--budgets", "0.25",
        "--epochs", "1", "--finetune-epochs", "1", "--steps-per-epoch", "3",
        "--runs", "5", "--out", str(tmp_path / "runs"), "--benchmarks-md", str(md),
    )  # fmt: skip
    out = run_script(*args)
    rows = [line for line in md.read_text().splitlines() if line.startswith("| 25 %")]
    assert {row.split("|")[2].strip() for row in rows} == {"keras_vib", "magnitude"}
    for row in rows:
        assert float(row.split("|")[7]) <= 25.0  # % of the original FLOPs
    assert "| 100 % | original | 1 |" in md.read_text()
    assert re.search(r"outputs differ from Keras's by at most (\S+)", out)
    again = run_script(*args)
    assert "seed 0 keras_vib" not in again  # every result kept: nothing trained again


def test_epoch_rounds_rotate_the_variants_and_ratios_are_paired(monkeypatch):
    """Each round starts the variants one further on (none always runs
    right after another net's epochs), the answers stay in round order,
    and the benchmarks' ratios are medians of same-round ratios."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from _common import epoch_rounds, paired_ratio

    class FakeWorker:
        name = "tensorflow"
        asked, closed = [], False

        def ask(self, **command):
            self.asked.append(command["variant"])
            return len(self.asked)

        def close(self):
            self.closed = True

    worker = FakeWorker()
    answers = epoch_rounds([worker], 3, ["lenet300"], ("a", "b", "c"))
    assert worker.asked == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert worker.closed
    assert answers["tensorflow", "lenet300", "a"] == [1, 6, 8]
    # Round ratios 2, 1, 3: their median (2), not the medians' ratio (3).
    assert paired_ratio([2.0, 10.0, 3.0], [1.0, 10.0, 1.0]) == 2.0


def test_the_machine_line_names_the_cpu_and_tensorflow_s_kernels(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from _common import machine

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    line = machine()
    assert "AVX-512" in line and "TensorFlow oneDNN on;" in line
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert "TensorFlow oneDNN on (ISA capped at AVX2);" in machine()
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert "TensorFlow oneDNN off;" in machine()


@pytest.mark.slow
def test_guard_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    args = ["benchmarks/guard.py", "--models", "lenet300", "--seeds", "0", "1",
            "--epochs", "1", "--synthetic", "100", "--out", str(tmp_path / "runs"),
            "--benchmarks", str(md)]  # fmt: skip
    run_script(*args, "--write")
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| LeNet-300-100")]
    assert [row.split("|")[2].strip().split(" (generic")[0] for row in rows] == [
        "guard (default)",
        "no guard",
        "plain net",
    ]
    for row in rows:  # two seeds: a median and its range
        assert re.match(r" \d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\] ", row.split("|")[3])
    again = run_script(*args)
    assert "$ " not in again  # every result was kept: nothing trained again


@pytest.mark.slow
def test_round_to_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    run_script(
        "benchmarks/round_to.py", "--families", "MobileNetV2", "--size", "32",
        "--round-to", "8", "--runs", "2", "--rounds", "1",
        "--benchmarks-md", str(md), "--write",
    )  # fmt: skip
    rows = [line for line in md.read_text().splitlines() if "| MobileNetV2" in line]
    assert [row.split("|")[2].strip() for row in rows] == ["slim", "slim, round_to=8"]
    flops = [int(row.split("|")[3].replace(",", "")) for row in rows]
    assert flops[1] != flops[0]  # the rounding changed the kept counts


@pytest.mark.slow
def test_litert_profile_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    run_script(
        "benchmarks/litert_profile.py", "--families", "ResNet50", "--size", "32",
        "--runs", "2", "--multiples", "8", "--benchmarks-md", str(md), "--write",
    )  # fmt: skip
    text = md.read_text()
    assert "| CONV_2D |" in text and "| ADD |" in text  # kinds, original vs slim
    assert "counts padded to x8" in text
    assert "| ResNet50 32x32: 3x3 conv on" in text  # the output-count staircase


@pytest.mark.slow
def test_latency_mnist_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    args = (
        "benchmarks/latency_mnist.py", "--seeds", "0", "--epochs", "1",
        "--finetune-epochs", "0", "--steps-per-epoch", "3", "--runs", "5",
        "--out", str(tmp_path / "runs"), "--benchmarks-md", str(md),
    )  # fmt: skip
    out = run_script(*args)
    assert "seed 0 FLOPs budget" in out and "seed 0 latency budget" in out
    rows = [line.split("|") for line in md.read_text().splitlines()]
    rows = [row for row in rows if row[1:] and row[1].strip()[:5] in ("FLOPs", "laten")]
    assert len(rows) == 2 and all(float(row[5]) > 0 for row in rows)  # µs
    import keras_vib

    total = keras_vib.compression_report(keras_vib.models.vit()).total_flops
    assert float(rows[0][8].replace(",", "")) <= 0.1 * total  # the FLOPs budget
    again = run_script(*args)
    assert "seed 0 latency budget" not in again  # kept: nothing trained again


@pytest.mark.slow
def test_gate_speed_and_ablation_benchmarks_run(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    for script in ("gate_speed.py", "gate_ablation.py"):
        run_script(
            f"benchmarks/{script}", "--backends", "tensorflow", "--nets",
            "lenet300", "--rounds", "1", "--scale", "0.02", "--write",
            "--benchmarks-md", str(md),
        )  # fmt: skip
    text = md.read_text()
    rows = [r.split("|") for r in text.splitlines() if r.startswith("| LeNet-300")]
    assert len(rows) == 2 and all("AVX-512" in row[3] for row in rows)
    speed, ablation = rows
    assert float(speed[6].strip().rstrip("x")) > 0  # gated / plain
    assert ablation[5:10] and all("x)" in cell for cell in ablation[5:10])


@pytest.mark.slow
def test_stem_pad_benchmark_runs(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    run_script(
        "benchmarks/stem_pad.py", "--families", "ResNet50", "--size", "64",
        "--runs", "2", "--rounds", "1", "--write", "--benchmarks-md", str(md),
    )  # fmt: skip
    (row,) = [
        r.split("|") for r in md.read_text().splitlines() if r.startswith("| Res")
    ]
    assert float(row[2]) > 0 and float(row[3]) > 0 and row[4].strip().endswith("%")


@pytest.mark.slow
def test_gate_profile_benchmark_runs(tmp_path):
    """Both profilers' traces are read: the gated LeNet-300-100's step has
    draws under its gates and the plain one none (the totals of so short a
    run are too noisy to compare)."""
    md = tmp_path / "BENCHMARKS.md"
    run_script(
        "benchmarks/gate_profile.py", "--backends", "tensorflow", "jax", "--nets",
        "lenet300", "--rounds", "1", "--scale", "0.1", "--write",
        "--benchmarks-md", str(md),
    )  # fmt: skip
    rows = {
        r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]]
        for r in md.read_text().splitlines()
        if r.startswith("| ") and not r.startswith("| operators")
    }
    draws = rows["gates' draws"]
    for backend in range(2):  # tensorflow, jax: plain | gated | extra
        plain, gated = draws[3 * backend : 3 * backend + 2]
        assert plain == "0" and float(gated.replace(",", "")) > 0, draws
    forward = rows["layers, forward"]
    assert all(float(c.replace(",", "")) > 0 for c in forward[0:2] + forward[3:5])
