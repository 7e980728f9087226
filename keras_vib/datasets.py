"""Input pipelines for the datasets of the VIBNet paper.

`load(name, split)` reads MNIST, Fashion-MNIST, CIFAR-10 or CIFAR-100 with
tensorflow-datasets and returns a batched, prefetched `tf.data.Dataset` of
`(image, label)`: `image` float32 of shape `(batch, height, width,
channels)`, in [0, 1] (MNIST-like) or standardized per channel (CIFAR),
`label` int32 of shape `(batch,)`. `synthetic(name, split)` makes a small
random dataset with the same element spec, for smoke tests.

Nothing is read or downloaded at import time, and tensorflow-datasets is
imported on the first `load`.

Where the data comes from: `load` looks for the prepared dataset in
`data_dir` if given, else in `$TFDS_DATA_DIR` if set, else in the
tensorflow-datasets default (`~/tensorflow_datasets`). If it is not there
and `download=True` (the default), it downloads and prepares it, but first
checks, in a few seconds, that the download server can be reached: without
network tensorflow-datasets retries for minutes (about 3.5 min for
Fashion-MNIST) before it gives up. When the data can be neither found nor
downloaded `load` raises `DatasetNotFoundError` (a `ValueError`) naming the
dataset and the directory it looked in, and saying how to point at a
prepared copy.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import urllib.parse

import numpy as np
import tensorflow as tf

from keras_vib import _validate

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "info",
    "load",
    "synthetic",
]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset of `load`.

    Attributes:
        name: the tensorflow-datasets name, e.g. `"cifar10"`.
        num_classes: number of classes.
        input_shape: `(height, width, channels)` of one image.
        train_examples: examples in the `"train"` split.
        test_examples: examples in the `"test"` split.
        mean: per-channel mean of the training images, in [0, 1] units.
        std: per-channel standard deviation of the training images.
        url: where tensorflow-datasets downloads the raw data from.

    The fields also read as a mapping: `info("mnist")["num_classes"]`.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    train_examples: int
    test_examples: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    url: str

    def __getitem__(self, key: str):
        if key not in self.to_dict():
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @property
    def color(self) -> bool:
        """Whether the images have 3 channels (CIFAR) rather than 1."""
        return self.input_shape[-1] == 3


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist",
        10,
        (28, 28, 1),
        60000,
        10000,
        (0.1307,),
        (0.3081,),
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        10,
        (28, 28, 1),
        60000,
        10000,
        (0.2860,),
        (0.3530,),
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        10,
        (32, 32, 3),
        50000,
        10000,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    ),
    "cifar100": DatasetInfo(
        "cifar100",
        100,
        (32, 32, 3),
        50000,
        10000,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    ),
}

_SPLIT = re.compile(r"^(train|test)(\[[^\]]*\])?$")
_PROXY_VARS = ("https_proxy", "http_proxy", "all_proxy")
# Seconds to wait for the download server before giving up.
_PROBE_TIMEOUT = 5.0
# Zero padding of the random crop, in pixels: CIFAR (with a horizontal
# flip), and the 28x28 digits and clothes (shifts of at most one pixel, no
# flip: a mirrored digit is another symbol).
_CROP_PADDING = {True: 4, False: 1}


class DatasetNotFoundError(ValueError):
    """A dataset is neither prepared in the data directory nor downloadable."""


def _check_name(name):
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(
            f"Unknown dataset: name={name!r}. "
            f"Expected one of: {', '.join(repr(n) for n in DATASETS)}."
        )
    return DATASETS[name]


def _check_split(split):
    match = _SPLIT.match(split) if isinstance(split, str) else None
    if match is None:
        raise ValueError(
            "Expected `split` to be 'train' or 'test' (optionally sliced the "
            f"tensorflow-datasets way, e.g. 'train[:90%]'). Received: split={split!r}"
        )
    return match.group(1) == "train"


def info(name: str) -> DatasetInfo:
    """Static facts about a dataset: classes, image shape, split sizes.

    Reads nothing from disk.

    Args:
        name: `"mnist"`, `"fashion_mnist"`, `"cifar10"` or `"cifar100"`.

    Returns:
        A `DatasetInfo` (`num_classes`, `input_shape`, `train_examples`,
        `test_examples`, `mean`, `std`).

    Example:

    >>> keras_vib.datasets.info("cifar100").num_classes
    100
    """
    return _check_name(name)


def _where(builder, data_dir, from_env):
    """Where `load` looked, in words."""
    if data_dir is None:
        return (
            f"the default data dir {str(builder.data_dir_root)!r} "
            "(TFDS_DATA_DIR is not set)"
        )
    if from_env:
        return f"TFDS_DATA_DIR={data_dir!r}"
    return f"data_dir={data_dir!r}"


def _not_found(builder, name, where, reason):
    return DatasetNotFoundError(
        f"Dataset '{name}' was not found in {where}: there is no prepared "
        f"'{name}' at {builder.data_dir!r}. {reason} Point at a prepared copy "
        f"(a directory that holds '{name}/<version>/') with the TFDS_DATA_DIR "
        "environment variable or the `data_dir=` argument, or prepare one on "
        f"a machine with internet (`tfds.builder('{name}', "
        "data_dir=...).download_and_prepare()`) and copy that directory here."
    )


def _unreachable(url):
    """None if the server of `url` accepts a connection, else the OSError."""
    if any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARS):
        return None  # a proxy may reach what a direct connection cannot
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), _PROBE_TIMEOUT):
            return None
    except OSError as error:
        return error


def _is_prepared(builder):
    # (is_prepared logs a warning for a missing folder: look first.)
    return tf.io.gfile.exists(builder.data_dir) and builder.is_prepared()


def _builder(name, data_dir, from_env, download):
    """The tfds builder of a prepared dataset, downloading it if allowed."""
    import tensorflow_datasets as tfds  # slow import, done on first use

    builder = tfds.builder(name, data_dir=data_dir)
    if _is_prepared(builder):
        return builder
    where = _where(builder, data_dir, from_env)
    if not download:
        raise _not_found(builder, name, where, "It was not downloaded: download=False.")
    url = DATASETS[name].url
    error = _unreachable(url)
    if error is not None:
        raise _not_found(
            builder,
            name,
            where,
            f"It cannot be downloaded either: {url} is unreachable ({error}).",
        ) from error
    try:
        builder.download_and_prepare()
    except Exception as error:
        raise _not_found(
            builder,
            name,
            where,
            f"Downloading it failed: {type(error).__name__}: {error}.",
        ) from error
    return builder


def _data_dir(data_dir):
    """`(data_dir, from_env)`: the directory `load` reads (None: the
    tensorflow-datasets default), and whether it came from `$TFDS_DATA_DIR`
    rather than the argument."""
    from_env = data_dir is None
    if data_dir is None:
        # Read at call time: tfds reads TFDS_DATA_DIR once, at its import.
        data_dir = os.environ.get("TFDS_DATA_DIR") or None
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
    return data_dir, from_env


def _examples(builder, split, shuffle, seed):
    """The uint8 `(image, label)` examples of `split`, files shuffled with
    `shuffle`."""
    import tensorflow_datasets as tfds

    return builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=shuffle,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )


def _crop_and_flip(images, seed, pad, flip):
    """Random `pad`-shifts (and horizontal flips) of a batch of images.

    Each image of `images` (`(batch, height, width, channels)`) is
    zero-padded by `pad` pixels on every side and cropped back to its size
    at a random offset, uniform over the `(2 * pad + 1)^2` windows and drawn
    per example from the stateless `seed` (a shape `(2,)` integer tensor);
    with `flip`, each crop is also mirrored left-right with probability 1/2.
    Two gathers on the whole batch, instead of one crop per example.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    offsets = tf.random.stateless_uniform(
        (batch, 2), crop_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    if flip:
        mirrored = tf.random.stateless_uniform(
            (batch, 1), flip_seed, minval=0, maxval=2, dtype=tf.int32
        )
        cols = tf.where(mirrored == 1, width - 1 - cols, cols)
    cols = offsets[:, 1:] + cols
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def _pipeline(
    ds,
    spec,
    *,
    train,
    batch_size,
    augment,
    shuffle,
    seed,
    standardize,
    shuffle_buffer,
    cache,
    drop_remainder,
):
    """uint8 `(image, label)` examples -> the batches `load` returns."""
    pad = _CROP_PADDING[spec.color]

    def to_int32(image, label):
        image = tf.ensure_shape(image, spec.input_shape)
        return image, tf.cast(label, tf.int32)

    ds = ds.map(to_int32, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment and train:
        # One stateless seed pair per batch, new ones every epoch; the crop
        # and the flip are drawn per example, on the whole batch at once
        # (a per-example map costs more than a LeNet training step).
        seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True
        ).batch(2)

        def augment_fn(batch, pair):
            images, labels = batch
            return _crop_and_flip(images, pair, pad, spec.color), labels

        ds = tf.data.Dataset.zip((ds, seeds)).map(
            augment_fn, num_parallel_calls=tf.data.AUTOTUNE
        )
    mean = tf.constant(spec.mean, tf.float32)
    std = tf.constant(spec.std, tf.float32)

    def to_float(image, label):
        image = tf.cast(image, tf.float32) / 255.0
        if standardize:
            image = (image - mean) / std
        return image, label

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _options(name, split, batch_size, augment, shuffle, seed, standardize):
    spec = _check_name(name)
    train = _check_split(split)
    batch_size = _validate.integer("batch_size", batch_size, minimum=1)
    augment = _validate.boolean("augment", augment)
    shuffle = _validate.boolean("shuffle", shuffle, optional=True)
    standardize = _validate.boolean("standardize", standardize, optional=True)
    seed = _validate.integer("seed", seed, minimum=0, optional=True)
    return {
        "spec": spec,
        "train": train,
        "batch_size": batch_size,
        "augment": augment,
        "shuffle": train if shuffle is None else shuffle,
        "seed": seed,
        "standardize": spec.color if standardize is None else standardize,
    }


def load(
    name: str,
    split: str = "train",
    batch_size: int = 128,
    *,
    data_dir: str | os.PathLike | None = None,
    augment: bool = False,
    shuffle: bool | None = None,
    seed: int | None = None,
    standardize: bool | None = None,
    download: bool = True,
    shuffle_buffer: int = 10000,
    cache: bool = True,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """A batched `tf.data` pipeline of a tensorflow-datasets image dataset.

    Args:
        name: `"mnist"`, `"fashion_mnist"`, `"cifar10"` or `"cifar100"`.
        split: `"train"` or `"test"`, optionally sliced the
            tensorflow-datasets way (`"train[:90%]"`, `"train[-5000:]"`).
        batch_size: positive int. The last batch may be smaller (see
            `drop_remainder`).
        data_dir: directory that holds the prepared dataset
            (`<data_dir>/<name>/<version>/`). Defaults to `$TFDS_DATA_DIR`
            when set, else the tensorflow-datasets default
            (`~/tensorflow_datasets`).
        augment: bool. For CIFAR, pad each training image by 4 zero pixels,
            crop a random 32x32 window and flip it horizontally with
            probability 1/2; for MNIST and Fashion-MNIST, pad by 1 zero
            pixel and crop a random 28x28 window (a shift of at most one
            pixel each way, no flip). Applied to train splits only: a test
            split is never augmented, so the same argument can be passed for
            both.
        shuffle: bool. Defaults to True for a train split, False for test.
            Reshuffled every epoch.
        seed: optional int >= 0 that makes the shuffling and the
            augmentation reproducible.
        standardize: bool. True: `(x - mean) / std` per channel with the
            training-set statistics of `info(name)`; False: `x` in [0, 1].
            Defaults to True for CIFAR, False for MNIST-like datasets.
        download: bool. If the dataset is not prepared in the data dir,
            download and prepare it there (after a quick check that the
            server answers). False: fail at once.
        shuffle_buffer: positive int, the size of the shuffle buffer.
        cache: bool, keep the decoded (uint8) images in memory after the
            first epoch (at most 150 MB, for CIFAR).
        drop_remainder: bool, drop the last batch if it is smaller.

    Returns:
        A `tf.data.Dataset` of `(image, label)` batches: `image` float32 of
        shape `(batch, height, width, channels)` (`(batch, 28, 28, 1)` for
        MNIST-like data, `(batch, 32, 32, 3)` for CIFAR), `label` int32 of
        shape `(batch,)`.

    Raises:
        DatasetNotFoundError: (a `ValueError`) when the dataset is not in
            the data dir and cannot be downloaded; the message names the
            dataset, the directory and how to point at a prepared copy.
        ValueError: for a bad argument.

    Example:

    >>> train = keras_vib.datasets.load("cifar10", "train", 128, augment=True)
    >>> test = keras_vib.datasets.load("cifar10", "test", 1000)
    >>> model.fit(train, validation_data=test, epochs=300)
    """
    options = _options(name, split, batch_size, augment, shuffle, seed, standardize)
    shuffle_buffer = _validate.integer("shuffle_buffer", shuffle_buffer, minimum=1)
    download = _validate.boolean("download", download)
    cache = _validate.boolean("cache", cache)
    drop_remainder = _validate.boolean("drop_remainder", drop_remainder)
    data_dir, from_env = _data_dir(data_dir)
    builder = _builder(name, data_dir, from_env, download)
    ds = _examples(builder, split, options["shuffle"], options["seed"])
    return _pipeline(
        ds,
        shuffle_buffer=shuffle_buffer,
        cache=cache,
        drop_remainder=drop_remainder,
        **options,
    )


def synthetic(
    name: str,
    split: str = "train",
    num_examples: int = 256,
    batch_size: int = 32,
    seed: int = 0,
    *,
    augment: bool = False,
    shuffle: bool | None = None,
    standardize: bool | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """A small random stand-in for `load(name, split)`, for smoke tests.

    Same element spec, value ranges and preprocessing as `load` (so a model
    or a script can be exercised without the real data), but random
    images: each class has a fixed random template (the same for every
    split and every `seed`), and an example is half its class template,
    half uniform noise, so a model can learn the labels.

    Args:
        name: `"mnist"`, `"fashion_mnist"`, `"cifar10"` or `"cifar100"`:
            gives the image shape, the number of classes and the
            standardization.
        split: `"train"` or `"test"` (sliced forms accepted, the slice is
            ignored): as in `load`, shuffling is on by default and
            augmentation applies for train only; the examples of the two
            splits differ.
        num_examples: positive int, the number of examples.
        batch_size: positive int.
        seed: int >= 0, seed of the examples (and of shuffling and
            augmentation).
        augment, shuffle, standardize, drop_remainder: as in `load`.

    Returns:
        A `tf.data.Dataset` of `(image, label)` batches, float32 and int32,
        with the element spec of `load(name, split, batch_size)`.

    Example:

    >>> ds = keras_vib.datasets.synthetic("cifar10", "train", 64, 16)
    >>> model.fit(ds, epochs=1)
    """
    options = _options(name, split, batch_size, augment, shuffle, seed, standardize)
    if options["seed"] is None:
        raise ValueError("Expected `seed` to be an integer >= 0. Received: seed=None")
    num_examples = _validate.integer("num_examples", num_examples, minimum=1)
    drop_remainder = _validate.boolean("drop_remainder", drop_remainder)
    spec = options["spec"]
    templates = np.random.default_rng(12345).uniform(
        0, 255, (spec.num_classes,) + spec.input_shape
    )
    rng = np.random.default_rng([options["seed"], int(options["train"])])
    labels = rng.integers(0, spec.num_classes, num_examples)
    noise = rng.uniform(0, 255, (num_examples,) + spec.input_shape)
    images = np.clip(0.5 * templates[labels] + 0.5 * noise, 0, 255).astype(np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))
    return _pipeline(
        ds,
        shuffle_buffer=num_examples,
        cache=False,
        drop_remainder=drop_remainder,
        **options,
    )
