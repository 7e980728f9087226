"""Test setup: quiet TensorFlow, point tfds at the shared MNIST copy."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_SHARED_TFDS = (
    pathlib.Path(__file__).resolve().parents[2] / "shared" / "tensorflow_datasets"
)
if _SHARED_TFDS.is_dir():
    os.environ.setdefault("TFDS_DATA_DIR", str(_SHARED_TFDS))

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    # Without the garbage collection `free_memory` adds: a second per test.
    keras.backend.clear_session(free_memory=False)


def pytest_collection_modifyitems(config, items):
    """On a backend other than TensorFlow, skip the tests that need it."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend, not {backend}")
    for item in items:
        if "tensorflow" in item.keywords:
            item.add_marker(skip)
