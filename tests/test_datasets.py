import collections
import os
import pathlib
import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vib import datasets
from keras_vib.datasets import DatasetNotFoundError


def shared_mnist_dir():
    data_dir = os.environ.get("TFDS_DATA_DIR")
    if not data_dir or not (pathlib.Path(data_dir) / "mnist").is_dir():
        pytest.skip("no prepared MNIST under TFDS_DATA_DIR")
    return data_dir


def spec(shape):
    return (
        tf.TensorSpec((None,) + shape, tf.float32),
        tf.TensorSpec((None,), tf.int32),
    )


def first_batch(ds):
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


@pytest.fixture
def no_network(monkeypatch):
    """Every direct connection fails at once, and no proxy is configured."""

    def refuse(address, *args, **kwargs):
        raise OSError(f"no network to {address[0]} (test)")

    for var in ("https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def mock_cifar(monkeypatch):
    """tfds serves random CIFAR examples, as if the dataset were prepared."""
    monkeypatch.setattr(datasets, "_is_prepared", lambda builder: True)
    with tfds.testing.mock_data(
        num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        yield


def test_mnist_test_split_from_the_shared_copy():
    shared_mnist_dir()
    ds = datasets.load("mnist", "test", batch_size=1000)
    assert ds.element_spec == spec((28, 28, 1))
    assert int(ds.cardinality()) == 10  # 10,000 examples in batches of 1000
    x, y = first_batch(ds.take(1))
    assert x.shape == (1000, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (1000,) and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


def test_mnist_explicit_data_dir_train_slice_and_shuffle_seed(monkeypatch):
    data_dir = shared_mnist_dir()
    monkeypatch.delenv("TFDS_DATA_DIR")
    kwargs = {"batch_size": 50, "data_dir": pathlib.Path(data_dir), "cache": False}
    ds = datasets.load("mnist", "train[:600]", seed=3, **kwargs)
    assert int(ds.cardinality()) == 12
    _, y1 = first_batch(ds)
    _, y2 = first_batch(datasets.load("mnist", "train[:600]", seed=3, **kwargs))
    np.testing.assert_array_equal(y1, y2)  # the same seed, the same order
    _, y3 = first_batch(datasets.load("mnist", "train[:600]", shuffle=False, **kwargs))
    assert not np.array_equal(y1, y3)


def test_mnist_standardize():
    shared_mnist_dir()
    raw, _ = first_batch(datasets.load("mnist", "test", 100))
    std, _ = first_batch(datasets.load("mnist", "test", 100, standardize=True))
    mean, sd = datasets.info("mnist").mean[0], datasets.info("mnist").std[0]
    np.testing.assert_allclose(std, (raw - mean) / sd, rtol=1e-5, atol=1e-5)


def test_info():
    mnist = datasets.info("mnist")
    assert mnist.num_classes == 10 and mnist.input_shape == (28, 28, 1)
    assert (mnist.train_examples, mnist.test_examples) == (60000, 10000)
    cifar = datasets.info("cifar100")
    assert cifar.num_classes == 100 and cifar.input_shape == (32, 32, 3)
    assert (cifar.train_examples, cifar.test_examples) == (50000, 10000)
    assert len(cifar.mean) == len(cifar.std) == 3
    assert cifar["num_classes"] == 100 and cifar.to_dict()["test_examples"] == 10000
    with pytest.raises(KeyError):
        cifar["classes"]
    assert set(datasets.DATASETS) == {"mnist", "fashion_mnist", "cifar10", "cifar100"}


def test_info_matches_tfds_for_the_shared_mnist():
    data_dir = shared_mnist_dir()
    splits = tfds.builder("mnist", data_dir=data_dir).info.splits
    assert splits["train"].num_examples == datasets.info("mnist").train_examples
    assert splits["test"].num_examples == datasets.info("mnist").test_examples


def check_not_found_message(message, data_dir):
    assert "fashion_mnist" in message
    assert str(data_dir) in message
    assert "TFDS_DATA_DIR" in message
    assert "data_dir=" in message
    assert "download_and_prepare()" in message


def test_missing_dataset_without_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load("fashion_mnist", "train", data_dir=tmp_path, download=False)
    check_not_found_message(str(info.value), tmp_path)
    assert "download=False" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_dataset_not_found_is_caught_as_a_value_error(tmp_path):
    """Callers that catch bad input as ValueError catch it too."""
    with pytest.raises(ValueError, match="fashion_mnist"):
        datasets.load("fashion_mnist", "train", data_dir=tmp_path, download=False)


def test_missing_dataset_from_tfds_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="TFDS_DATA_DIR=") as info:
        datasets.load("fashion_mnist", "test", download=False)
    check_not_found_message(str(info.value), tmp_path)


def test_missing_dataset_without_network_fails_fast(tmp_path, no_network):
    # tfds itself would retry for minutes; load checks the server first.
    with pytest.raises(DatasetNotFoundError, match="unreachable") as info:
        datasets.load("fashion_mnist", "train", data_dir=tmp_path)
    check_not_found_message(str(info.value), tmp_path)
    assert "fashion-mnist.s3-website" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_failed_download_is_chained(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_unreachable", lambda url: None)

    def fail(self, *args, **kwargs):
        raise ConnectionError("connection reset (test)")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
    with pytest.raises(DatasetNotFoundError, match="connection reset") as info:
        datasets.load("fashion_mnist", "train", data_dir=tmp_path)
    check_not_found_message(str(info.value), tmp_path)
    assert isinstance(info.value.__cause__, ConnectionError)


def test_cifar_load_spec_and_standardization(mock_cifar):
    ds = datasets.load("cifar10", "test", 8, data_dir="/nonexistent")
    assert ds.element_spec == spec((32, 32, 3))
    assert int(ds.cardinality()) == 3
    x, y = first_batch(ds)
    assert x.min() < 0 and y.dtype == np.int32  # standardized by default
    raw, _ = first_batch(datasets.load("cifar10", "test", 8, standardize=False))
    info = datasets.info("cifar10")
    expected = (raw - np.array(info.mean)) / np.array(info.std)
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    _, y100 = first_batch(datasets.load("cifar100", "train", 24, shuffle=False))
    assert y100.max() < 100


def windows(image, pad, flip):
    """Every window of the zero-padded `image` of its size, and (`flip`)
    its mirror: `(dy, dx, mirrored, window)`."""
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    h, w = image.shape[:2]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            window = padded[dy : dy + h, dx : dx + w]
            yield dy, dx, False, window
            if flip:
                yield dy, dx, True, window[:, ::-1]


def is_crop_of(augmented, image, pad=4, flip=True):
    """Whether `augmented` is a window of the zero-padded `image` of its
    size, or (`flip`) of the mirrored one."""
    return any(
        np.array_equal(window, augmented) for *_, window in windows(image, pad, flip)
    )


def test_cifar_augmentation_on_train_only(mock_cifar):
    kwargs = {"batch_size": 24, "shuffle": False, "standardize": False, "seed": 0}
    plain, y = first_batch(datasets.load("cifar10", "train", **kwargs))
    augmented, y_aug = first_batch(
        datasets.load("cifar10", "train", augment=True, **kwargs)
    )
    np.testing.assert_array_equal(y, y_aug)
    assert not np.array_equal(plain, augmented)
    assert all(is_crop_of(a * 255, p * 255) for a, p in zip(augmented, plain))
    # A test split is never augmented.
    test, _ = first_batch(datasets.load("cifar10", "test", **kwargs))
    test_aug, _ = first_batch(datasets.load("cifar10", "test", augment=True, **kwargs))
    np.testing.assert_array_equal(test, test_aug)


def test_augmentation_is_new_every_epoch_and_seeded():
    kwargs = {"num_examples": 16, "batch_size": 16, "shuffle": False, "seed": 5}
    ds = datasets.synthetic("cifar10", "train", augment=True, **kwargs)
    epoch1, epoch2 = (first_batch(ds)[0] for _ in range(2))
    assert not np.array_equal(epoch1, epoch2)
    again = datasets.synthetic("cifar10", "train", augment=True, **kwargs)
    np.testing.assert_array_equal(first_batch(again)[0], epoch1)


def test_mnist_augmentation_shifts_by_one_pixel_without_flip():
    kwargs = {"num_examples": 32, "batch_size": 32, "shuffle": False, "seed": 3}
    plain, y = first_batch(datasets.synthetic("mnist", "train", **kwargs))
    shifted, y_aug = first_batch(
        datasets.synthetic("mnist", "train", augment=True, **kwargs)
    )
    np.testing.assert_array_equal(y, y_aug)
    assert shifted.shape == plain.shape == (32, 28, 28, 1)
    moved = [not np.array_equal(a, p) for a, p in zip(shifted, plain)]
    assert sum(moved) > 16  # 8 of the 9 windows are shifted ones
    assert all(
        is_crop_of(a * 255, p * 255, pad=1, flip=False) for a, p in zip(shifted, plain)
    )


@pytest.mark.parametrize("pad, flip", [(1, False), (2, True)])
def test_batched_crop_draws_every_window_per_example(pad, flip):
    # Distinct pixel values: every window (and its mirror) is unique.
    image = np.arange(1, 7 * 5 + 1, dtype=np.int32).reshape(7, 5, 1)
    images = np.repeat(image[None], 1800, axis=0)
    out = datasets._crop_and_flip(
        tf.constant(images), tf.constant([7, 11], tf.int64), pad, flip
    ).numpy()
    assert out.shape == images.shape
    where = {w.tobytes(): (dy, dx, m) for dy, dx, m, w in windows(image, pad, flip)}
    drawn = [where.get(a.tobytes()) for a in out]
    assert None not in drawn  # each output is a (mirrored) window
    counts = collections.Counter((dy, dx) for dy, dx, _ in drawn)
    expected = len(out) / (2 * pad + 1) ** 2
    assert len(counts) == (2 * pad + 1) ** 2
    assert all(0.6 * expected < c < 1.4 * expected for c in counts.values())
    mirrored = sum(m for _, _, m in drawn) / len(out)
    assert 0.4 < mirrored < 0.6 if flip else mirrored == 0


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_synthetic_element_spec_equals_load(name, mock_cifar):
    loaded = datasets.load(name, "train", 16, augment=True)
    fake = datasets.synthetic(name, "train", 40, 16, augment=True)
    assert fake.element_spec == loaded.element_spec == spec((32, 32, 3))
    x, y = first_batch(fake)
    assert x.shape == (16, 32, 32, 3) and y.dtype == np.int32
    assert int(fake.cardinality()) == 3
    assert y.max() < datasets.info(name).num_classes


def test_synthetic_mnist_matches_the_real_spec():
    shared_mnist_dir()
    real = datasets.load("mnist", "test", 32)
    fake = datasets.synthetic("mnist", "test", 64, 32)
    assert fake.element_spec == real.element_spec == spec((28, 28, 1))
    x, _ = first_batch(fake)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_synthetic_is_deterministic_and_splits_differ():
    a = first_batch(datasets.synthetic("fashion_mnist", "train", 32, 32, seed=1))
    b = first_batch(datasets.synthetic("fashion_mnist", "train", 32, 32, seed=1))
    c = first_batch(datasets.synthetic("fashion_mnist", "test", 32, 32, seed=1))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


BAD_ARGUMENTS = [
    (lambda: datasets.load("imagenet"), "'imagenet'.*'mnist'.*'cifar100'"),
    (lambda: datasets.info("cifar"), "'cifar'.*'cifar10'"),
    (lambda: datasets.load("mnist", "validation"), "split='validation'"),
    (lambda: datasets.load("mnist", batch_size=0), "batch_size=0"),
    (lambda: datasets.load("mnist", shuffle_buffer=-1), "shuffle_buffer=-1"),
    (lambda: datasets.load("mnist", seed=-3), "seed=-3"),
    (lambda: datasets.load("mnist", download="no"), "download='no'"),
    (lambda: datasets.load("cifar10", augment="yes"), "augment='yes'"),
    (lambda: datasets.synthetic("cifar10", num_examples=0), "num_examples=0"),
    (lambda: datasets.synthetic("cifar10", seed=None), "seed=None"),
]


@pytest.mark.parametrize(
    "call, match", BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS]
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
