"""Test setup: quiet TensorFlow, point tfds at the shared MNIST copy."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_SHARED_TFDS = (
    pathlib.Path(__file__).resolve().parents[2] / "shared" / "tensorflow_datasets"
)
if _SHARED_TFDS.is_dir():
    os.environ.setdefault("TFDS_DATA_DIR", str(_SHARED_TFDS))

import helpers  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
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


# -- deployment fixtures (test_export, test_litert, test_twin) ----------------


@pytest.fixture(scope="module")
def random_lenet5():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = helpers.lenet5()
    helpers.random_gates(model, rng)  # mu of both signs: the slim model needs scales
    x = rng.random((32, 28, 28, 1)).astype("float32")
    return model, x


@pytest.fixture(scope="module")
def mnist():
    import tensorflow_datasets as tfds

    def arrays(split):
        x, y = tfds.as_numpy(
            tfds.load("mnist", split=split, batch_size=-1, as_supervised=True)
        )
        return x.astype("float32") / 255.0, y

    return arrays("train"), arrays("test[:2000]")


@pytest.fixture(scope="module")
def trained_lenet5(mnist):
    """A gated LeNet-5 trained for one short epoch on 12,000 MNIST digits."""
    keras.utils.set_random_seed(0)
    (x, y), _ = mnist
    x, y = x[:12000], y[:12000]
    model = helpers.lenet5()
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return model
