"""README.md's Python blocks run as written: in order, in one namespace, as
a reader would run them (each `fit` cut to two batches of one epoch)."""

import pathlib
import re
import subprocess
import sys
import warnings

import keras
import pytest

import keras_vib as kv

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
OWN_SCRIPT = "A script of its own"  # a block that must start its process
JAX_ONLY = "# JAX,"  # a block for the JAX backend

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_s_blocks_are_all_run_here():
    blocks = _blocks()
    assert len(blocks) >= 10
    assert sum(OWN_SCRIPT in b for b in blocks) == 1
    assert sum(b.lstrip().startswith(JAX_ONLY) for b in blocks) == 1


def test_the_readme_s_python_runs_as_written(tmp_path, monkeypatch):
    fit = keras.Model.fit

    def two_batches(self, *args, **kwargs):
        kwargs.update(epochs=1, steps_per_epoch=2)
        kwargs.pop("validation_data", None)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", two_batches)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    ran = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # budgets on 2 batches
            for block in _blocks():
                if OWN_SCRIPT in block:
                    continue  # below, in a process of its own
                if block.lstrip().startswith(JAX_ONLY):
                    if keras.backend.backend() != "jax":
                        continue
                exec(compile(block, "README.md", "exec"), namespace)
                ran.append(block)
    finally:
        for name in ("ChannelScale", "ReluDense", "Block"):
            if name in namespace:
                kv.unregister_layer(namespace[name])
    assert len(ran) >= 8
    # What the text around them says they do.
    assert (tmp_path / "slim.keras").exists()
    assert (tmp_path / "slim.onnx").exists() and (tmp_path / "served").is_dir()
    assert (tmp_path / "plots" / "kept_neurons.png").exists()
    assert (
        0.0
        <= namespace["export"].evaluate_tflite(
            namespace["tflite"], namespace["test_ds"].take(2)
        )
        <= 1.0
    )


def test_the_multi_worker_block_runs_as_a_script(tmp_path):
    (block,) = [b for b in _blocks() if OWN_SCRIPT in b]
    script = tmp_path / "worker.py"
    script.write_text(block)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "VIB: r_W" in result.stdout  # the monitor's epoch lines
